"""Candidates from the fake teacher: every source, the journal on a rerun, contrastive answers of
plugin turns, and the pairwise ranking with both orders."""

from __future__ import annotations

import json
import random

import pytest

from datagen.errors import TeacherError
from datagen.preference import PreferenceConfig, make_preference
from datagen.preference.candidates import dedupe, shift_number, wrong_calls
from datagen.record import ToolCall
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.preference.conftest import calc_dialogue, hhh_dialogue
from tests.preference.scripted import Script


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(fake, tmp_path, dialogues, data, script=None, **kw):
    script = script or Script()
    fake.set_responder(script)
    stats = make_preference(
        dialogues,
        PreferenceConfig.from_dict(data),
        make_teacher_config_for(fake),
        tmp_path / "pref",
        journal_path=tmp_path / "journal.sqlite",
        progress=False,
        **kw,
    )
    return stats, script


def test_candidates_from_every_source_with_their_own_settings(fake_openai, tmp_path):
    data = {
        "sources": [
            "original",
            {"kind": "teacher", "temperatures": [0.3, 1.0], "samples": 2},
            {"kind": "teacher", "model": "second-model", "temperatures": [0.2], "max_tokens": 64},
            {"kind": "server", "model": "local-served", "temperatures": [0.9]},
        ],
        "contrastive": [],
        "turns": "first",
    }
    stats, script = _run(fake_openai, tmp_path, [hhh_dialogue(1), calc_dialogue(1)], data)
    cands = _lines(tmp_path / "pref" / "candidates.jsonl")
    by_slot = {}
    for c in cands:
        by_slot.setdefault(c["slot"], []).append(c["source"])
    # the scripted teacher answers both samples of a temperature alike: the second is a repeat
    assert by_slot["hhh-1#0"] == [
        "original",
        "teacher@0.3#0",
        "teacher@1#0",
        "teacher:second-model@0.2",
        "server:local-served@0.9",
    ]
    assert stats.counts["duplicate_candidates"] == 4  # the second sample of each temperature, in both slots
    bodies = fake_openai.received
    sent = [
        (b["model"], b["temperature"], b.get("max_tokens"))
        for b in bodies
        if "impartial judge" not in b["messages"][0]["content"]
    ]
    assert ("second-model", 0.2, 64) in sent and ("local-served", 0.9, 512) in sent
    assert sent.count(("fake-teacher", 0.3, 512)) == 4  # 2 samples x 2 slots, kept apart in the journal
    # the teacher got generation's own templates: plain chat for hhh, the answer call with results for plugin
    assert script.roles.count("assistant") == 5 and script.roles.count("answer") == 5
    server = next(b for b in bodies if b["model"] == "local-served" and "23*47" in json.dumps(b))
    assert (
        server["messages"][-1]["content"]
        == "What is 23*47+1?\n\n<|Results|>:\nCalculate(\"23*47+1\") => '1082'"
    )
    plugin = [c for c in cands if c["slot"] == "plugin-calc-1#0"]
    assert all(c["turn"]["calls"] == [{"name": "Calculate", "arg": "23*47+1"}] for c in plugin)
    assert stats.counts["candidates_teacher"] == 6 and stats.counts["candidates_server"] == 2


def test_a_rerun_pays_for_nothing_and_writes_the_same_pairs(fake_openai, tmp_path):
    data = {"sources": ["original", {"kind": "teacher", "temperatures": [0.3, 1.0]}]}
    first, _ = _run(fake_openai, tmp_path, [hhh_dialogue(1), calc_dialogue(1)], data)
    pairs = (tmp_path / "pref" / "pairs.jsonl").read_bytes()
    paid = fake_openai.requests
    assert first.calls == paid and first.cached_calls == 0
    again, _ = _run(fake_openai, tmp_path, [hhh_dialogue(1), calc_dialogue(1)], data)
    assert fake_openai.requests == paid and again.cached_calls == again.calls == paid
    assert (tmp_path / "pref" / "pairs.jsonl").read_bytes() == pairs
    # a new temperature asks only for what is new (its candidates and the pairs they make)
    _run(
        fake_openai,
        tmp_path,
        [hhh_dialogue(1)],
        {"sources": ["original", {"kind": "teacher", "temperatures": [0.3, 1.0, 0.5]}]},
    )
    assert 0 < fake_openai.requests - paid < paid


