"""Sequence packing for `finetune`: tokenised dialogues laid end to end in rows of `row_length` tokens,
so a batch carries dialogues instead of padding.

Each row holds whole dialogues, chosen by best-fit decreasing (longest first, each into the row
whose free space fits it most tightly). Within a row every dialogue restarts its `position_ids` at 0
and the label of its first token is masked: nothing predicts a dialogue's first token from the one
before it. Batches carry no `attention_mask`: transformers reads the restarts in `position_ids` and
builds a block-diagonal causal mask (eager and SDPA alike; flash-attention as varlen), so no token
attends to another dialogue and the loss of a packed row is exactly the token-weighted mean of its
dialogues' losses. `keeps_sequences_apart` checks that a given model honours this before training
relies on it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def plan_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Group example indices into rows of at most `row_length` tokens, best-fit decreasing.

    Deterministic: ties go to the lower index. Runs in O(n log n) (free space is looked up among
    the distinct free-space values, at most `row_length` of them)."""
    if row_length < 1:
        raise ValueError(f"row_length must be positive, got {row_length}")
    rows: list[list[int]] = []
    spaces: list[int] = []  # sorted distinct free-space values that some row has
    rows_with: dict[int, list[int]] = {}  # free space -> rows with exactly that much
    for idx in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = int(lengths[idx])
        if n > row_length:
            raise ValueError(f"example {idx} has {n} tokens, more than a row ({row_length})")
        if n == 0:
            continue
        at = bisect.bisect_left(spaces, n)
        if at < len(spaces):
            space = spaces[at]
            row = rows_with[space].pop()
            if not rows_with[space]:
                del rows_with[space]
                del spaces[at]
        else:
            space, row = row_length, len(rows)
            rows.append([])
        rows[row].append(idx)
        left = space - n
        if left:
            if left not in rows_with:
                bisect.insort(spaces, left)
                rows_with[left] = []
            rows_with[left].append(row)
    return rows


class PackedDataset:
    """Map-style dataset of packed rows over a TokenizedSet: dicts of `input_ids`, `labels` (-100
    where masked and on each dialogue's first token) and `position_ids` (restarting per dialogue)."""

    def __init__(self, tokens: Any, row_length: int):
        self.tokens = tokens
        self.row_length = row_length
        self.rows = plan_rows(tokens.lengths(), row_length)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        ids, labels, positions = [], [], []
        for example in self.rows[i]:
            seq, mask = self.tokens[example]
            seq = seq.astype(np.int64)
            lab = np.where(mask, seq, -100)
            lab[0] = -100
            ids.append(seq)
            labels.append(lab)
            positions.append(np.arange(len(seq), dtype=np.int64))
        return {
            "input_ids": np.concatenate(ids),
            "labels": np.concatenate(labels),
            "position_ids": np.concatenate(positions),
        }

    @property
    def efficiency(self) -> float:
        """Real tokens over the slots of the rows (rows x row_length)."""
        return self.tokens.tokens / (len(self.rows) * self.row_length) if self.rows else 0.0


def padding_efficiency(lengths: Sequence[int], batch_size: int, order: Sequence[int] | None = None) -> float:
    """Real tokens over slots when `lengths` are batched `batch_size` at a time in `order` and each
    batch is padded to its longest: what training without packing computes on."""
    order = list(order) if order is not None else list(range(len(lengths)))
    slots = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        slots += max(batch) * len(batch)
    return sum(lengths[i] for i in order) / slots if slots else 0.0


@dataclass(slots=True)
class PackCollator:
    """Stacks packed rows, right-padding to the longest (rounded up to `multiple_of`). The padding is
    a sequence of its own (positions from 0, no labels), so it is kept apart like any other."""

    pad_id: int
    multiple_of: int = 1

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        width = -(-width // self.multiple_of) * self.multiple_of
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[r, :n] = torch.as_tensor(row["input_ids"])
            labels[r, :n] = torch.as_tensor(row["labels"])
            positions[r, :n] = torch.as_tensor(row["position_ids"])
            positions[r, n:] = torch.arange(width - n)
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def keeps_sequences_apart(model: Any) -> bool:
    """True when `model` keeps packed sequences apart: two short sequences in one row, then the
    same row with the first one changed; the second's logits must not move. Runs in eval mode
    without a KV cache (as training does) and restores the model's mode."""
    import torch

    device = model.get_input_embeddings().weight.device
    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = [3, 5, 7, 11], [13, 17, 19]
    ids = torch.tensor([[t % vocab for t in first + second]], device=device)
    other = ids.clone()
    other[0, : len(first)] = torch.tensor([(t + 1) % vocab for t in first], device=device)
    positions = torch.tensor([list(range(len(first))) + list(range(len(second)))], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, len(first) :].float()
            b = (
                model(input_ids=other, position_ids=positions, use_cache=False)
                .logits[0, len(first) :]
                .float()
            )
    finally:
        model.train(was_training)
    return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4))
