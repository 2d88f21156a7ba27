"""`apply_decisions`: the review funnel step, on hand-made rows and decisions."""

from __future__ import annotations

import pytest

from datagen.errors import InputError
from datagen.io import dumps
from datagen.review.apply import CHANGED, accepted_ids, apply_decisions, review_mark
from datagen.review.decisions import Decision, append_decision, content_hash, read_decisions
from tests.review.small_run import calc, hhh


def _decide(path, conv, decision, *, when="2025-01-01T00:00:00+00:00", who="ana", **kw):
    append_decision(
        path, Decision(id=conv.id, hash=content_hash(conv), decision=decision, who=who, when=when, **kw)
    )


@pytest.fixture
def rows():
    return [hhh("a", "Write a poem about the sea.", "Waves."), hhh("b", "Tell me a joke.", "No."), calc("c")]


def test_rejected_rows_leave_and_the_funnel_counts_the_reason(rows, tmp_path):
    path = tmp_path / "review.jsonl"
    _decide(path, rows[1], "reject", reason="unhelpful")
    out, stats = apply_decisions(rows, path)
    assert [c.id for c in out] == ["a", "c"]
    assert out[0] is rows[0]  # rows without decisions pass through untouched
    assert stats.to_step() == {
        "step": "review",
        "in": 3,
        "kept": 2,
        "dropped": 1,
        "tagged": 0,
        "reasons": {"unhelpful": 1},
        "accepted": 0,
        "rescued": 0,
        "edited": 0,
        "flagged": 0,
    }


def test_an_accepted_row_stays_even_when_an_earlier_step_dropped_it(rows, tmp_path):
    path = tmp_path / "review.jsonl"
    dropped_ok, dropped_other = (
        hhh("d", "Explain recursion.", "It recurses.", loss=9.0),
        hhh("e", "Hi there!", "Hello."),
    )
    _decide(path, dropped_ok, "accept")
    _decide(path, dropped_other, "reject", reason="other")
    _decide(path, rows[0], "accept")
    out, stats = apply_decisions(rows, path, dropped=[dropped_ok, dropped_other])
    assert [c.id for c in out] == ["a", "b", "c", "d"]
    assert review_mark(out[3])["decision"] == "accepted" and out[3].tags["review"] == "accepted"
    assert review_mark(out[0])["original_hash"] == content_hash(rows[0])
    step = stats.to_step()
    assert (step["in"], step["kept"], step["dropped"], step["rescued"], step["accepted"]) == (4, 4, 0, 1, 2)
    assert accepted_ids(path) == {"a", "d"}


