"""The filter run with the Ray dedup backend (`RayDedup`, what `datagen run --executor ray` hands the
filter stage) writes exactly what the local filter run writes: the same kept.jsonl and
rejected.jsonl bytes (`duplicate_of` and reasons included) and the same funnel, with the dedup
steps decided on the cluster; steps after another stateful step stay in the driver."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from datagen.filters.base import BaseFilter
from datagen.filters.config import FilterConfig
from datagen.filters.dedup import ExactDedupFilter, NearDedupFilter
from datagen.filters.run import global_steps, run_filters
from datagen.text.neardup_ray import RayDedup
from tests.filters.conftest import conv
from tests.ray.test_dedup import corpus

ANSWERS = ["Sure, here it is.", "Of course.", "Here you go: a short answer.", "Certainly, done."]


def rows(n: int = 260, seed: int = 7) -> list:
    """Conversations whose prompts hold near-duplicate chains, exact copies (some differing only in
    punctuation and case) and a few rows the `length` step drops before the dedup steps see them."""
    rng = random.Random(seed)
    out = []
    for i, text in enumerate(corpus(seed=seed, n=n)):
        r = rng.random()
        if r < 0.1 and out:
            prev = out[rng.randrange(len(out))]
            text = prev.turns[0].human.upper() + " !"  # an exact copy once folded
            answer = prev.turns[0].assistant if rng.random() < 0.5 else rng.choice(ANSWERS)
        else:
            answer = rng.choice(ANSWERS)
        if r > 0.95:
            answer = ""  # an empty answer: dropped by an earlier step, never reaches the dedup
        out.append(conv((text or "hi", answer), id=f"r{i:04d}"))
    return out


def config(**kw) -> FilterConfig:
    steps = kw.pop(
        "steps",
        [
            {"name": "length"},
            {"name": "exact_dedup"},
            {"name": "near_dedup", "policy": "tag"},
            {"name": "near_dialogue", "type": "near_dedup", "unit": "dialogue", "threshold": 0.5},
        ],
    )
    return FilterConfig.from_dict({"steps": steps, "workers": 1, "chunk_size": 37, **kw})


def outputs(out: Path) -> dict:
    funnel = json.loads((out / "funnel.json").read_text(encoding="utf-8"))
    for s in funnel["steps"]:
        s.pop("seconds", None)
    return {
        "kept": (out / "kept.jsonl").read_bytes(),
        "rejected": (out / "rejected.jsonl").read_bytes(),
        "funnel": funnel,
    }


@pytest.mark.parametrize(("shard_rows", "workers"), [(None, 1), (29, 1), (41, 2)])
def test_ray_dedup_backend_writes_what_the_local_run_writes(ray_cluster, tmp_path, shard_rows, workers):
    data = rows()
    cfg = config(parallel_min_rows=0) if workers > 1 else config()
    local = outputs_of(run_filters(iter(data), cfg, tmp_path / "local", workers=workers), tmp_path / "local")
    backend = RayDedup(log=lambda _msg: None, shard_rows=shard_rows, parts=2)
    on_ray = outputs_of(
        run_filters(iter(rows()), cfg, tmp_path / "ray", workers=workers, dedup=backend), tmp_path / "ray"
    )
    assert on_ray == local

    # every dedup step was decided on the cluster, each over the rows the earlier ones kept
    steps = {s["step"]: s for s in local["funnel"]["steps"]}
    assert [(d[0], d[1], d[2]) for d in backend.decided] == [
        (name, steps[name]["in"], steps[name]["dropped"] + steps[name]["tagged"])
        for name in ("exact_dedup", "near_dedup", "near_dialogue")
    ]
    if shard_rows:
        assert all(d[3] > 1 for d in backend.decided)
    # the input is worth the test: each step found duplicates, and rows dropped earlier never got there
    assert steps["length"]["dropped"] > 0
    assert set(steps["exact_dedup"]["reasons"]) == {"duplicate_prompt", "duplicate_dialogue"}
    assert steps["near_dedup"]["tagged"] > 10 and steps["near_dialogue"]["dropped"] > 0
    rejected = [json.loads(line) for line in local["rejected"].decode().splitlines()]
    assert sum("duplicate_of" in r["rejected"] for r in rejected) > 20
    assert not list(tmp_path.glob("*/.dedup-*"))  # the spill is gone


def outputs_of(report, out: Path) -> dict:
    assert report.input > 0
    return outputs(out)


class Stateful(BaseFilter):
    """A stateful step that is no dedup (as a judge is): only the driver decides it, in order."""

    name = "stateful_probe"
    stateful = True


def test_dedup_steps_after_another_stateful_step_stay_in_the_driver(capsys):
    steps = [ExactDedupFilter(), Stateful(), NearDedupFilter()]
    assert global_steps(steps) == frozenset({0})
    assert "near_dedup decided here, not by the cluster: after stateful_probe" in capsys.readouterr().err
    assert global_steps([Stateful()]) == frozenset()
    assert global_steps([NearDedupFilter(), ExactDedupFilter()]) == frozenset({0, 1})
