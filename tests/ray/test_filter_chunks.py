"""The filter run with the Ray chunk mapper (`RayChunkMapper`, what `datagen run --executor ray` hands
the filter stage): the format step, the stateless steps and the stateful steps' `prepare_batch` run
on actors, and the run writes exactly what the local run writes (kept.jsonl and rejected.jsonl bytes,
funnel, per-step counters); an error raised on an actor stops the run as the local one does."""

from __future__ import annotations

import time

import pytest
import ray

from datagen.errors import ConfigError
from datagen.filters.config import FilterConfig
from datagen.filters.run import run_filters
from datagen.formats.reader import read_conversations
from datagen.run.executors.ray_chunks import RayChunkMapper
from datagen.text.neardup_ray import RayDedup
from tests.filters.test_run import rows as funnel_rows
from tests.formats.moss_defects import DEFECTS, write_defects
from tests.ray.test_filter_dedup import outputs
from tests.ray.test_filter_dedup import rows as dedup_rows

CHUNK = 23


@pytest.fixture(scope="module")
def data(tmp_path_factory, moss_samples) -> list:
    """MOSS files with every kind of format defect and the real samples, the filter tests' rows (French,
    harmful, a phone number to redact, boilerplate to tag, copies) and rows full of near and exact
    duplicates: every default step has something to do."""
    folder = tmp_path_factory.mktemp("defects")
    write_defects(folder, moss_samples)
    moss = list(read_conversations(folder)) + [c for p in moss_samples for c in read_conversations(p)]
    return moss + funnel_rows() + dedup_rows(n=200)


def config(**kw) -> FilterConfig:
    steps = {"safety": {"policy": "redact"}, "near_dedup": {"policy": "tag"}}
    return FilterConfig.from_dict({"steps": steps, "chunk_size": CHUNK, "parallel_min_rows": 0, **kw})


def counters(report) -> list[dict]:
    return [{**s.funnel_row(), "seconds": None} for s in report.steps]


@pytest.mark.parametrize("dedup", [False, True], ids=["local-dedup", "ray-dedup"])
def test_steps_on_ray_actors_write_what_the_local_run_writes(ray_cluster, tmp_path, data, dedup, capsys):
    local = run_filters(iter(data), config(workers=1), tmp_path / "local")
    logged: list[str] = []
    mapper = RayChunkMapper(log=logged.append)
    backend = RayDedup(log=lambda _msg: None, parts=2) if dedup else None
    on_ray = run_filters(iter(data), config(workers=1), tmp_path / "ray", dedup=backend, mapper=mapper)
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert counters(on_ray) == counters(local)
    assert (on_ray.input, on_ray.kept) == (local.input, local.kept) == (len(data), on_ray.kept)

    # the work ran on the actors: every row, chunk by chunk, on both of the cluster's CPUs
    chunks = -(-len(data) // CHUNK)
    assert mapper.mapped == [("prepared", len(data), chunks, 2)]
    assert logged[0].startswith(f"{len(data)} rows prepared on Ray in {chunks} chunks by 2 actor(s)")
    if dedup:
        assert [d[0] for d in backend.decided] == ["exact_dedup", "near_dedup"]

    # the input is worth the test: each kind of step changed something
    steps = {s.name: s for s in local.steps}
    assert sum(steps["format"].reasons.values()) == sum(d.step == "format" for d in DEFECTS.values())
    assert steps["language"].reasons["language_fr"] == 1
    assert steps["safety"].redacted >= 1 and steps["safety"].reasons["harmful_compliance"] == 1
    assert steps["quality"].dropped > 0 and steps["boilerplate"].tagged > 0
    assert steps["exact_dedup"].dropped > 10 and steps["near_dedup"].tagged > 0
    assert "[PHONE]" in (tmp_path / "ray" / "kept.jsonl").read_text(encoding="utf-8")


def test_a_small_input_stays_in_the_driver(ray_cluster, tmp_path, data):
    mapper = RayChunkMapper(log=lambda _msg: None)
    report = run_filters(iter(data[:30]), config(parallel_min_rows=31), tmp_path, mapper=mapper)
    assert report.input == 30 and mapper.mapped == []


def test_an_error_on_an_actor_is_the_error_the_local_run_gives(ray_cluster, tmp_path, data):
    """A lexicon the driver read but the actors cannot (a node without the file): the run stops with
    the ConfigError naming the file, not Ray's wrapping of it."""
    lexicon = tmp_path / "extra.tsv"
    lexicon.write_text("forbidden-word\tviolence\t3\n", encoding="utf-8")
    cfg = FilterConfig.from_dict(
        {
            "steps": [{"name": "safety", "lexicons": [str(lexicon)]}],
            "chunk_size": CHUNK,
            "parallel_min_rows": 0,
        }
    )

    def rows():
        lexicon.unlink()  # after run_filters built its steps, before any actor builds its own
        yield from data

    with pytest.raises(ConfigError) as on_ray:
        run_filters(rows(), cfg, tmp_path / "out", mapper=RayChunkMapper(log=lambda _msg: None))
    with pytest.raises(ConfigError) as here:
        cfg.build_steps()
    assert type(on_ray.value) is ConfigError
    assert str(on_ray.value) == str(here.value) and str(lexicon) in str(here.value)
    assert not (tmp_path / "out" / "kept.jsonl").exists()


class Stopped(Exception):
    pass


def test_a_run_stopped_early_frees_the_actors_cpus(ray_cluster, tmp_path, data):
    """An error in the driver mid-stream (a judge's, a full disk, here the progress callback) leaves no
    actor holding a CPU, even while the error, its traceback and the run's frames are still held."""
    mapper = RayChunkMapper(log=lambda _msg: None)

    def progress(done: int) -> None:
        if done >= 2 * CHUNK:  # answers came back (both actors hold their CPU), more are in flight
            raise Stopped

    with pytest.raises(Stopped) as stopped:
        run_filters(iter(data), config(), tmp_path / "out", mapper=mapper, progress=progress)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2
    assert mapper.mapped == [] and stopped.value is not None  # it never finished