def test_plugin_turns_get_contrastive_candidates_and_pairs(fake_openai, tmp_path):
    data = {"sources": ["original", {"kind": "teacher", "temperatures": [0.3]}]}
    stats, script = _run(fake_openai, tmp_path, [calc_dialogue(1), calc_dialogue(2, fail=True)], data)
    cands = {(c["slot"], c["source"]): c for c in _lines(tmp_path / "pref" / "candidates.jsonl")}
    # a failed tool: answered as if it had worked; results to ignore only where a tool gave some
    assert ("plugin-calc-fail-2#0", "contrastive:failed_as_success") in cands
    assert ("plugin-calc-1#0", "contrastive:failed_as_success") not in cands
    assert ("plugin-calc-1#0", "contrastive:ignore_results") in cands
    assert ("plugin-calc-fail-2#0", "contrastive:ignore_results") not in cands
    assert stats.counts["skipped_failed_as_success_no_failed_tool"] == 1
    assert stats.counts["skipped_ignore_results_no_results"] == 1
    # a wrong command is really run: Solve instead of Calculate, whose real result is recorded
    wrong = cands[("plugin-calc-1#0", "contrastive:wrong_command")]["turn"]
    assert wrong["calls"] == [{"name": "Solve", "arg": "23*47+1"}]
    assert wrong["results"][0]["name"] == "Solve" and wrong["results"][0]["arg"] == "23*47+1"
    assert script.roles.count("failed_as_success") == 1 and script.roles.count("ignore_results") == 1
    pairs = _lines(tmp_path / "pref" / "pairs.jsonl")
    by_id = {p["id"]: p for p in pairs}
    grounded = by_id["plugin-calc-1#0:original>contrastive:ignore_results"]
    assert grounded["prompt"][-1]["role"] == "tool" and grounded["chosen"] == [
        {"role": "assistant", "content": "[good] 23*47+1 = 1082."}
    ]
    assert grounded["rejected"][0]["content"].startswith("[bad] From memory")
    cmd = by_id["plugin-calc-1#0:original>contrastive:wrong_command"]
    assert cmd["prompt"][-1] == {
        "role": "user",
        "content": "What is 23*47+1?",
    }  # the commands are the completion
    assert [m["role"] for m in cmd["rejected"]] == ["assistant", "tool", "assistant"]
    assert cmd["rejected"][0]["tool_calls"][0]["function"] == {
        "name": "Solve",
        "arguments": '{"equation": "23*47+1"}',
    }
    assert (
        stats.counts["tool_pairs"] == stats.counts["pairs"]
        and stats.counts["pairs_contrastive_wrong_command"] == 4
    )
    # no pair of two contrastive answers is judged
    judged = _lines(tmp_path / "pref" / "judgements.jsonl")
    assert not [j for j in judged if j["x"].startswith("contrastive") and j["y"].startswith("contrastive")]


def test_judge_position_bias_is_cancelled_and_ties_dropped_with_reasons(fake_openai, tmp_path):
    data = {"sources": ["original", {"kind": "teacher", "temperatures": [0.3, 1.0]}], "turns": "first"}
    fair, _ = _run(fake_openai, tmp_path / "fair", [hhh_dialogue(1)], data)
    fair_pairs = {p["id"]: p["margin"] for p in _lines(tmp_path / "fair" / "pref" / "pairs.jsonl")}
    biased, _ = _run(fake_openai, tmp_path / "biased", [hhh_dialogue(1)], data, script=Script(bias=1))
    biased_pairs = {p["id"]: p["margin"] for p in _lines(tmp_path / "biased" / "pref" / "pairs.jsonl")}
    # [good] original vs [good] teacher@0.3 is even: a tie to a fair judge; the biased one prefers
    # whichever it reads first, so the two orders disagree
    assert fair.counts["dropped_tie"] == 1 and biased.counts["dropped_position_bias"] == 1
    assert (
        biased_pairs
        == fair_pairs
        == {"hhh-1#0:original>teacher@1": 4.0, "hhh-1#0:teacher@0.3>teacher@1": 4.0}
    )
    judged = _lines(tmp_path / "biased" / "pref" / "judgements.jsonl")
    assert [o["first"] for o in judged[1]["orders"]] == ["original", "teacher@1"]
    assert [o["scores"] for o in judged[1]["orders"]] == [[10.0, 5.0], [6.0, 9.0]]  # +1 to the first answer
    assert biased.funnel_step() == {
        "step": "preference",
        "in": 3,
        "kept": 2,
        "dropped": 1,
        "tagged": 0,
        "reasons": {"position_bias": 1},
    }


