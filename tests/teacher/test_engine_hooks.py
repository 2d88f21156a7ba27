"""The engine's hooks: a journal and limiters handed in (`journal=`, `limiters=`) are the ones its
calls go through, as a cluster worker's engine needs (shared_limits.py) and a plain one may use."""

from __future__ import annotations

import asyncio

import pytest

from datagen.teacher.engine import TeacherEngine, run_requests
from datagen.teacher.journal import Journal
from datagen.teacher.journal_merge import ShardJournal
from datagen.teacher.limiters import Limiters
from datagen.teacher.limits import AdaptiveConcurrency, WindowLimiter
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.teacher.test_rate_limits import max_in_any_window


def ask(text: str) -> Request:
    return Request(messages=[{"role": "user", "content": text}])


async def run_all(engine: TeacherEngine, requests: list[Request]) -> list:
    async with engine:
        return [r async for r in engine.map(requests)]


def test_a_given_journal_reads_and_writes_the_calls(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai)
    base, shard = tmp_path / "journal.sqlite", tmp_path / "shard.sqlite"
    run_requests(config, [ask(f"q{i}") for i in range(3)], journal_path=base)
    assert fake_openai.requests == 3

    journal = ShardJournal(shard, base)
    engine = TeacherEngine(config, journal=journal)
    assert engine.journal_path == shard
    results = asyncio.run(run_all(engine, [ask(f"q{i}") for i in range(5)]))
    assert all(r.ok for r in results)
    assert sorted(r.cached for r in results) == [False] * 2 + [True] * 3  # the base journal answered 3
    assert fake_openai.requests == 5
    with Journal(shard) as j, Journal(base) as b:
        assert (j.count("ok"), b.count("ok")) == (2, 3)  # new calls went to the given journal only


def test_a_given_concurrency_bounds_two_engines_together(fake_openai):
    fake_openai.set_latency(0.05)
    config = make_teacher_config_for(fake_openai, concurrency=8)
    shared = Limiters(AdaptiveConcurrency(2))

    async def main():
        engines = [TeacherEngine(config, limiters=shared) for _ in range(2)]
        return await asyncio.gather(
            *(run_all(e, [ask(f"e{n} q{i}") for i in range(10)]) for n, e in enumerate(engines))
        )

    results = asyncio.run(main())
    assert [sum(r.ok for r in rs) for rs in results] == [10, 10]
    assert fake_openai.requests == 20
    assert fake_openai.max_in_flight <= 2  # each engine alone would allow 8
    assert shared.concurrency.active == 0  # every slot given back


def test_a_given_rate_window_limits_an_engine_whose_config_has_none(fake_openai):
    config = make_teacher_config_for(fake_openai, concurrency=8)  # no rpm in the config
    window = WindowLimiter(4, 0.5)
    engine = TeacherEngine(config, limiters=Limiters(AdaptiveConcurrency(8), rpm=window))
    results = asyncio.run(run_all(engine, [ask(f"r{i}") for i in range(12)]))
    assert all(r.ok for r in results) and fake_openai.requests == 12
    assert max_in_any_window(fake_openai.arrivals, 0.5) <= 4


def test_journal_and_journal_path_together_are_refused(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai)
    with pytest.raises(TypeError, match="not both"):
        TeacherEngine(config, journal=Journal(tmp_path / "a.sqlite"), journal_path=tmp_path / "b.sqlite")
