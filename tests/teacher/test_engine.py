"""The engine's contract: caching, keys, concurrency, parameters, cost, map(), progress."""

from __future__ import annotations

import asyncio
import logging

import pytest

from datagen.errors import ConfigError, DatagenError
from datagen.teacher.engine import TeacherEngine, run_requests
from datagen.teacher.journal import Journal, request_key
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.fakes.openai_server import last_user_text


def ask(text: str, **kw) -> Request:
    return Request(messages=[{"role": "user", "content": text}], **kw)


def test_rerun_pays_nothing_for_finished_calls(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai)
    requests = [ask(f"question {i}", tag=i) for i in range(30)]
    first = run_requests(config, requests, journal_path=tmp_path / "j.sqlite")
    assert fake_openai.requests == 30
    second = run_requests(config, requests, journal_path=tmp_path / "j.sqlite")
    assert fake_openai.requests == 30
    assert all(r.cached and r.ok and r.attempts == 0 for r in second)
    assert [r.text for r in second] == [r.text for r in first] == [f"echo: question {i}" for i in range(30)]
    assert [r.tag for r in second] == list(range(30))
    assert [r.key for r in second] == [r.key for r in first]


def test_results_come_back_in_input_order_with_tags(fake_openai, tmp_path):
    fake_openai.set_latency(0.01)
    config = make_teacher_config_for(fake_openai, concurrency=8)
    results = run_requests(config, [ask(f"n{i}", tag=("dlg", i)) for i in range(40)])
    assert [r.tag for r in results] == [("dlg", i) for i in range(40)]
    assert [r.text for r in results] == [f"echo: n{i}" for i in range(40)]


def test_map_yields_each_request_once_as_they_finish(fake_openai, tmp_path):
    # Replies are slower for low numbers, so finishing order differs from submission order.
    def responder(req):
        n = int(last_user_text(req).split()[-1])
        fake_openai.sleep(0.002 * (20 - n))
        return f"r{n}"

    fake_openai.set_responder(responder)
    config = make_teacher_config_for(fake_openai, concurrency=20)

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            return [r async for r in engine.map(ask(f"item {i}", tag=i) for i in range(20))]

    results = asyncio.run(main())
    assert sorted(r.tag for r in results) == list(range(20))
    assert all(r.text == f"r{r.tag}" for r in results)
    assert [r.tag for r in results] != list(range(20))


def test_map_consumes_a_generator_lazily(fake_openai):
    config = make_teacher_config_for(fake_openai, concurrency=2)
    pulled = 0

    def gen():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield ask(f"lazy {i}")

    async def main():
        async with TeacherEngine(config) as engine:
            got = 0
            async for _ in engine.map(gen(), window=8):
                got += 1
                if got == 5:
                    break
            return got

    assert asyncio.run(main()) == 5
    assert pulled <= 5 + 8
    assert fake_openai.requests <= 5 + 8


def test_concurrency_limit_is_respected(fake_openai):
    fake_openai.set_latency(0.03)
    config = make_teacher_config_for(fake_openai, concurrency=4)
    results = run_requests(config, [ask(f"c{i}") for i in range(40)])
    assert all(r.ok for r in results)
    assert fake_openai.max_in_flight <= 4
    assert fake_openai.max_in_flight >= 2  # and it does run calls in parallel


def test_many_coroutines_calling_complete_share_one_engine(fake_openai, tmp_path):
    """How dialogue generation uses it: each dialogue awaits its turns one after another."""
    fake_openai.set_latency(0.005)
    config = make_teacher_config_for(fake_openai, concurrency=6)

    async def dialogue(engine, d):
        messages = [{"role": "user", "content": f"dialogue {d} turn 0"}]
        for turn in range(3):
            result = await engine.complete(Request(messages=list(messages), tag=(d, turn)))
            assert result.ok, result
            messages += [
                {"role": "assistant", "content": result.text},
                {"role": "user", "content": f"dialogue {d} turn {turn + 1}"},
            ]
        return messages

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            out = await asyncio.gather(*(dialogue(engine, d) for d in range(25)))
            return out, engine.stats

    dialogues, stats = asyncio.run(main())
    assert len(dialogues) == 25 and all(len(m) == 7 for m in dialogues)
    assert fake_openai.requests == 75 and fake_openai.max_in_flight <= 6
    assert (stats.done, stats.failed, stats.submitted, stats.in_flight) == (75, 0, 75, 0)
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.count("ok") == 75


