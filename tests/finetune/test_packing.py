"""Sequence packing: the row plan, the rows (positions restart, boundary labels masked), the collator,
and on a tiny MOSS that a packed batch's loss is the token-weighted mean of its dialogues' losses and
that no token attends across a boundary (eager and SDPA alike)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from datagen.finetune.packing import (
    PackCollator,
    PackedDataset,
    keeps_sequences_apart,
    padding_efficiency,
    plan_rows,
)
from datagen.model.cache import TokenizedSet, tokenize_cached
from datagen.model.tokenize import TruncationStats
from tests.finetune.conftest import qa_records

TOL = 1e-5  # fp32 on CPU: packing changes only which tokens share a matmul


def _tokens(seqs: list[list[int]], masks: list[list[bool]] | None = None) -> TokenizedSet:
    masks = masks or [[True] * len(s) for s in seqs]
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    return TokenizedSet(
        ids=np.array(sum(seqs, []), dtype=np.int32),
        mask=np.array(sum(masks, []), dtype=bool),
        offsets=offsets,
        stats=TruncationStats(),
    )


def test_plan_is_best_fit_decreasing_and_places_everything_once():
    assert plan_rows([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    rows = plan_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= 1.1 * sum(lengths) / 128  # within 10% of a perfect fill on this spread
    with pytest.raises(ValueError, match="more than a row"):
        plan_rows([3, 9], 8)


def test_rows_restart_positions_and_mask_each_first_token():
    tokens = _tokens(
        [[10, 11, 12], [20, 21], [30, 31, 32, 33]], [[False, True, True], [True, True], [True] * 4]
    )
    packed = PackedDataset(tokens, 6)
    assert packed.rows == [[2, 1], [0]]
    row = packed[0]
    assert row["input_ids"].tolist() == [30, 31, 32, 33, 20, 21]
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 0, 1]
    assert row["labels"].tolist() == [-100, 31, 32, 33, -100, 21]  # 20 is never predicted from 33
    assert packed[1]["labels"].tolist() == [-100, 11, 12]
    assert packed.efficiency == pytest.approx(9 / 12)


def test_collator_pads_with_a_sequence_of_its_own_and_no_attention_mask():
    rows = [
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 0, 1]},
        {"input_ids": [4], "labels": [-100], "position_ids": [0]},
    ]
    batch = PackCollator(pad_id=9, multiple_of=4)(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # the restarts are the mask
    assert batch["input_ids"].tolist() == [[1, 2, 3, 9], [4, 9, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100], [-100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 0, 1, 0], [0, 0, 1, 2]]


def test_padding_efficiency_counts_each_batch_padded_to_its_longest():
    assert padding_efficiency([4, 2, 3, 3], 2) == pytest.approx(12 / 14)
    assert padding_efficiency([4, 2, 3, 3], 2, order=[0, 2, 1, 3]) == pytest.approx(12 / 14)
    assert padding_efficiency([4, 4], 2) == 1.0


@pytest.fixture(scope="module")
def tiny(tiny_moss):
    from datagen.model.loading import load_model

    loaded = load_model(tiny_moss, device="cpu")
    loaded.model.config.use_cache = False
    return loaded


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_packed_loss_is_the_token_weighted_mean_of_the_dialogues_losses(tiny, kernel):
    from datagen.finetune.data import PadCollator, SFTDataset
    from datagen.model.attention import use_attention

    model = tiny.model
    use_attention(model, kernel)
    tokens = tokenize_cached(qa_records(1), tiny.tokenizer, None, max_length=2048)
    assert len(tokens) == 4
    packed = PackedDataset(tokens, 128)
    assert len(packed) == 2  # two dialogues per row
    batch = PackCollator(pad_id=tiny.tokenizer.pad_token_id)([packed[i] for i in range(len(packed))])
    with torch.no_grad():
        packed_loss = model(**batch).loss
        sums, counts = [], []
        for i in range(len(tokens)):  # each dialogue alone, no padding at all
            one = PadCollator(pad_id=tiny.tokenizer.pad_token_id)([SFTDataset(tokens)[i]])
            n = int((one["labels"][:, 1:] != -100).sum())
            sums.append(model(**one).loss * n)
            counts.append(n)
    assert sum(counts) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(packed_loss, sum(sums) / sum(counts), rtol=TOL, atol=0)


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_no_token_attends_across_a_boundary(tiny, kernel):
    from datagen.model.attention import use_attention

    model = tiny.model
    use_attention(model, kernel)
    tokens = tokenize_cached(qa_records(1)[:2], tiny.tokenizer, None, max_length=2048)
    row = PackCollator(pad_id=0)([PackedDataset(tokens, 256)[0]])
    first = int((row["position_ids"][0] == 0).nonzero()[1])  # where the second dialogue starts
    changed = row["input_ids"].clone()
    changed[0, 1:first] = torch.randint(100, 900, (first - 1,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(input_ids=row["input_ids"], position_ids=row["position_ids"]).logits
        moved = model(input_ids=changed, position_ids=row["position_ids"]).logits
        alone = model(input_ids=row["input_ids"][:, first:]).logits
    assert (base[0, :first] - moved[0, :first]).abs().max() > 1e-2  # the change is visible where it should be
    torch.testing.assert_close(moved[0, first:], base[0, first:], rtol=0, atol=TOL)
    torch.testing.assert_close(base[0, first:], alone[0], rtol=0, atol=TOL)
    assert keeps_sequences_apart(model)


def test_the_probe_catches_a_model_that_lets_packed_sequences_mix(tiny):
    class IgnoresPositions(torch.nn.Module):
        """What a model whose attention ignores the position_ids restarts amounts to."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids, position_ids=None, use_cache=None):
            return self.inner(input_ids=input_ids, use_cache=use_cache)

    assert not keeps_sequences_apart(IgnoresPositions(tiny.model))


def test_packing_efficiency_on_the_moss_samples(tiny, moss_records):
    """The 48 shared MOSS dialogues, tiny tokenizer, 2048-token rows: packed rows hold 91% real
    tokens, batches of 4 padded to their longest 75% (a fixed order), rows of 2048 one each 65%."""
    tokens = tokenize_cached(moss_records, tiny.tokenizer, None, max_length=2048)
    assert len(tokens) == 48
    packed = PackedDataset(tokens, 2048)
    order = list(range(48))
    random.Random(0).shuffle(order)
    padded = padding_efficiency(tokens.lengths(), 4, order)
    assert len(packed) < 48 and packed.efficiency > 0.85
    assert packed.efficiency > padded + 0.1
