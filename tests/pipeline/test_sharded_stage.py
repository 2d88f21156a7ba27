"""A real stage under another executor: `dialogues.*` run as two shards (each rank its own file and
counters, the driver merging them, as a Ray executor does) make the same dialogues and record the
same counts as `datagen run` in one process."""

from __future__ import annotations

import json

import pytest
import yaml

from datagen.run.config import load_config
from datagen.run.pipeline import stages_for
from datagen.run.runner import Runner
from tests.generate.scripted_teacher import scripted_teacher
from tests.pipeline.test_golden import SEEDS
from tests.run_files import fake_teacher, write_seeds
from tests.test_stage import TwoShards


def _config(tmp_path, fake_openai):
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "shards",
                "seed": 3,
                "teacher": fake_teacher(fake_openai),
                "seeds": {"path": str(seeds)},
                "expand": {"targets": {"default": 1, "tool": 0}, "batch_size": 4, "parallel": 2},
                "dialogues": {
                    "hhh": {"options": {"turns": {"default": [1]}, "concurrency": 1}},
                    "plugin": {"options": {"turns": {"default": [1]}, "concurrency": 1}},
                },
                "filters": {"workers": 1},
                "dataset": {"enabled": False},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return load_config(path)


def _rows(path):
    return sorted(
        (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()), key=lambda r: r["id"]
    )


@pytest.mark.slow  # two whole runs
def test_dialogues_as_two_shards_match_one_process(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    cfg = _config(tmp_path, fake_openai)
    one, two = tmp_path / "one", tmp_path / "two"
    Runner(cfg, one).run(stages_for(cfg, one))
    executor = TwoShards()
    Runner(cfg, two, executor=executor).run(stages_for(cfg, two))

    assert executor.seen == [(f"dialogues.{k}", r, 2) for k in ("hhh", "plugin") for r in (0, 1)]
    for kind in ("hhh", "plugin"):
        assert (two / "dialogues" / f"{kind}.00000.jsonl").exists()
        a, b = _rows(one / "dialogues" / f"{kind}.jsonl"), _rows(two / "dialogues" / f"{kind}.jsonl")
        assert [r["id"] for r in a] == [r["id"] for r in b] and a
        assert [r["turns"] for r in a] == [r["turns"] for r in b]
    m1 = json.loads((one / "manifest.json").read_text(encoding="utf-8"))["stages"]
    m2 = json.loads((two / "manifest.json").read_text(encoding="utf-8"))["stages"]
    for name in ("dialogues.hhh", "dialogues.plugin", "filter", "final"):
        for key in ("count", "prompts", "made", "in"):
            assert m1[name].get(key) == m2[name].get(key), (name, key)
    assert (
        json.loads((one / "funnel.json").read_text())["steps"][:4]
        == json.loads((two / "funnel.json").read_text())["steps"][:4]
    )
