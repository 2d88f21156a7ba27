"""The check stage on Ray: scoring actors ask for a GPU (placed on the node that has one), load
the model once each, and the scored, kept and rejected rows, the report and the manifest info are
the local executor's, byte for byte."""

from __future__ import annotations

import json
from types import SimpleNamespace

import ray

from datagen.check.stage import CheckStage
from datagen.formats.moss import from_sft
from datagen.io import write_jsonl_atomic
from datagen.run.config import CheckSection
from datagen.run.executors.local import LocalExecutor
from datagen.run.executors.ray import RayExecutor
from datagen.run.executors.ray_check import ActorScorer
from datagen.stage import StageContext, StageResult, StageStats
from tests.moss.conftest import sft_record

N = 40


def rows_file(path):
    convs = []
    for i in range(N):
        conv = from_sft(
            sft_record(
                f"c{i}",
                [
                    (f"Question {i}?" + " Why?" * (i % 7), f"Answer {i}."),
                    ("And then?", "Done." * (1 + i % 3)),
                ],
            )
        )
        conv.id = f"c{i}"
        convs.append(conv)
    write_jsonl_atomic(path, convs)
    return path


def run_check_stage(executor, run_dir, inp, model, scorer=None):
    cfg = SimpleNamespace(
        check=CheckSection(enabled=True, model=str(model), batch_size=2, max_length=512, percentile=75.0)
    )
    stage = CheckStage(cfg, scorer=scorer)
    ctx = StageContext(
        run_dir=run_dir,
        config=cfg,
        stats=StageStats("check"),
        upstream={"filter": StageResult("filter", "", {}, {"main": inp}, [])},
    )
    return executor.run(stage, ctx)


def gpu_node() -> str:
    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    return node


def assert_same_outputs(tmp_path, local, on_ray):
    """The "ray" run's files, manifest info and report are the "local" run's."""
    for name in ("scored.jsonl", "scored.jsonl.settings.json", "kept.jsonl", "rejected.jsonl"):
        a = (tmp_path / "local" / "checked" / name).read_bytes()
        b = (tmp_path / "ray" / "checked" / name).read_bytes()
        assert a == b, name
    assert len((tmp_path / "ray" / "checked" / "rejected.jsonl").read_text().splitlines()) == N // 4

    def comparable(info):  # the paths name each run's own folder
        return {k: v for k, v in info.items() if not k.endswith("_path")}

    assert comparable(local) == comparable(on_ray)
    reports = [json.loads((tmp_path / d / "checked" / "report.json").read_text()) for d in ("local", "ray")]
    assert comparable(reports[0]) == comparable(reports[1])
    assert list(reports[0]) == list(reports[1])


def test_check_scores_on_gpu_actors_as_the_local_executor_does(ray_cluster, tiny_moss, tmp_path):
    inp = rows_file(tmp_path / "kept.jsonl")
    local = run_check_stage(LocalExecutor(), tmp_path / "local", inp, tiny_moss)
    executor = RayExecutor(gpus_per_actor=0.5)  # two actors share the one GPU: windows interleave
    on_ray = run_check_stage(executor, tmp_path / "ray", inp, tiny_moss)

    assert executor.check_nodes == [gpu_node()] * 2
    assert_same_outputs(tmp_path, local, on_ray)
    assert on_ray["scored_now"] == N and on_ray["resumed"] == 0

    # a second run finds every row scored: no actor is started, nothing is scored again
    executor.check_nodes = ["sentinel"]
    again = run_check_stage(executor, tmp_path / "ray", inp, tiny_moss)
    assert executor.check_nodes == [] and again["scored_now"] == 0 and again["resumed"] == N
    assert json.loads((tmp_path / "ray" / "checked" / "report.json").read_text())["resumed"] == N


def test_the_stage_with_an_actor_scorer_writes_what_the_local_stage_writes(ray_cluster, tiny_moss, tmp_path):
    """The `scorer=` hook: the stage itself runs where it always does, only the forward passes
    happen on the actors, and nothing is put right afterwards."""
    inp = rows_file(tmp_path / "kept.jsonl")
    local = run_check_stage(LocalExecutor(), tmp_path / "local", inp, tiny_moss)
    scorer = ActorScorer(actors=2, gpus_per_actor=0.5)
    on_actors = run_check_stage(LocalExecutor(), tmp_path / "ray", inp, tiny_moss, scorer=scorer)

    assert scorer.nodes == [gpu_node()] * 2 and scorer.scored == N
    assert_same_outputs(tmp_path, local, on_actors)
    assert on_actors["scored_now"] == N and on_actors["resumed"] == 0

    again = ActorScorer(actors=2, gpus_per_actor=0.5)  # every row is scored: no actor is started
    info = run_check_stage(LocalExecutor(), tmp_path / "ray", inp, tiny_moss, scorer=again)
    assert again.nodes == [] and info["scored_now"] == 0 and info["resumed"] == N
