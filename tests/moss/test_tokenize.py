"""Tokenisation and label masks in `datagen` tokenization (every character encoded, the Results body
masked by character offsets), checked by hand and over every sample file. Upstream parity is in
test_upstream_parity.py."""

from __future__ import annotations

import pytest

from datagen.errors import FormatError
from datagen.model.loading import load_tokenizer
from datagen.model.tokenize import SEGMENT_KEYS, TruncationStats, tokenize_record
from tests.moss.conftest import SHORT_META, sft_record

PLUGIN_TURN = {
    "Human": "<|Human|>: What is 24/4?<eoh>\n",
    "Inner Thoughts": "<|Inner Thoughts|>: I should use the calculator.<eot>\n",
    "Commands": '<|Commands|>: Calculate("24/4")<eoc>\n',
    "Tool Responses": "<|Results|>:\nCalculate(\"24/4\") => '6.0'\n<eor>\n",
    "MOSS": "<|MOSS|>: It is 6.<eom>\n",
}
RESULTS_BODY = "\nCalculate(\"24/4\") => '6.0'\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_moss):
    tok, added = load_tokenizer(tiny_moss, tokenization="datagen")
    assert added == []
    return tok


def _text(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def test_masks_on_a_hand_checked_plugin_turn(tokenizer):
    record = {"meta_instruction": SHORT_META, "num_turns": 1, "chat": {"turn_1": PLUGIN_TURN}}
    d = tokenize_record(record, tokenizer, max_length=2048)
    ids, mask = d.input_ids, d.loss_mask
    # The sequence is the meta instruction followed by the five segments, each encoded on its own.
    assert _text(tokenizer, ids) == SHORT_META + "".join(PLUGIN_TURN.values())
    expected_ids = tokenizer(SHORT_META)["input_ids"]
    for seg in PLUGIN_TURN.values():
        expected_ids += tokenizer(seg, add_special_tokens=False)["input_ids"]
    assert ids == expected_ids
    # Exactly two runs are masked: the meta instruction and the body of the Results segment.
    masked = [i for i, m in zip(ids, mask, strict=True) if not m]
    assert _text(tokenizer, masked) == SHORT_META + RESULTS_BODY
    assert not any(mask[: d.meta_length]) and all(mask[d.meta_length : d.meta_length + 3])
    results = next(s for s in d.segments if s.key == "Tool Responses")
    seg_ids, seg_mask = ids[results.start : results.end], mask[results.start : results.end]
    kept = [i for i, m in zip(seg_ids, seg_mask, strict=True) if m]
    assert _text(tokenizer, kept) == "<|Results|>:<eor>\n"  # prefix and end tag keep their loss
    # Everything else, Human included, is trained on.
    for seg in d.segments:
        if seg.key != "Tool Responses":
            assert all(mask[seg.start : seg.end]), seg.key
    assert d.labels() == [t if m else -100 for t, m in zip(ids, mask, strict=True)]


def test_assistant_only_also_masks_human(tokenizer):
    record = {"meta_instruction": SHORT_META, "num_turns": 1, "chat": {"turn_1": PLUGIN_TURN}}
    base = tokenize_record(record, tokenizer, max_length=2048)
    d = tokenize_record(record, tokenizer, max_length=2048, assistant_only=True)
    assert d.input_ids == base.input_ids
    human = next(s for s in d.segments if s.key == "Human")
    assert not any(d.loss_mask[human.start : human.end])
    outside = [m for i, m in enumerate(d.loss_mask) if not human.start <= i < human.end]
    assert outside == [m for i, m in enumerate(base.loss_mask) if not human.start <= i < human.end]


def test_every_sample_round_trips_and_masks_only_meta_and_results_bodies(tokenizer, moss_records):
    for record in moss_records:
        d = tokenize_record(record, tokenizer, max_length=10**6)
        turns = [record["chat"][f"turn_{i}"] for i in range(1, record["num_turns"] + 1)]
        assert _text(tokenizer, d.input_ids) == record["meta_instruction"] + "".join(
            "".join(t.values()) for t in turns
        )
        bodies = [t["Tool Responses"][len("<|Results|>:") : -len("<eor>\n")] for t in turns]
        masked = [i for i, m in zip(d.input_ids, d.loss_mask, strict=True) if not m]
        assert _text(tokenizer, masked) == record["meta_instruction"] + "".join(bodies)
        assert [s.key for s in d.segments] == list(SEGMENT_KEYS) * len(turns)
        assert d.fits and d.turns_kept == len(turns)


def test_turns_past_the_context_are_dropped_from_the_end(tokenizer):
    record = sft_record(
        "t",
        [("Hi.", "Hello!"), ("Tell me a long story about the sea and ships. " * 8, "No."), ("Ok.", "Bye!")],
    )
    full = tokenize_record(record, tokenizer, max_length=10**6)
    ends = [max(s.end for s in full.segments if s.turn == t) for t in range(3)]
    # Room for turn 1 only; the short turn 3 would fit on its own, but upstream stops at the
    # first turn that does not fit.
    limit = ends[1] - 1
    assert ends[2] - ends[1] < limit - ends[0]
    d = tokenize_record(record, tokenizer, max_length=limit)
    assert (d.turns_kept, d.turns_total, d.fits, d.empty) == (1, 3, False, False)
    assert d.input_ids == full.input_ids[: ends[0]]
    assert d.full_length == full.full_length == ends[2]
    assert len(d.input_ids) <= limit
    # At exactly the length of two turns, both fit (upstream: `> max_length` breaks).
    assert tokenize_record(record, tokenizer, max_length=ends[1]).turns_kept == 2
    # Not even the first turn: the dialogue is empty and counted as dropped.
    empty = tokenize_record(record, tokenizer, max_length=ends[0] - 1)
    assert empty.empty and empty.input_ids == full.input_ids[: full.meta_length]
    stats = TruncationStats()
    for t in (full, d, empty):
        stats.add(t)
    assert stats.to_dict() == {"dialogues": 3, "truncated": 1, "turns_dropped": 2 + 3, "dropped": 1}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r["chat"]["turn_1"].update({"Mood": "x"}), "chat.turn_1.Mood"),
        (
            lambda r: r["chat"]["turn_1"].update({"Tool Responses": "None<eor>\n"}),
            "chat.turn_1.Tool Responses",
        ),
        (
            lambda r: r["chat"]["turn_1"].update({"Tool Responses": "<|Results|>: None\n"}),
            "chat.turn_1.Tool Responses",
        ),
        (lambda r: r.update({"num_turns": 2}), "chat.turn_2"),
        (lambda r: r.update({"meta_instruction": ""}), "meta_instruction"),
        (lambda r: r.pop("chat"), "chat"),
    ],
)
def test_malformed_records_name_the_field(tokenizer, mutate, field):
    record = sft_record("bad", [("Hi.", "Hello!")])
    mutate(record)
    with pytest.raises(FormatError) as err:
        tokenize_record(record, tokenizer, max_length=2048, path="data.jsonl", line=7)
    assert err.value.field == field and err.value.location == "data.jsonl:7"
    assert str(err.value).startswith(f"data.jsonl:7: {field}: ")


def test_absent_segments_are_skipped(tokenizer):
    record = sft_record("a", [("Hi.", "Hello!")])
    for key in ("Inner Thoughts", "Commands", "Tool Responses"):
        record["chat"]["turn_1"][key] = ""
    d = tokenize_record(record, tokenizer, max_length=2048)
    assert _text(tokenizer, d.input_ids) == SHORT_META + "<|Human|>: Hi.<eoh>\n<|MOSS|>: Hello!<eom>\n"
    assert [s.key for s in d.segments] == ["Human", "MOSS"]
