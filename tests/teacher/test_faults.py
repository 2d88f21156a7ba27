"""Every fault the fake server can serve: the outcome, the failure ledger and what was paid for."""

from __future__ import annotations

import asyncio

import pytest

from datagen.teacher.engine import TeacherEngine, run_requests
from datagen.teacher.journal import Journal
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.fakes.openai_server import last_user_text


def ask(text: str, **kw) -> Request:
    return Request(messages=[{"role": "user", "content": text}], **kw)


def run_one(config, request, journal_path):
    return run_requests(config, [request], journal_path=journal_path)[0]


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize("kind", ["429", "429_bare", "500", "503", "drop", "malformed", "empty", "slow"])
def test_transient_fault_is_retried_and_succeeds(fake_openai, tmp_path, kind):
    fake_openai.inject(kind, times=1, delay=2.0)
    config = make_teacher_config_for(fake_openai, timeout=0.5)
    result = run_one(config, ask("hello"), tmp_path / "j.sqlite")
    assert result.ok, result
    assert result.text == "echo: hello"
    assert result.attempts == 2
    assert fake_openai.requests == 2
    assert fake_openai.faults_served[kind] == 1
    with Journal(tmp_path / "j.sqlite") as j:
        entry = j.get(result.key)
    assert entry.status == "ok" and entry.attempts == 2 and entry.response == "echo: hello"


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("429_bare", "rate_limited"),
        ("500", "server_error"),
        ("503", "server_error"),
        ("drop", "connection"),
        ("malformed", "invalid_response"),
        ("empty", "empty"),
        ("slow", "timeout"),
    ],
)
def test_persistent_transient_fault_goes_to_ledger_after_max_attempts(fake_openai, tmp_path, kind, code):
    fake_openai.inject(kind, times=None, delay=2.0)
    config = make_teacher_config_for(fake_openai, timeout=0.3, max_attempts=3)
    result = run_one(config, ask("doomed"), tmp_path / "j.sqlite")
    assert not result.ok
    assert result.text is None  # never silently empty text
    assert result.error == code
    assert result.attempts == 3
    assert fake_openai.requests == 3
    with Journal(tmp_path / "j.sqlite") as j:
        entry = j.get(result.key)
        groups = j.failures()
    assert entry.status == "failed" and entry.error == code and entry.attempts == 3
    assert entry.detail
    assert [(g.error, g.count) for g in groups] == [(code, 1)]


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("400", "bad_request"),
        ("422", "bad_request"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("empty_text", "empty_text"),
    ],
)
def test_non_retryable_fault_fails_after_one_request(fake_openai, tmp_path, kind, code):
    fake_openai.inject(kind, times=None)
    config = make_teacher_config_for(fake_openai)
    result = run_one(config, ask("no retry"), tmp_path / "j.sqlite")
    assert (result.ok, result.error, result.attempts) == (False, code, 1)
    assert result.text is None
    assert fake_openai.requests == 1
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.get(result.key).error == code


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("401", "auth"),
        ("403", "auth"),
        ("404", "not_found"),
        ("quota", "insufficient_quota"),
    ],
)
def test_account_wide_fault_stops_sending(fake_openai, tmp_path, kind, code):
    """One 401 (or quota/404) must not become a million paid-for 401s: the rest are not sent."""
    fake_openai.inject(kind, times=None)
    config = make_teacher_config_for(fake_openai, concurrency=1)
    results = run_requests(config, [ask(f"q{i}") for i in range(20)], journal_path=tmp_path / "j.sqlite")
    assert fake_openai.requests == 1
    assert all(not r.ok and r.error == code for r in results)
    assert sorted(r.attempts for r in results) == [0] * 19 + [1]
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.count("failed") == 20


