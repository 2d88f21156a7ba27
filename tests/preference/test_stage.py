"""The `preference` stage adapter: `make_preference` over a run's final rows, with the run's
teacher, tools and journal, recording what the runner reads."""

from __future__ import annotations

import types

from datagen.io import write_jsonl_atomic
from datagen.preference.config import PreferenceConfig
from datagen.preference.stage import PreferenceStage
from datagen.stage import StageContext, StageResult, StageStats
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.preference.conftest import calc_dialogue, hhh_dialogue
from tests.preference.scripted import Script


def test_the_stage_runs_on_final_rows_with_the_runs_teacher_and_journal(fake_openai, tmp_path):
    fake_openai.set_responder(Script())
    write_jsonl_atomic(tmp_path / "final.jsonl", [hhh_dialogue(1), calc_dialogue(1)])
    cfg = types.SimpleNamespace(
        teacher=make_teacher_config_for(fake_openai),
        tools={"calculator": {}, "solver": {}},
        preference={"sources": ["original", {"kind": "teacher", "temperatures": [0.3, 1.0]}]},
    )
    stage = PreferenceStage(cfg)
    assert isinstance(stage.config, PreferenceConfig) and stage.config.tools == cfg.tools
    logged: list[str] = []
    final = StageResult("final", "f", {}, {"main": tmp_path / "final.jsonl"}, [])
    ctx = StageContext(
        tmp_path,
        cfg,
        StageStats("preference"),
        journal=tmp_path / "journal.sqlite",
        upstream={"final": final},
        progress=False,
        log=logged.append,
    )
    assert list(stage.run([], ctx)) == []
    outputs = stage.outputs(ctx)
    assert outputs["main"] == tmp_path / "preference" / "pairs.jsonl" and all(
        p.exists() for p in outputs.values()
    )
    info = ctx.info
    assert info["count"] == info["pairs"] > 0 and info["calls"] == fake_openai.requests
    assert info["retryable_failed"] == 0 and info["funnel_step"]["step"] == "preference"
    assert (tmp_path / "journal.sqlite").exists() and logged[0].startswith("preference: ")
    assert stage.funnel(info, ctx) == []
