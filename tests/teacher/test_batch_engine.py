"""The batch engine against the fake Batch API (real HTTP): rounds, limits, failing and expiring
batches, shuffled output, a restart mid-poll, and lines settled exactly as online answers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from datagen.teacher.batch import BatchEngine
from datagen.teacher.engine import TeacherEngine, open_engine
from datagen.teacher.types import Request, Result
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.05, "settle_seconds": 0.01, "linger_seconds": 5.0}
PRICES = {"input": 0.15, "output": 0.60, "batch_input": 0.075, "batch_output": 0.30}


def batch_config(fake, **batch):
    return make_teacher_config_for(
        fake,
        mode="batch",
        concurrency=1000,
        max_attempts=3,
        batch={**FAST, **batch},
        prices={fake.model: PRICES},
    )


def ask(text: str, **kw) -> Request:
    return Request(messages=[{"role": "user", "content": text}], tag=text, **kw)


async def run_dialogues(engine, n: int, turns, *, tool_seconds: float = 0.0) -> list[list[Result]]:
    """n dialogues of `turns(i)` calls each; each call's text depends on the answer before it and
    a 'tool' runs between calls, as in a real plugin dialogue."""

    async def dialogue(i: int) -> list[Result]:
        out, last = [], ""
        for t in range(turns(i)):
            result = await engine.complete(ask(f"dialogue {i} call {t} after [{last}]"))
            out.append(result)
            last = result.text or result.error or ""
            await asyncio.sleep(tool_seconds)
        return out

    return await asyncio.gather(*(dialogue(i) for i in range(n)))


def go(fake, tmp_path, n=6, turns=lambda i: i % 3 + 1, journal="j.sqlite", **batch):
    async def main():
        async with BatchEngine(batch_config(fake, **batch), journal_path=tmp_path / journal) as engine:
            results = await run_dialogues(engine, n, turns, tool_seconds=0.02)
        return engine, results

    return asyncio.run(main())


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def fake():
    server = FakeBatchOpenAI(completion_delay=0.05).start()
    try:
        yield server
    finally:
        server.stop()


def test_one_round_per_call_of_the_longest_dialogue_and_answers_as_online(fake, tmp_path):
    engine, results = go(fake, tmp_path, n=6, turns=lambda i: i % 3 + 1)
    assert engine.rounds == 3 and engine.files == 3  # 1, 2 and 3 calls: 3 rounds, not one per dialogue
    assert [len(r) for r in results] == [1, 2, 3, 1, 2, 3]
    assert all(r.ok and not r.cached and r.attempts == 1 for d in results for r in d)
    assert results[2][2].text == f"echo: dialogue 2 call 2 after [{results[2][1].text}]"
    assert sum(fake.submitted.values()) == 12 and fake.duplicates() == [] and fake.requests == 0

    # the same calls online give the same texts under the same journal keys, at twice the price
    async def online():
        async with TeacherEngine(
            make_teacher_config_for(fake, prices={fake.model: PRICES}),
            journal_path=tmp_path / "online.sqlite",
        ) as eng:
            return await run_dialogues(eng, 6, lambda i: i % 3 + 1)

    online_results = asyncio.run(online())
    assert [[(r.key, r.text) for r in d] for d in online_results] == [
        [(r.key, r.text) for r in d] for d in results
    ]
    batch_cost = sum(r.cost for d in results for r in d)
    assert batch_cost == pytest.approx(sum(r.cost for d in online_results for r in d) / 2)
    assert rows(tmp_path / "j.sqlite", "SELECT DISTINCT mode, status FROM calls") == [("batch", "ok")]
    assert rows(tmp_path / "j.sqlite", "SELECT round, status, settled, lines FROM batches ORDER BY name") == [
        (1, "completed", 1, 6),
        (2, "completed", 1, 4),
        (3, "completed", 1, 2),
    ]

    # a rerun is answered by the journal: no file, no batch, no line
    uploads = fake.uploads
    engine2, again = go(fake, tmp_path, n=6, turns=lambda i: i % 3 + 1)
    assert all(r.cached for d in again for r in d) and fake.uploads == uploads and engine2.rounds == 0


def test_the_same_request_from_two_callers_is_one_line(fake, tmp_path):
    async def main():
        async with BatchEngine(batch_config(fake), journal_path=tmp_path / "j.sqlite") as engine:
            return await asyncio.gather(*(engine.complete(ask("same")) for _ in range(3)))

    results = asyncio.run(main())
    assert sum(fake.submitted.values()) == 1
    assert [r.cached for r in results] == [False, True, True] and {r.text for r in results} == {"echo: same"}


def test_a_round_is_split_by_the_line_and_byte_limits(fake, tmp_path):
    engine, results = go(fake, tmp_path, n=7, turns=lambda i: 1, max_lines=3)
    assert engine.rounds == 1 and engine.files == 3 and all(r.ok for d in results for r in d)
    assert sorted(len(b.lines) for b in fake.batches.values()) == [1, 3, 3]
    line_bytes = len(fake.files[next(iter(fake.batches.values())).input_file_id].data) // 3
    before = set(fake.files)
    engine, results = go(
        fake, tmp_path, n=5, turns=lambda i: 1, journal="bytes.sqlite", max_bytes=2 * line_bytes + 10
    )
    assert engine.files == 3 and all(r.ok for d in results for r in d)
    sizes = [len(f.data) for i, f in fake.files.items() if f.purpose == "batch" and i not in before]
    assert len(sizes) == 3 and max(sizes) <= 2 * line_bytes + 10


def test_lines_sharing_a_prefix_are_sent_together(fake, tmp_path):
    systems = ["You are terse.", "You are verbose.", "You are terse.", "You are verbose."]

    async def main():
        async with BatchEngine(batch_config(fake), journal_path=tmp_path / "j.sqlite") as engine:
            await asyncio.gather(
                *(
                    engine.complete(
                        Request(
                            messages=[{"role": "system", "content": s}, {"role": "user", "content": f"q{i}"}]
                        )
                    )
                    for i, s in enumerate(systems)
                )
            )

    asyncio.run(main())
    order = [line["body"]["messages"][0]["content"] for line in fake.batch_lines]
    assert order == sorted(systems)


def test_completion_delays_are_polled_with_backoff_and_delays_change_nothing(tmp_path):
    with FakeBatchOpenAI(validating_delay=0.05, completion_delay=0.3, finalizing_delay=0.05) as fake:
        engine, results = go(fake, tmp_path, n=4, turns=lambda i: 2)
        assert all(r.ok for d in results for r in d) and engine.rounds == 2
        polls = [b.polls for b in fake.batches.values()]
        assert all(p >= 2 for p in polls)  # polled while validating/in progress, then collected
        assert all(p < 40 for p in polls)  # backing off, not spinning
        assert rows(tmp_path / "j.sqlite", "SELECT DISTINCT status FROM batches") == [("completed",)]


def test_failing_lines_are_sent_again_under_new_custom_ids_and_refused_ones_fail_as_online(fake, tmp_path):
    fake.fail_lines("", status=500, times=2)  # the first two lines: a 500 in the error file
    fake.fail_lines("", status=None, times=1, code="server_error")  # the next: no response, an error
    engine, results = go(fake, tmp_path, n=5, turns=lambda i: 1)
    flat = [r for d in results for r in d]
    assert all(r.ok for r in flat)
    assert sorted(r.attempts for r in flat) == [1, 1, 2, 2, 2]
    assert fake.duplicates() == [] and sum(fake.submitted.values()) == 8
    assert engine.rounds == 2 and engine.stats.retries == 3
    assert rows(tmp_path / "j.sqlite", "SELECT sum(attempts) FROM calls") == [(8,)]
    assert rows(tmp_path / "j.sqlite", "SELECT outcome, count(*) FROM batch_lines GROUP BY 1 ORDER BY 1") == [
        ("ok", 5),
        ("server_error", 3),
    ]

    # a 400 is not retried: it fails with the online code and detail, in the failure ledger
    fake.fail_lines(
        lambda cid: True, status=400, times=1, code="invalid_request_error", message="bad parameter"
    )
    engine, results = go(fake, tmp_path, n=1, turns=lambda i: 1, journal="refused.sqlite")
    [[r]] = results
    assert (r.ok, r.error, r.attempts) == (False, "bad_request", 1) and "HTTP 400: bad parameter" in r.detail
    assert rows(tmp_path / "refused.sqlite", "SELECT status, error, mode FROM calls") == [
        ("failed", "bad_request", "batch")
    ]


def test_a_failure_that_never_clears_ends_in_the_ledger_after_max_attempts(fake, tmp_path):
    fake.fail_lines("", status=503)
    engine, results = go(fake, tmp_path, n=2, turns=lambda i: 1)
    assert [(r.ok, r.error, r.attempts) for d in results for r in d] == [(False, "server_error", 3)] * 2
    assert engine.rounds == 3 and sum(fake.submitted.values()) == 6 and fake.duplicates() == []
    assert (
        rows(tmp_path / "j.sqlite", "SELECT status, error, attempts FROM calls")
        == [("failed", "server_error", 3)] * 2
    )


def test_an_expiring_batch_keeps_its_answers_and_sends_the_rest_again(fake, tmp_path):
    fake.expire_next(keep=0.5)
    engine, results = go(fake, tmp_path, n=6, turns=lambda i: 1)
    flat = [r for d in results for r in d]
    assert all(r.ok for r in flat) and sorted(r.attempts for r in flat) == [1, 1, 1, 2, 2, 2]
    assert rows(tmp_path / "j.sqlite", "SELECT status, lines FROM batches ORDER BY name") == [
        ("expired", 6),
        ("completed", 3),
    ]
    assert rows(
        tmp_path / "j.sqlite", "SELECT count(*) FROM batch_lines WHERE outcome = 'batch_expired'"
    ) == [(3,)]
    assert fake.duplicates() == []


def test_a_batch_that_fails_validation_is_sent_again(fake, tmp_path):
    fake.fail_batches(times=1)  # token_limit_exceeded: passes once other batches are done
    engine, results = go(fake, tmp_path, n=3, turns=lambda i: 1)
    assert all(r.ok and r.attempts == 2 for d in results for r in d)
    assert rows(tmp_path / "j.sqlite", "SELECT status FROM batches ORDER BY name") == [
        ("failed",),
        ("completed",),
    ]


def test_shuffled_output_is_matched_by_custom_id(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.05, shuffle_output=True, split_errors=False) as fake:
        fake.fail_lines(lambda cid: True, status=500, times=2)
        engine, results = go(fake, tmp_path, n=8, turns=lambda i: 2)
        for i, d in enumerate(results):
            assert d[0].text == f"echo: dialogue {i} call 0 after []"
            assert d[1].text == f"echo: dialogue {i} call 1 after [{d[0].text}]"
        assert fake.duplicates() == []


def test_a_server_restart_mid_poll_is_ridden_out(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.5) as fake:

        async def main():
            async with BatchEngine(batch_config(fake), journal_path=tmp_path / "j.sqlite") as engine:
                task = asyncio.ensure_future(run_dialogues(engine, 4, lambda i: 2))
                while not fake.batches:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(fake.restart, unavailable=3, down=0.2)
                return await task

        results = asyncio.run(main())
        assert all(r.ok for d in results for r in d)
        assert fake.unavailable_served == 3 and fake.duplicates() == [] and sum(fake.submitted.values()) == 8


def test_a_wrong_key_stops_every_call_with_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_TEST_TEACHER_KEY", "sk-wrong")
    with FakeBatchOpenAI(api_key="sk-right") as fake:
        engine, results = go(fake, tmp_path, n=3, turns=lambda i: 2)
        assert [[(r.ok, r.error) for r in d] for d in results] == [[(False, "auth"), (False, "auth")]] * 3
        assert fake.uploads == 0 and "sk-wrong" not in str(results)
        assert rows(tmp_path / "j.sqlite", "SELECT status FROM batches") == [("not_submitted",)]


def test_a_cut_answer_settles_as_online(fake, tmp_path):
    async def main():
        async with BatchEngine(batch_config(fake), journal_path=tmp_path / "j.sqlite") as engine:
            return await asyncio.gather(
                engine.complete(ask("FAULT:length one", params={"max_tokens": 20})),
                engine.complete(ask("FAULT:length two", require_complete=False)),
                engine.complete(ask("FAULT:empty_text three")),
            )

    cut, kept, empty = asyncio.run(main())
    assert (cut.ok, cut.error) == (False, "length") and "cut at max_tokens (20)" in cut.detail
    assert kept.ok and kept.finish_reason == "length" and kept.text == "This answer was cut"
    assert (empty.ok, empty.error) == (False, "empty_text")


def test_open_engine_and_map_follow_the_mode(fake, tmp_path, caplog):
    config = batch_config(fake)

    async def main():
        async with open_engine(config, journal_path=tmp_path / "j.sqlite", desc="judge") as engine:
            assert isinstance(engine, BatchEngine)
            return [r async for r in engine.map([ask(f"pair {i}") for i in range(5)])], engine

    with caplog.at_level(logging.INFO, logger="datagen.teacher"):
        results, engine = asyncio.run(main())
    assert sorted(r.text for r in results) == [f"echo: pair {i}" for i in range(5)]
    assert engine.rounds == 1 and "cost at batch prices" in caplog.text


def test_a_model_the_provider_does_not_know_stops_its_calls_after_one_round(fake, tmp_path):
    fake.fail_lines(lambda cid: True, status=404, code="model_not_found", message="The model does not exist")
    engine, results = go(fake, tmp_path, n=3, turns=lambda i: 2)
    assert [[r.error for r in d] for d in results] == [["not_found", "not_found"]] * 3
    assert all("not sent" in d[1].detail for d in results)  # the second calls never went out
    assert engine.rounds == 1 and sum(fake.submitted.values()) == 3


def test_a_server_down_past_patience_fails_the_calls_for_now_and_a_rerun_collects_the_batch(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.3) as fake:

        async def first():
            async with BatchEngine(
                batch_config(fake, poll_failures=2), journal_path=tmp_path / "j.sqlite"
            ) as engine:
                task = asyncio.ensure_future(run_dialogues(engine, 3, lambda i: 1))
                while not fake.batches:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(fake.restart, down=None)  # stays down
                return await task

        results = asyncio.run(first())
        assert [[r.error for r in d] for d in results] == [["connection"]] * 3
        assert sum(fake.submitted.values()) == 3  # the lost batch's requests were not sent again
        assert rows(tmp_path / "j.sqlite", "SELECT count(*) FROM calls") == [(0,)]  # nothing settled
        assert rows(tmp_path / "j.sqlite", "SELECT settled FROM batches") == [(0,)]  # kept for the rerun
        fake.resume()
        engine, again = go(fake, tmp_path, n=3, turns=lambda i: 2)
        assert all(r.ok for d in again for r in d) and fake.duplicates() == []
        assert sum(fake.submitted.values()) == 6 and engine.files == 1  # round 1 collected, round 2 sent


def test_a_caller_waiting_on_something_else_closes_the_round_after_the_linger(fake, tmp_path):
    """A task that called the engine, then waits on a subtask that calls it: the engine cannot see
    that it waits on the teacher, and closes the round once no call came for linger_seconds."""

    async def main():
        async with BatchEngine(
            batch_config(fake, linger_seconds=0.2), journal_path=tmp_path / "j.sqlite"
        ) as engine:

            async def outer():
                first = await engine.complete(ask("first"))
                second = await asyncio.ensure_future(engine.complete(ask(f"second after {first.text}")))
                return first, second

            return await outer(), engine

    (first, second), engine = asyncio.run(main())
    assert second.text == "echo: second after echo: first" and engine.rounds == 2


def test_without_a_journal_batch_mode_keeps_its_ids_for_the_session(fake, tmp_path):
    from datagen.teacher.engine import run_requests

    results = run_requests(batch_config(fake), [ask(f"judge {i}") for i in range(4)])
    assert [r.text for r in results] == [f"echo: judge {i}" for i in range(4)]
    assert len(fake.batches) == 1 and fake.requests == 0