def test_length_is_ok_when_the_caller_accepts_partial_answers(fake_openai, tmp_path):
    fake_openai.inject("length", times=None)
    config = make_teacher_config_for(fake_openai)
    result = run_one(config, ask("long", require_complete=False), tmp_path / "j.sqlite")
    assert result.ok and result.finish_reason == "length" and result.text == "This answer was cut"
    assert fake_openai.requests == 1


def test_length_failure_keeps_paid_tokens_and_partial_text_in_journal(fake_openai, tmp_path):
    fake_openai.inject("length", times=None)
    config = make_teacher_config_for(fake_openai, prices={"fake-teacher": {"input": 1.0, "output": 2.0}})
    result = run_one(config, ask("cut me off"), tmp_path / "j.sqlite")
    assert result.error == "length" and result.completion_tokens == 256  # cut at max_tokens
    assert result.detail == "cut at max_tokens (256) after 256 completion tokens"
    with Journal(tmp_path / "j.sqlite") as j:
        entry = j.get(result.key)
    assert entry.response == "This answer was cut"
    assert entry.paid_completion_tokens == 256
    assert entry.paid_cost == pytest.approx((3 * 1.0 + 256 * 2.0) / 1e6)


def test_a_cut_short_of_max_tokens_names_the_context_window_not_max_tokens(fake_openai, tmp_path):
    fake_openai.inject("context", times=None)
    config = make_teacher_config_for(fake_openai, params={"max_tokens": 1024})
    result = run_one(config, ask("a long history"), tmp_path / "j.sqlite")
    assert result.error == "length" and result.completion_tokens == 781
    assert "max_tokens after" not in result.detail
    assert result.detail.startswith(
        "cut after 781 completion tokens, short of max_tokens (1024): the prompt "
        "(3315 tokens) and the answer filled the model's context window"
    )


# --------------------------------------------------------------------------- 429 handling


def test_retry_after_header_is_honoured(fake_openai, tmp_path):
    fake_openai.inject("429", times=1, retry_after=0.4)
    config = make_teacher_config_for(fake_openai, min_backoff=0.0, max_backoff=0.01)
    result = run_one(config, ask("wait for me"), tmp_path / "j.sqlite")
    assert result.ok and fake_openai.requests == 2
    gap = fake_openai.arrivals[1] - fake_openai.arrivals[0]
    assert gap >= 0.4  # the back-off alone would have retried after <= 10 ms


def test_retry_after_ms_header_is_honoured(fake_openai, tmp_path):
    fake_openai.inject("429", times=1, retry_after=None, retry_after_ms=400)
    config = make_teacher_config_for(fake_openai, min_backoff=0.0, max_backoff=0.01)
    result = run_one(config, ask("wait in ms"), tmp_path / "j.sqlite")
    assert result.ok and fake_openai.requests == 2
    assert fake_openai.arrivals[1] - fake_openai.arrivals[0] >= 0.4


def test_429_storm_lowers_concurrency_and_everything_finishes(fake_openai, tmp_path):
    fake_openai.set_latency(0.02)
    fake_openai.inject("429_bare", times=30)
    config = make_teacher_config_for(fake_openai, concurrency=16, max_attempts=12)
    requests = [ask(f"storm {i}") for i in range(60)]

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            results = [r async for r in engine.map(requests)]
            return results, engine

    results, engine = asyncio.run(main())
    assert all(r.ok for r in results)
    assert fake_openai.requests == 60 + 30
    assert engine.stats.rate_limited == 30
    assert engine._slots.limit < 16  # the server pushed back, the engine listened


def test_retry_after_pauses_every_request_when_most_answers_are_429s(fake_openai, tmp_path):
    fake_openai.set_latency(0.05)
    fake_openai.inject("429", times=1, retry_after=0.5)
    config = make_teacher_config_for(fake_openai, concurrency=1, min_backoff=0.0, max_backoff=0.01)
    results = run_requests(config, [ask("first"), ask("second")], journal_path=tmp_path / "j.sqlite")
    assert all(r.ok for r in results)
    # Three requests: first (429), then no request at all for 0.5 s, then two successes.
    assert fake_openai.requests == 3
    assert fake_openai.arrivals[1] - fake_openai.arrivals[0] >= 0.5