def test_an_edit_replaces_the_answer_marks_the_row_and_makes_a_preference_pair(rows, tmp_path):
    path = tmp_path / "review.jsonl"
    plugin = rows[2]
    _decide(path, plugin, "edit", turn=0, text="a draft")
    _decide(
        path, plugin, "edit", turn=0, text="23*47+12 is 1093.", when="2025-01-02T00:00:00+00:00", who="bo"
    )
    _decide(path, plugin, "edit", turn=1, text="1093 / 3 is about 364.33.")
    out, stats = apply_decisions(rows, path)
    edited = out[2]
    assert [t.assistant for t in edited.turns] == ["23*47+12 is 1093.", "1093 / 3 is about 364.33."]
    assert plugin.turns[0].assistant == "23*47+12 = 1093."  # the caller's row is not changed
    mark = review_mark(edited)
    assert mark == {
        "decision": "edited",
        "original_hash": content_hash(plugin),
        "who": ["ana", "bo"],
        "when": "2025-01-02T00:00:00+00:00",
        "edited_turns": [0, 1],
    }
    assert stats.edited == 1 and stats.to_step()["tagged"] == 1
    first, second = stats.pairs
    # TRL conversational preference rows; the prompt carries the command and the tool's result.
    roles = [m["role"] for m in first["prompt"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assert first["prompt"][2]["tool_calls"][0]["function"]["name"] == "Calculate"
    assert first["prompt"][3]["content"] == "1093"
    assert first["chosen"] == [{"role": "assistant", "content": "23*47+12 is 1093."}]
    assert first["rejected"] == [{"role": "assistant", "content": "23*47+12 = 1093."}]
    assert first["tools"][0]["function"]["name"] == "Calculate"
    # The second turn's prompt shows the first answer as the dataset now has it (edited).
    assert "23*47+12 is 1093." in [m.get("content") for m in second["prompt"]]
    assert second["rejected"][0]["content"] == "About 364.33." and second["datagen"]["turn"] == 1


def test_decisions_on_content_that_changed_are_flagged_not_applied(rows, tmp_path):
    path = tmp_path / "review.jsonl"
    _decide(path, rows[0], "reject", reason="unhelpful")
    _decide(path, rows[0], "edit", turn=0, text="Waves, softly.")
    _decide(path, rows[1], "edit", turn=5, text="no such turn")
    rerun = hhh("a", "Write a poem about the sea.", "A different poem, made by a rerun.")
    out, stats = apply_decisions([rerun, rows[1]], path)
    assert [c.id for c in out] == ["a", "b"]
    assert out[0].turns[0].assistant == "A different poem, made by a rerun." and review_mark(out[0]) is None
    assert [(f.decision.decision, f.why) for f in stats.flagged] == [
        ("reject", CHANGED),
        ("edit", CHANGED),
        ("edit", "the row has no turn 5"),
    ]
    assert stats.to_step()["flagged"] == 3 and stats.rejected == 0 and stats.pairs == []


def test_the_latest_verdict_wins(rows, tmp_path):
    path = tmp_path / "review.jsonl"
    _decide(path, rows[0], "reject", reason="unhelpful")
    _decide(path, rows[0], "accept")
    _decide(path, rows[1], "accept")
    _decide(path, rows[1], "reject", reason="unsafe")
    out, stats = apply_decisions(rows, path)
    assert [c.id for c in out] == ["a", "c"] and dict(stats.reasons) == {"unsafe": 1}
    assert accepted_ids(path) == {"a"}


def test_no_review_file_changes_nothing(rows, tmp_path):
    out, stats = apply_decisions(rows, tmp_path / "review.jsonl")
    assert out == rows and stats.to_step()["dropped"] == 0 and stats.kept == 3


def test_a_bad_decision_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "review.jsonl"
    good = Decision(id="a", hash="h", decision="accept", who="ana", when="t")
    path.write_text(
        dumps(good.to_dict()) + "\n" + dumps({"id": "b", "decision": "accept"}) + "\n", encoding="utf-8"
    )
    with pytest.raises(InputError) as err:
        read_decisions(path)
    assert str(err.value) == f"{path}:2: hash: missing required field"
    path.write_text(dumps({"id": "b", "hash": "h", "decision": "reject", "who": "x", "when": "t"}) + "\n")
    with pytest.raises(InputError, match=r"review.jsonl:1: a rejection needs a `reason`"):
        read_decisions(path)


def test_the_review_stage_streams_a_run_and_writes_rows_and_pairs(tmp_path):
    from datagen.io import iter_conversations, iter_json_lines
    from datagen.review.apply import review_stage
    from tests.review.small_run import make_small_run

    run = make_small_run(tmp_path / "run")
    kept = list(iter_conversations(run / "final.jsonl"))
    weak = next(c for c in iter_conversations(run / "checked" / "rejected.jsonl") if c.id == "hhh-weak")
    calc_row = next(c for c in kept if c.id == "plugin-calc")
    _decide(run / "review.jsonl", weak, "accept")
    _decide(run / "review.jsonl", kept[0], "reject", reason="formatting")
    _decide(run / "review.jsonl", calc_row, "edit", turn=1, text="1093 / 3 ≈ 364.33")
    info = review_stage(run, run / "final.jsonl", run / "review" / "kept.jsonl")
    out = list(iter_conversations(run / "review" / "kept.jsonl"))
    assert [c.id for c in out] == ["hhh-b", "hhh-xss", "plugin-calc", "hhh-weak"] and info["count"] == 4
    assert out[2].turns[1].assistant == "1093 / 3 ≈ 364.33" and out[2].tags == {"review": "edited"}
    assert out[3].scores["moss_loss"] == 4.0 and review_mark(out[3])["decision"] == "accepted"
    assert info["funnel_step"]["rescued"] == 1 and info["funnel_step"]["reasons"] == {"formatting": 1}
    assert info["flagged"] == []
    (pair,) = [obj for _, obj in iter_json_lines(run / "review" / "pairs.jsonl")]
    assert pair["id"] == "plugin-calc#1" and pair["chosen"][0]["content"] == "1093 / 3 ≈ 364.33"
    assert [m["role"] for m in pair["prompt"]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert (run / "final.jsonl").read_text(encoding="utf-8").count("hhh-a") >= 1  # inputs are never changed