def test_identical_requests_in_flight_are_sent_once(fake_openai, tmp_path):
    fake_openai.set_latency(0.1)
    config = make_teacher_config_for(fake_openai)

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            return await asyncio.gather(*(engine.complete(ask("same", tag=i)) for i in range(5)))

    results = asyncio.run(main())
    assert fake_openai.requests == 1
    assert [r.tag for r in results] == list(range(5))
    assert all(r.ok and r.text == "echo: same" for r in results)
    assert sum(not r.cached for r in results) == 1


def test_key_depends_on_model_messages_params_template_and_sample_not_tag():
    msgs = [{"role": "user", "content": "x"}]
    base = request_key("m", msgs, {"temperature": 0.7}, "t1")
    assert base == request_key("m", [{"content": "x", "role": "user"}], {"temperature": 0.7}, "t1")
    assert (
        len(
            {
                base,
                request_key("m2", msgs, {"temperature": 0.7}, "t1"),
                request_key("m", [{"role": "user", "content": "y"}], {"temperature": 0.7}, "t1"),
                request_key("m", msgs, {"temperature": 0.8}, "t1"),
                request_key("m", msgs, {"temperature": 0.7}, "t2"),
                request_key("m", msgs, {"temperature": 0.7}, "t1", sample=1),
            }
        )
        == 6
    )


def test_template_version_and_sample_change_what_is_paid_for(fake_openai, tmp_path):
    config = make_teacher_config_for(fake_openai)
    journal = tmp_path / "j.sqlite"
    run_requests(
        config,
        [ask("q", template_version="v1"), ask("q", template_version="v1", tag="other tag")],
        journal_path=journal,
    )
    assert fake_openai.requests == 1
    run_requests(
        config,
        [ask("q", template_version="v2"), ask("q", template_version="v1", sample=1)],
        journal_path=journal,
    )
    assert fake_openai.requests == 3


def test_params_merge_and_unknown_params_reach_the_server(fake_openai):
    config = make_teacher_config_for(fake_openai, params={"temperature": 0.3, "max_tokens": 50})
    run_requests(config, [ask("p", params={"temperature": 0.9, "top_k": 40, "seed": 7})])
    body = fake_openai.received[0]
    assert body["model"] == "fake-teacher"
    assert body["messages"] == [{"role": "user", "content": "p"}]
    assert (body["temperature"], body["max_tokens"], body["top_k"], body["seed"]) == (0.9, 50, 40, 7)
    assert "stream" not in body or body["stream"] is False


def test_request_model_overrides_config_model(fake_openai):
    config = make_teacher_config_for(fake_openai)
    [result] = run_requests(config, [ask("m", model="other-model")])
    assert fake_openai.received[0]["model"] == "other-model" and result.model == "other-model"


def test_reserved_params_are_a_programming_error(fake_openai):
    config = make_teacher_config_for(fake_openai)
    with pytest.raises(ConfigError, match="stream"):
        run_requests(config, [ask("s", params={"stream": True})])
    assert fake_openai.requests == 0


def test_api_key_comes_from_the_named_variable_and_is_never_written(fake_openai, tmp_path, monkeypatch):
    secret = "sk-test-very-secret-0123456789"
    monkeypatch.setenv("DATAGEN_TEST_TEACHER_KEY", secret)
    fake_openai.api_key = secret
    config = make_teacher_config_for(fake_openai)
    [result] = run_requests(config, [ask("k")], journal_path=tmp_path / "j.sqlite")
    assert result.ok
    assert fake_openai.auth_headers == [f"Bearer {secret}"]
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in repr(config.to_dict())