def test_low_margins_and_unreadable_judges_are_dropped(fake_openai, tmp_path):
    data = {
        "sources": ["original", {"kind": "teacher", "temperatures": [1.0]}],
        "turns": "first",
        "judge": {"min_margin": 5},
    }
    stats, _ = _run(fake_openai, tmp_path / "a", [hhh_dialogue(1)], data)
    assert stats.counts["dropped_low_margin"] == 1 and stats.counts["pairs"] == 0
    stats, _ = _run(
        fake_openai, tmp_path / "b", [hhh_dialogue(1)], data, script=Script(judge_text="A is better.")
    )
    assert stats.counts["dropped_judge_unparsed"] == 1
    assert (tmp_path / "b" / "pref" / "pairs.jsonl").read_text() == ""


def test_failed_judge_calls_are_counted_and_retried_on_the_next_run(fake_openai, tmp_path):
    data = {"sources": ["original", {"kind": "teacher", "temperatures": [1.0]}], "turns": "first"}
    fake_openai.inject("500", times=None, match="impartial judge")
    stats, _ = _run(fake_openai, tmp_path, [hhh_dialogue(1)], data)
    assert stats.counts["dropped_judge_failed"] == 1 and stats.retryable_failed == 2
    assert stats.counts["failed_server_error"] == 2
    fake_openai.reset()
    stats, _ = _run(fake_openai, tmp_path, [hhh_dialogue(1)], data)
    assert stats.counts["pairs"] == 1 and stats.retryable_failed == 0
    assert fake_openai.requests == 2  # only the judge calls; the candidate came from the journal


def test_a_teacher_refusing_every_call_stops_the_stage(fake_openai, tmp_path):
    fake_openai.inject("401", times=None)
    with pytest.raises(TeacherError, match="refused every call"):
        _run(fake_openai, tmp_path, [hhh_dialogue(1)], {"sources": [{"kind": "teacher"}]})


def test_wrong_commands_and_repeats():
    rng = random.Random(0)
    assert wrong_calls([ToolCall("Calculate", "2+3")], ["Calculate", "Solve"], rng) == [
        ToolCall("Solve", "2+3")
    ]
    shifted = wrong_calls([ToolCall("Calculate", "23*47")], ["Calculate"], random.Random(1))
    assert shifted[0].name == "Calculate" and shifted[0].arg != "23*47" and "*" in shifted[0].arg
    assert wrong_calls([ToolCall("Search", "tallest building")], ["Search"], rng) is None
    assert shift_number("no digits", rng) is None
    from datagen.preference.candidates import Candidate
    from datagen.record import Turn

    a, b, c = (
        Candidate("s", n, Turn(human="q", assistant=t))
        for n, t in (("x", "Same  answer"), ("y", "same answer"), ("z", "other"))
    )
    assert dedupe([a, b, c]) == ([a, c], 1)


def test_a_tool_backend_down_skips_the_wrong_command_with_a_reason():
    from datagen.generate.prompts import PromptBook
    from datagen.preference.candidates import Slot, plan_candidates
    from datagen.preference.prompts import load_template
    from datagen.teacher.config import TeacherConfig
    from datagen.tools.base import ToolUnavailableError

    class Down:
        name, plugin, time_limit = "Solve", "solver", 5.0

        def run(self, arg):
            raise ToolUnavailableError("solver backend down")

    config = PreferenceConfig.from_dict({"sources": ["original"], "contrastive": ["wrong_command"]})
    ready, asks, skipped = plan_candidates(
        Slot(calc_dialogue(1), 0),
        config,
        PromptBook(),
        load_template("contrastive"),
        TeacherConfig(),
        {"solver": Down()},
    )
    assert [c.source for c in ready] == ["original"] and asks == []
    assert skipped == {"skipped_wrong_command_tool_unavailable": 1}
