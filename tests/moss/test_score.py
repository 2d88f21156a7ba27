"""Scoring: batched, padded results equal a manual loss computation; thresholds and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datagen.errors import ConfigError, InputError
from datagen.model.loading import load_model
from datagen.model.score import (
    apply_check_threshold,
    percentile_value,
    score_conversations,
    score_records,
    score_report,
)
from datagen.model.tokenize import TruncationStats, tokenize_record
from datagen.record import Conversation, Turn
from tests.moss.conftest import SHORT_META, sft_record

ASSISTANT = ("Inner Thoughts", "Commands", "MOSS")
#: Plain-chat placeholders: trained on, never scored.
NONE_SEGMENTS = ("<|Inner Thoughts|>: None<eot>\n", "<|Commands|>: None<eoc>\n")


@pytest.fixture(scope="module")
def loaded(tiny_moss):
    return load_model(tiny_moss, device="cpu")


def manual_scores(lm, record, max_length):
    """Independent of datagen.model.tokenize: encode the pieces, run the model on one unpadded
    sequence, average the cross-entropy of the assistant's tokens per turn."""
    tok = lm.tokenizer
    ids = list(tok(record["meta_instruction"])["input_ids"])
    owner: list[tuple[int, bool]] = [(-1, False)] * len(ids)
    for t in range(record["num_turns"]):
        turn = record["chat"][f"turn_{t + 1}"]
        piece, piece_owner = [], []
        for key, text in turn.items():
            enc = tok(text, add_special_tokens=False)["input_ids"]
            piece += enc
            piece_owner += [(t, key in ASSISTANT and text not in NONE_SEGMENTS)] * len(enc)
        if len(ids) + len(piece) > max_length:
            break
        ids += piece
        owner += piece_owner
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0]
    losses = F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    per_turn: dict[int, list[float]] = {}
    for p in range(1, len(ids)):
        t, is_assistant = owner[p]
        if is_assistant:
            per_turn.setdefault(t, []).append(losses[p - 1].item())
    flat = [x for t in sorted(per_turn) for x in per_turn[t]]
    return sum(flat) / len(flat), [sum(v) / len(v) for _, v in sorted(per_turn.items())], len(ids)


def test_batched_scores_match_a_manual_loss_computation(loaded, moss_records):
    # Three lengths in one padded batch, one of them cut by the context.
    max_length = 700
    lengths = [tokenize_record(r, loaded.tokenizer, max_length=max_length) for r in moss_records]
    fits = next(r for r, t in zip(moss_records, lengths, strict=True) if t.fits and t.turns_total >= 2)
    cut = next(r for r, t in zip(moss_records, lengths, strict=True) if 2 <= t.turns_kept < t.turns_total)
    records = [sft_record("a", [("Hi.", "Hello!")]), fits, cut]
    scores = score_records(records, loaded, batch_size=3, max_length=max_length)
    for record, score in zip(records, scores, strict=True):
        loss, turn_losses, n = manual_scores(loaded, record, max_length)
        assert score.loss == pytest.approx(loss, abs=1e-4)
        assert score.turn_losses == pytest.approx(turn_losses, abs=1e-4)
        assert score.ppl == pytest.approx(math.exp(score.loss))
        assert score.turns_scored == len(turn_losses)
    assert not scores[2].fits and scores[2].tokens > max_length  # the long one was truncated
    assert scores[0].fits and scores[0].tokens == manual_scores(loaded, records[0], max_length)[2]


def test_none_placeholders_are_trained_on_but_not_scored(loaded):
    record = sft_record("plain", [("Hi.", "Hello!"), ("How are you?", "Fine, thanks.")])
    tok = tokenize_record(record, loaded.tokenizer, max_length=512)
    placeholders = [s for s in tok.segments if s.placeholder]
    assert {s.key for s in placeholders} == {"Inner Thoughts", "Commands"} and len(placeholders) == 4
    assert all(all(tok.loss_mask[s.start : s.end]) for s in placeholders)  # fine-tuning labels as upstream
    [score] = score_records([record], loaded, max_length=512)
    # only the MOSS segments count: computed here from the model's raw per-token losses
    with torch.no_grad():
        logits = loaded.model(torch.tensor([tok.input_ids])).logits[0]
    losses = F.cross_entropy(logits[:-1], torch.tensor(tok.input_ids[1:]), reduction="none")
    moss = [losses[p - 1].item() for s in tok.segments if s.key == "MOSS" for p in range(s.start, s.end)]
    assert score.scored_tokens == len(moss)
    assert score.loss == pytest.approx(sum(moss) / len(moss), abs=1e-4)


def test_batch_size_does_not_change_scores(loaded, moss_records):
    one = score_records(moss_records[:4], loaded, batch_size=1, max_length=1024)
    four = score_records(moss_records[:4], loaded, batch_size=4, max_length=1024)
    for a, b in zip(one, four, strict=True):
        assert a.loss == pytest.approx(b.loss, abs=1e-4)