def test_unset_key_variable_sends_a_placeholder(fake_openai, monkeypatch):
    monkeypatch.delenv("DATAGEN_TEST_TEACHER_KEY", raising=False)
    config = make_teacher_config_for(fake_openai)
    [result] = run_requests(config, [ask("k")])
    assert result.ok and fake_openai.auth_headers == ["Bearer not-needed"]


def test_wrong_key_is_an_auth_failure(fake_openai, monkeypatch):
    monkeypatch.setenv("DATAGEN_TEST_TEACHER_KEY", "sk-wrong")
    fake_openai.api_key = "sk-right"
    config = make_teacher_config_for(fake_openai)
    [result] = run_requests(config, [ask("k")])
    assert (result.ok, result.error, fake_openai.requests) == (False, "auth", 1)


def test_cost_from_usage_and_price_table(fake_openai, tmp_path):
    fake_openai.set_responder(
        lambda req: {"content": "priced", "prompt_tokens": 1000, "completion_tokens": 500}
    )
    prices = {"fake-teacher": {"input": 0.15, "output": 0.60}}
    config = make_teacher_config_for(fake_openai, prices=prices)

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
            results = [r async for r in engine.map([ask(f"c{i}") for i in range(4)])]
            return results, engine.stats

    results, stats = asyncio.run(main())
    each = (1000 * 0.15 + 500 * 0.60) / 1e6
    assert all(r.cost == pytest.approx(each) for r in results)
    assert stats.cost == pytest.approx(4 * each)
    assert (stats.prompt_tokens, stats.completion_tokens) == (4000, 2000)
    with Journal(tmp_path / "j.sqlite") as j:
        st = j.stats()
    assert st.cost == pytest.approx(4 * each)
    assert st.by_model["fake-teacher"]["prompt_tokens"] == 4000
    # A cached rerun reports the stored cost on each Result but pays nothing.
    again = run_requests(config, [ask("c0")], journal_path=tmp_path / "j.sqlite")
    assert again[0].cached and again[0].cost == pytest.approx(each)


def test_missing_usage_is_estimated_not_zero(fake_openai):
    def no_usage(req):
        body = fake_openai.completion_body(req, "an answer without usage")
        del body["usage"]
        return body

    fake_openai.set_responder(no_usage)
    [result] = run_requests(make_teacher_config_for(fake_openai), [ask("some words in a prompt")])
    assert result.ok and result.prompt_tokens > 0 and result.completion_tokens > 0


def test_engine_must_be_opened(fake_openai):
    engine = TeacherEngine(make_teacher_config_for(fake_openai))
    with pytest.raises(DatagenError, match="async with"):
        asyncio.run(engine.complete(ask("x")))


def test_stall_watchdog_warns(fake_openai, caplog):
    fake_openai.set_latency(1.2)
    config = make_teacher_config_for(fake_openai, stall_seconds=0.3)
    with caplog.at_level(logging.WARNING, logger="datagen.teacher"):
        [result] = run_requests(config, [ask("slow")])
    assert result.ok
    assert any("no teacher call finished" in r.getMessage() for r in caplog.records)


def test_summary_line_counts_the_run(fake_openai, tmp_path):
    fake_openai.inject("500", times=1)
    config = make_teacher_config_for(fake_openai, max_attempts=1)

    async def main():
        async with TeacherEngine(config, journal_path=tmp_path / "j.sqlite", desc="expand") as engine:
            [r async for r in engine.map([ask("a"), ask("b"), ask("c")])]
        return engine

    engine = asyncio.run(main())
    assert engine.summary.startswith("expand: 2 ok (0 cached), 1 failed")
    assert "server_error x1" in engine.summary
