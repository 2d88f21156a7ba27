"""A run in waves against the fake teacher with scripted judgments: targets per cell are met
exactly, the budget holds, a rerun with raised targets pays only for the new rows, and `status`
shows each cell."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest
import yaml

from datagen.run.config import load_config
from datagen.run.waves import QuotaRun, journal_spend, quota_status
from tests.filters.judge_script import scripted_judge
from tests.generate.scripted_teacher import scripted_teacher

pytestmark = pytest.mark.slow

A, B = "writing/en/hhh/-", "tool/en/plugin/calculator"
SEEDS = [
    ("w1", "Write a short poem about the sea at night.", "writing", []),
    ("w2", "Draft a polite email asking my landlord to fix the heating.", "writing", []),
    ("w3", "Write a limerick about a cat who learns to code.", "writing", []),
    ("c1", "What is 23*47+12?", "tool", ["calculator"]),
    (
        "c2",
        "If a shirt costs 80 dollars and is 25% off, what do I pay? Compute 80*0.75.",
        "tool",
        ["calculator"],
    ),
    ("q1", "Explain what a race condition is.", "code", []),  # a cell with no target: never asked
]


def _judge_drops_some(n, criterion, block):
    # a helpful score of 2 (dropped) for about 4 dialogues in 10, decided by the first turn's text
    if n == 1 and criterion == "helpful" and zlib.crc32(block.encode()) % 10 < 4:
        return 2
    return 5


JUDGE = scripted_judge(score=_judge_drops_some)


def responder(body):
    system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
    if system.startswith(("You grade dialogues", "You check answers of MOSS")):
        return JUDGE(body)
    return scripted_teacher(body)


def _config(tmp_path: Path, fake, targets: dict[str, int], budget: dict | None = None) -> Path:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "language": "en", "category": c, "plugins": p}) + "\n"
            for i, t, c, p in SEEDS
        ),
        encoding="utf-8",
    )
    config = {
        "name": "quota",
        "seed": 5,
        "teacher": {
            "base_url": fake.base_url,
            "model": fake.model,
            "api_key_env": "DATAGEN_TEST_TEACHER_KEY",
            "concurrency": 8,
            "timeout": 5,
            "max_attempts": 3,
            "min_backoff": 0.01,
            "max_backoff": 0.05,
            "progress": False,
            "prices": {fake.model: {"input": 1.0, "output": 2.0}},
        },
        "seeds": {"path": str(seeds)},
        "expand": {"batch_size": 6, "parallel": 4, "near_dup_threshold": 0.95},
        "dialogues": {
            "hhh": {"options": {"turns": {"default": [2]}}},
            "plugin": {"options": {"turns": {"default": [1]}}},
        },
        "filters": {"steps": {"judge": {"rubrics": ["hhh"]}}},
        "dataset": {"enabled": False},
        "targets": targets,
    }
    if budget is not None:
        config["budget"] = budget
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _final_cells(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (out / "final.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cell = (
            f"{row['category']}/{row['language']}/{'plugin' if row['plugins'] else 'hhh'}/"
            f"{'+'.join(sorted(row['plugins'])) or '-'}"
        )
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def _journal_keys(out: Path) -> set[str]:
    with sqlite3.connect(out / "journal.sqlite") as db:
        return {k for (k,) in db.execute("select key from calls")}


def test_waves_meet_the_targets_exactly_within_budget_and_a_raise_pays_only_for_new_rows(
    fake_openai, tmp_path
):
    fake_openai.set_responder(responder)
    out = tmp_path / "run"
    cfg = load_config(_config(tmp_path, fake_openai, {"writing/en/hhh": 20, B: 5}, {"usd": 1.0}))
    QuotaRun(cfg, out).run()
    assert _final_cells(out) == {A: 20, B: 5}
    state = json.loads((out / "quota.json").read_text())
    assert len(state["waves"]) >= 2 and state["plan"]["stop"] == "done"
    usd, _ = journal_spend(out / "journal.sqlite")
    assert 0 < usd <= 1.0
    # the judge graded every dialogue that reached it, and dropped some: the rates were measured
    funnel = json.loads((out / "funnel.json").read_text())
    judge = next(s for s in funnel["steps"] if s["step"] == "judge")
    assert judge["dropped"] > 0 and judge["reasons"].get("low_helpful")
    quota = funnel["steps"][-1]
    assert quota["step"] == "quota" and quota["kept"] == 25
    report = json.loads((out / "judge.json").read_text())
    assert (
        funnel["judge"]["cells"][A]["criteria"]["helpful"]["hist"]["2"] > 0
    )  # the score distribution per cell
    assert "Score/length correlation" in (out / "funnel.md").read_text()
    assert set(report["cells"]) >= {A, B} and report["length_correlation"]["helpful"]["turns"] > 0
    status = quota_status(out)
    reserve = sum(1 for _ in (out / "reserve.jsonl").open())
    assert f"| {A} | 20 / 20" in status and f"| {B} | 5 / 5" in status and "stopped: done" in status
    assert (f"(+{reserve} reserve)" in status) == (reserve > 0)
    waves_before = len(state["waves"])
    finals_before = [(out / w["dir"] / "final.jsonl").read_bytes() for w in state["waves"]]
    keys_before = _journal_keys(out)
    sent_before = {json.dumps(b["messages"], sort_keys=True) for b in fake_openai.received}

    # the same targets again: nothing is asked
    requests = fake_openai.requests
    QuotaRun(
        load_config(_config(tmp_path, fake_openai, {"writing/en/hhh": 20, B: 5}, {"usd": 1.0})), out
    ).run()
    assert fake_openai.requests == requests and _journal_keys(out) == keys_before

    # raised targets: the reserve first, then new waves; no request sent before is sent again
    raised = {"writing/en/hhh": 20 + reserve + 6, B: 7}
    QuotaRun(load_config(_config(tmp_path, fake_openai, raised, {"usd": 1.0})), out).run()
    assert _final_cells(out) == {A: 26 + reserve, B: 7}
    state = json.loads((out / "quota.json").read_text())
    assert len(state["waves"]) > waves_before
    assert [
        (out / w["dir"] / "final.jsonl").read_bytes() for w in state["waves"][:waves_before]
    ] == finals_before
    new_keys = _journal_keys(out) - keys_before
    assert new_keys and keys_before <= _journal_keys(out)
    resent = [
        b for b in fake_openai.received[requests:] if json.dumps(b["messages"], sort_keys=True) in sent_before
    ]
    assert resent == []
    # journal counts: every call the raise paid for is a new journal row, nothing was asked twice
    assert len(new_keys) == fake_openai.requests - requests
    # every new call is one of the new waves' (dialogues and their judgments) or the pool's growth
    with sqlite3.connect(out / "journal.sqlite") as db:
        assert db.execute("select count(*) from calls where status = 'failed'").fetchone()[0] == 0


def test_a_tight_budget_stops_the_waves_before_it_is_spent(fake_openai, tmp_path):
    fake_openai.set_responder(responder)
    out = tmp_path / "run"
    QuotaRun(load_config(_config(tmp_path, fake_openai, {"writing/en/hhh": 200}, {"usd": 0.1})), out).run()
    state = json.loads((out / "quota.json").read_text())
    assert state["plan"]["stop"] == "budget"
    usd, _ = journal_spend(out / "journal.sqlite")
    assert 0.05 < usd <= 0.1  # most of it spent, never more
    assert 0 < _final_cells(out).get(A, 0) < 200
    assert "stopped: budget" in quota_status(out)