def test_dialogue_where_no_turn_fits_has_no_loss(loaded):
    stats = TruncationStats()
    [score] = score_records([sft_record("x", [("Hi.", "Hello!")])], loaded, max_length=5, stats=stats)
    assert score.loss is None and score.ppl is None and not score.fits and score.turn_losses == []
    assert stats.dropped == 1


def test_max_length_beyond_the_context_is_refused(loaded):
    with pytest.raises(ConfigError, match="beyond the model's context"):
        score_records([sft_record("x", [("Hi.", "Hello!")])], loaded, max_length=4096)


def _conv(cid: str, human: str, answer: str) -> Conversation:
    return Conversation(id=cid, turns=[Turn(human=human, assistant=answer)], meta_instruction=SHORT_META)


def test_score_conversations_writes_the_scores_in_input_order(loaded):
    convs = [_conv(str(i), f"Question {i}?" * (i + 1), "Answer.") for i in range(5)]
    out = list(score_conversations(iter(convs), loaded, batch_size=2, max_length=512, window=3))
    assert [c.id for c in out] == [str(i) for i in range(5)]
    for c in out:
        s = c.scores
        assert set(s) >= {"moss_loss", "moss_ppl", "moss_turn_losses", "moss_tokens", "moss_fits"}
        assert s["moss_fits"] and len(s["moss_turn_losses"]) == 1 and s["moss_tokens"] > 0
    assert len({c.scores["moss_tokens"] for c in out}) == 5  # each row got its own score


def _scored(cid: str, loss: float | None, fits: bool = True) -> Conversation:
    c = _conv(cid, "q", "a")
    c.scores = {
        "moss_loss": loss,
        "moss_ppl": None if loss is None else math.exp(loss),
        "moss_tokens": 10,
        "moss_fits": fits,
        "moss_turn_losses": [],
    }
    return c


def test_threshold_by_max_loss_and_percentile():
    convs = [_scored(str(i), float(i)) for i in range(10)] + [
        _scored("none", None, fits=False),
        _scored("long", 1.5, fits=False),
    ]
    kept, rejected = apply_check_threshold(convs, max_loss=6.5)
    assert sorted(c.id for c in kept) == sorted(["0", "1", "2", "3", "4", "5", "6", "long"])
    by_id = {r["id"]: r["rejected"] for r in rejected}
    assert by_id["7"] == {
        "step": "moss_check",
        "reason": "loss_above_max",
        "evidence": {"moss_loss": 7.0, "cutoff": 6.5},
    }
    assert by_id["none"]["reason"] == "no_turn_fits"

    verdict = apply_check_threshold([_scored(str(i), float(i)) for i in range(10)], percentile=80)
    cutoff = float(np.percentile(np.arange(10.0), 80))
    assert verdict.cutoff == pytest.approx(cutoff)
    assert sorted(r["id"] for r in verdict.rejected) == ["8", "9"]
    assert verdict.rejected[0]["rejected"]["evidence"]["percentile"] == 80
    assert verdict.funnel_step() == {
        "step": "moss_check",
        "in": 10,
        "kept": 8,
        "dropped": 2,
        "tagged": 0,
        "reasons": {"loss_above_percentile": 2},
    }

    fit = apply_check_threshold([_scored("a", 1.0), _scored("b", 1.0, fits=False)], require_fit=True)
    assert [c.id for c in fit.kept] == ["a"] and fit.reasons == {"too_long": 1}
    assert fit.rejected[0]["tags"]["moss_check"] == "too_long"


def test_threshold_needs_scored_rows_and_a_valid_percentile():
    with pytest.raises(InputError, match="datagen check"):
        apply_check_threshold([_conv("u", "q", "a")], max_loss=1.0)
    with pytest.raises(ConfigError):
        apply_check_threshold([_scored("a", 1.0)], percentile=0)


@pytest.mark.parametrize("q", [0, 10, 33.3, 50, 95, 100])
def test_percentile_matches_numpy(q):
    xs = [3.2, 1.0, 7.5, 2.2, 9.9, 4.4, 0.3]
    assert percentile_value(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_report_counts_and_quantiles():
    convs = [_scored(str(i), float(i)) for i in range(1, 6)] + [
        _scored("n", None, fits=False),
        _scored("t", 2.0, fits=False),
    ]
    r = score_report(convs)
    assert (r["scored"], r["with_loss"], r["fit"], r["truncated"], r["no_turn_fits"]) == (7, 6, 5, 1, 1)
    assert r["loss"]["p50"] == pytest.approx(float(np.percentile([1, 2, 3, 4, 5, 2], 50)))
    assert sum(h["count"] for h in r["histogram"]) == 6
