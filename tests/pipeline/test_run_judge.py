"""A judge step in a plain `datagen run` (no targets): it asks the run's teacher through the run's
journal, drops low rows with their reason, and writes its report beside the filters' outputs."""

from __future__ import annotations

import json

import yaml

from datagen.cli import main
from datagen.io import iter_conversations
from tests.pipeline.test_quota_run import _config, responder


def test_a_judge_step_in_a_plain_run_uses_the_runs_teacher_and_journal(fake_openai, tmp_path):
    fake_openai.set_responder(responder)
    path = _config(tmp_path, fake_openai, targets={})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    del config["targets"]
    config["expand"]["targets"] = {"default": 1, "tool": 1}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0

    funnel = json.loads((out / "funnel.json").read_text(encoding="utf-8"))
    judge = next(s for s in funnel["steps"] if s["step"] == "judge")
    assert judge["in"] > 0 and judge["dropped"] == judge["reasons"].get("low_helpful", 0)
    assert (out / "filtered" / "judge.json").exists()
    rows = list(iter_conversations(out / "final.jsonl"))
    assert rows and all("judge_helpful" in r.scores for r in rows if r.kind == "hhh")
    # the judge's calls are in the run's journal: a rerun pays for nothing
    before = fake_openai.requests
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert fake_openai.requests == before
