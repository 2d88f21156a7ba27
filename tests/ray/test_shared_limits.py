"""Teacher limits shared by workers on two Ray nodes: the fake teacher never sees more than the
limit in any window, or more requests in flight than the concurrency, from both together; each
worker journals into its own shard, and a rerun on one machine reads the merged journal."""

from __future__ import annotations

import asyncio

import ray

from datagen.teacher.engine import TeacherEngine, run_requests
from datagen.teacher.journal import Journal
from datagen.teacher.journal_merge import ShardJournal, merge_journals, shard_path
from datagen.teacher.shared_limits import SharedLimits, SharedLimitsEngine
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.teacher.test_rate_limits import max_in_any_window


def requests(worker: str, n: int) -> list[Request]:
    return [Request(messages=[{"role": "user", "content": f"{worker} question {i}"}]) for i in range(n)]


@ray.remote(num_cpus=0)
class Barrier:
    """Lets the workers start together: a worker process can take seconds to start on a busy
    machine, and workers that never overlap test no shared limit."""

    def __init__(self, n: int):
        self.n, self.arrived, self.all_here = n, 0, asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.n:
            self.all_here.set()
        await self.all_here.wait()


@ray.remote(num_cpus=1)
def worker(config, limits, name: str, n: int, journal_paths=None, barrier=None) -> tuple[int, str]:
    """n calls through one engine on whichever node Ray picks; (calls ok, node id)."""
    if barrier is not None:
        ray.get(barrier.wait.remote())

    async def main() -> int:
        if limits is None:
            engine = TeacherEngine(config)
        else:
            journal = ShardJournal(*journal_paths) if journal_paths else None
            engine = SharedLimitsEngine(config, limits=limits, worker=name, journal=journal)
        async with engine:
            return sum([r.ok async for r in engine.map(requests(name, n))])

    return asyncio.run(main()), ray.get_runtime_context().get_node_id()


def two_workers(config, limits, n: int, journal_paths=None) -> list[int]:
    barrier = Barrier.remote(2)
    refs = [
        worker.options(scheduling_strategy="SPREAD").remote(
            config, limits, f"w{i}", n, journal_paths[i] if journal_paths else None, barrier
        )
        for i in range(2)
    ]
    results = ray.get(refs)
    assert len({node for _, node in results}) == 2, "the two workers ran on two nodes"
    return [ok for ok, _ in results]


def test_two_workers_never_exceed_a_shared_rpm_limit(ray_cluster, fake_openai):
    config = make_teacher_config_for(fake_openai, concurrency=8, rpm=10, rate_window=0.5)
    # without sharing, each worker keeps its own window: together they go over
    assert two_workers(config, None, 20) == [20, 20]
    assert max_in_any_window(fake_openai.arrivals, 0.5) > 10

    fake_openai.reset()
    limits = SharedLimits.create(config)
    assert two_workers(config, limits, 20) == [20, 20]
    assert fake_openai.requests == 40
    assert max_in_any_window(fake_openai.arrivals, 0.5) <= 10


def test_two_workers_share_concurrency_and_token_limits(ray_cluster, fake_openai):
    fake_openai.set_latency(0.05)
    fake_openai.set_responder(lambda req: {"content": "x", "prompt_tokens": 10, "completion_tokens": 30})
    config = make_teacher_config_for(
        fake_openai, concurrency=3, tpm=400, rate_window=0.5, params={"max_tokens": 30}
    )
    limits = SharedLimits.create(config)
    assert two_workers(config, limits, 15) == [15, 15]
    assert fake_openai.max_in_flight <= 3
    assert max_in_any_window(fake_openai.arrivals, 0.5) <= 400 // 40
    snap = limits.snapshot()
    assert snap["active"] == 0 and snap["peak_active"] == 3


def test_a_dead_workers_slots_are_freed(ray_cluster, fake_openai):
    config = make_teacher_config_for(fake_openai, concurrency=2)
    limits = SharedLimits.create(config)

    async def take() -> None:
        await limits.concurrency("doomed").acquire()
        await limits.concurrency("doomed").acquire()

    asyncio.run(take())  # two slots taken and never released: the worker "died"
    assert limits.snapshot()["active"] == 2
    assert limits.forget("doomed") == 2
    assert two_workers(config, limits, 3) == [3, 3]


def test_journal_shards_made_on_the_cluster_serve_a_rerun_on_one_machine(ray_cluster, fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai, concurrency=4)
    base = tmp_path / "journal.sqlite"
    paths = [(shard_path(tmp_path, rank), base) for rank in range(2)]
    limits = SharedLimits.create(config)
    assert two_workers(config, limits, 6, paths) == [6, 6]
    assert fake_openai.requests == 12
    assert not base.exists()  # workers wrote only their own shards

    stats = merge_journals(base, [p for p, _ in paths])
    assert (stats.shards, stats.new) == (2, 12)
    # one machine, the plain engine on the merged journal: nothing is asked again
    results = run_requests(config, requests("w0", 6) + requests("w1", 6), journal_path=base)
    assert all(r.ok and r.cached for r in results)
    assert fake_openai.requests == 12
    # and a second cluster run reads it too (its shards start empty)
    for p, _ in paths:
        p.unlink()
    assert two_workers(config, limits, 6, paths) == [6, 6]
    assert fake_openai.requests == 12
    with Journal(base) as j:
        assert j.count("ok") == 12