def test_a_minority_of_random_429s_neither_lowers_concurrency_nor_pauses_everyone(fake_openai, tmp_path):
    """The issue's storm: 30% random 429s with retry-after made every request wait and halved the
    concurrency on each wave, 302 -> 4 requests/s. Each 429'd request waits on its own now."""
    fake_openai.set_latency(0.01)
    fake_openai.inject("429", times=None, probability=0.3, retry_after=0.05)
    config = make_teacher_config_for(fake_openai, concurrency=16, max_attempts=20)
    requests = [ask(f"trickle {i}") for i in range(300)]

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            results = [r async for r in engine.map(requests)]
            return results, engine

    results, engine = asyncio.run(main())
    assert all(r.ok for r in results)
    assert 60 <= engine.stats.rate_limited == fake_openai.faults_served["429"]
    assert fake_openai.requests == 300 + engine.stats.rate_limited
    assert engine._slots.limit == 16
    assert engine._pause_until == 0.0  # no request was ever held for another's retry-after


def test_a_retry_after_delays_the_request_that_got_it_and_not_the_others(fake_openai, tmp_path):
    fake_openai.inject("429", times=1, match="first", retry_after=0.5)
    config = make_teacher_config_for(fake_openai, concurrency=2, min_backoff=0.0, max_backoff=0.01)
    requests = [ask("first"), *(ask(f"other {i}") for i in range(6))]

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            results = [r async for r in engine.map(requests)]
            return results, engine

    results, engine = asyncio.run(main())
    assert all(r.ok for r in results)
    order = [last_user_text(body) for body in fake_openai.received]
    assert order[-1] == "first" and order.count("first") == 2  # every other request went first
    assert fake_openai.arrivals[-1] - fake_openai.arrivals[order.index("first")] >= 0.5
    assert engine._pause_until == 0.0 and engine._slots.limit == 2  # nobody else was held, nothing halved


# --------------------------------------------------------------------------- markers & ledger


def test_prompt_marker_faults_other_tests_can_use(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai, max_attempts=3)
    results = run_requests(
        config,
        [ask("fine"), ask("FAULT:500*2 then fine"), ask("FAULT:400 always")],
        journal_path=tmp_path / "j.sqlite",
    )
    fine, flaky, broken = results
    assert fine.ok and fine.attempts == 1
    assert flaky.ok and flaky.attempts == 3
    assert not broken.ok and broken.error == "bad_request"
    assert fake_openai.requests == 1 + 3 + 1


def test_failed_requests_are_retried_on_the_next_run_not_served_from_the_journal(fake_openai, tmp_path):
    journal = tmp_path / "j.sqlite"
    fake_openai.inject("500", times=None)
    config = make_teacher_config_for(fake_openai, max_attempts=2)
    first = run_one(config, ask("try again later"), journal)
    assert first.error == "server_error" and fake_openai.requests == 2
    fake_openai.reset()
    second = run_one(config, ask("try again later"), journal)
    assert second.ok and not second.cached and second.attempts == 1
    assert fake_openai.requests == 1
    with Journal(journal) as j:
        entry = j.get(second.key)
        assert (entry.status, entry.attempts, entry.error) == ("ok", 3, None)
        assert j.failures() == []


def test_failure_ledger_groups_errors(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai, max_attempts=2)
    prompts = ["FAULT:400 a", "FAULT:400 b", "FAULT:length c", "ok d"]
    run_requests(config, [ask(p) for p in prompts], journal_path=tmp_path / "j.sqlite")
    with Journal(tmp_path / "j.sqlite") as j:
        groups = {g.error: g.count for g in j.failures()}
        stats = j.stats()
    assert groups == {"bad_request": 2, "length": 1}
    assert (stats.total, stats.ok, stats.failed) == (4, 1, 3)
