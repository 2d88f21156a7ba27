"""`datagen run --executor ray`: the filter stage's exact and near dedup are decided on the cluster, its
other steps' per-row work runs on actors, and the stage keeps exactly what the local run keeps (same
filtered files, `duplicate_of`, reasons and funnel); the filter stage's fingerprint does not depend
on the executor, so a finished stage is skipped either way."""

from __future__ import annotations

import json
import shutil

import yaml

from datagen.run.config import load_config
from datagen.run.executors.ray import RayExecutor
from datagen.run.pipeline import stages_for
from datagen.run.runner import Runner
from tests.generate.scripted_teacher import scripted_teacher
from tests.ray.test_filter_dedup import outputs

SEEDS = [
    "Write a short story about a lighthouse keeper.",
    "Write a limerick about a cat who loves jazz.",
    "Write a short story about a lighthouse keeper!",  # the first one, once punctuation is folded
    "Write a short story about a lighthouse keeper and his old dog.",
    "Explain how tides work to a ten year old.",
    "Write a short story about a lighthouse keeper and his old cat.",  # near the one two above
    "Suggest three names for a bakery that sells only bread.",
    "EXPLAIN how tides work to a ten year old!!",  # the fifth, once case and punctuation are folded
    "Explain how tides work to a ten-year-old child.",  # near the fifth
]


def config_file(tmp_path, fake):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "text": t, "language": "en", "category": "writing", "plugins": []})
            + "\n"
            for i, t in enumerate(SEEDS)
        ),
        encoding="utf-8",
    )
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "dedup-on-ray",
                "seed": 3,
                "teacher": {
                    "base_url": fake.base_url,
                    "model": fake.model,
                    "concurrency": 1,
                    "api_key_env": "DATAGEN_TEST_TEACHER_KEY",
                    "timeout": 30,
                    "max_attempts": 2,
                    "min_backoff": 0.01,
                    "max_backoff": 0.05,
                    "progress": False,
                },
                "seeds": {"path": str(seeds)},
                "expand": {"targets": {"default": 0}},
                "dialogues": {
                    "hhh": {"options": {"turns": {"default": [1]}, "concurrency": 1}},
                    "plugin": {"enabled": False},
                },
                # the local run filters in-process; on Ray, the steps' per-row work goes to actors
                "filters": {"workers": 1, "parallel_min_rows": 0, "chunk_size": 4},
                "dataset": {"enabled": False},
            }
        ),
        encoding="utf-8",
    )
    return path


def filtered(run_dir) -> dict:
    return outputs(run_dir / "filtered")


def run(path, run_dir, executor=None) -> None:
    cfg = load_config(path)
    Runner(cfg, run_dir, executor=executor).run(stages_for(cfg, run_dir))


def test_a_run_on_ray_dedups_on_the_cluster_as_the_local_run_does(ray_cluster, fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    path = config_file(tmp_path, fake_openai)
    local = tmp_path / "local"
    run(path, local)
    asked = fake_openai.requests

    # the same dialogues filtered again on Ray: the run's copy without its filter outputs
    on_ray = tmp_path / "ray"
    shutil.copytree(local, on_ray, ignore=shutil.ignore_patterns("filtered"), copy_function=shutil.copy2)
    capsys.readouterr()
    executor = RayExecutor(ray_cluster.address)
    run(path, on_ray, executor)
    err = capsys.readouterr().err
    assert "filter: running" in err and "dialogues.hhh: done earlier, skipped" in err
    assert fake_openai.requests == asked

    assert filtered(on_ray) == filtered(local)
    steps = {s["step"]: s for s in filtered(local)["funnel"]["steps"]}
    assert steps["exact_dedup"]["dropped"] >= 2 and steps["near_dedup"]["dropped"] >= 1
    rejected = [json.loads(line) for line in filtered(local)["rejected"].decode().splitlines()]
    assert {r["rejected"]["reason"] for r in rejected if "duplicate_of" in r["rejected"]} >= {
        "near_duplicate"
    }
    # both steps were decided on the cluster, one line each
    assert [(d[0], d[1], d[2]) for d in executor.dedup_decided] == [
        (name, steps[name]["in"], steps[name]["dropped"]) for name in ("exact_dedup", "near_dedup")
    ]
    for name in ("exact_dedup", "near_dedup"):
        line = f"filter: {name} ran on Ray: {steps[name]['in']} rows in 1 shard(s), {steps[name]['dropped']} duplicates"
        assert line in err
    # and the other steps' per-row work ran on actors, chunk by chunk
    rows = filtered(local)["funnel"]["input"]
    assert executor.chunks_mapped == [("prepared", rows, -(-rows // 4), 2)]
    assert f"filter: {rows} rows prepared on Ray in {-(-rows // 4)} chunks by 2 actor(s)" in err
    ray_manifest = json.loads((on_ray / "manifest.json").read_text())["stages"]["filter"]
    local_manifest = json.loads((local / "manifest.json").read_text())["stages"]["filter"]
    assert ray_manifest["fingerprint"] == local_manifest["fingerprint"]

    # a filter stage finished on one executor is done for the other
    run(path, on_ray)
    assert "filter: done earlier, skipped" in capsys.readouterr().err
    again = RayExecutor(ray_cluster.address)
    run(path, local, again)
    assert "filter: done earlier, skipped" in capsys.readouterr().err
    assert again.dedup_decided == [] and again.chunks_mapped == []
    assert fake_openai.requests == asked
