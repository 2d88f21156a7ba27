"""The fake Batch API, driven by the real openai client: every shape it serves is one the SDK parses.

Raw JSON is validated against the SDK's own models (`Batch`, `FileObject`, `ChatCompletion`), which
reject a wrong status, a missing field or a wrong type. The batch clock is moved with `advance`, so
no test sleeps through a delay (one test lets the real clock run a 0.1 s batch).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_server import last_user_text

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"


@pytest.fixture
def fake():
    server = FakeBatchOpenAI(completion_delay=10.0).start()
    try:
        yield server
    finally:
        server.stop()


def client_for(fake: FakeBatchOpenAI, **kw) -> OpenAI:
    return OpenAI(base_url=fake.base_url, api_key="sk-test", **{"max_retries": 0, "timeout": 5.0, **kw})


@pytest.fixture
def client(fake):
    with client_for(fake) as c:
        yield c


def line(custom_id: str, text: str, *, system: str | None = None, **params) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "fake-teacher", "messages": messages, **params},
    }


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()


def submit(client: OpenAI, lines: list[dict] | bytes, **kw) -> Batch:
    data = lines if isinstance(lines, bytes) else jsonl(lines)
    f = client.files.create(file=("batch.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h", **kw)


def poll(client: OpenAI, batch_id: str) -> Batch:
    """Retrieve a batch, checking the raw JSON against the SDK's model."""
    raw = client.batches.with_raw_response.retrieve(batch_id).http_response.json()
    return Batch.model_validate(raw)


def finish(fake: FakeBatchOpenAI, client: OpenAI, batch_id: str) -> Batch:
    fake.advance(3600)
    return poll(client, batch_id)


def read(client: OpenAI, file_id: str | None) -> list[dict]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def by_id(lines: list[dict]) -> dict[str, dict]:
    return {x["custom_id"]: x for x in lines}


# --------------------------------------------------------------------------- files


def test_upload_keeps_the_exact_bytes_and_describes_the_file(fake, client, tmp_path):
    data = jsonl([line("a", "你好，世界"), line("b", "second\tline")]) + b'{"custom_id": "c"}\r\n'
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    raw = client.files.with_raw_response.retrieve(uploaded.id).http_response.json()
    meta = FileObject.model_validate(raw)
    assert (meta.id, meta.filename, meta.purpose, meta.bytes) == (uploaded.id, "in.jsonl", "batch", len(data))
    assert client.files.content(uploaded.id).content == data
    path = tmp_path / "from_disk.jsonl"
    path.write_bytes(data)
    from_disk = client.files.create(file=path, purpose="batch")
    assert from_disk.filename == "from_disk.jsonl" and fake.files[from_disk.id].data == data
    assert {f.id for f in client.files.list()} == {uploaded.id, from_disk.id}
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert fake.uploads == 2


def test_a_batch_file_over_the_byte_limit_is_refused_at_upload():
    with FakeBatchOpenAI(max_bytes=100) as fake, client_for(fake) as client:
        with pytest.raises(openai.BadRequestError, match="too large"):
            client.files.create(file=("big.jsonl", b"x" * 101), purpose="batch")
        assert fake.uploads == 0


# --------------------------------------------------------------------------- the batch lifecycle


def test_a_batch_walks_validating_in_progress_finalizing_completed_and_answers_like_online_calls():
    with (
        FakeBatchOpenAI(validating_delay=1, completion_delay=10, finalizing_delay=1) as fake,
        client_for(fake) as client,
    ):
        fake.set_responder(lambda req: f"answer to {last_user_text(req)}")
        lines = [line("req-1", "first question", max_tokens=64), line("req-2", "second question")]
        created = submit(client, lines, metadata={"run": "r1"})
        assert created.status == "validating" and created.metadata == {"run": "r1"}
        assert created.request_counts.total == 2 and created.output_file_id is None
        assert created.expires_at - created.created_at == 24 * 3600

        fake.advance(1)
        b = poll(client, created.id)
        assert b.status == "in_progress" and b.in_progress_at is not None
        assert (b.request_counts.completed, b.request_counts.failed) == (0, 0)
        fake.advance(5)  # line 1 of 2 finishes halfway through the window
        assert poll(client, created.id).request_counts.completed == 1
        fake.advance(5)
        b = poll(client, created.id)
        assert b.status == "finalizing" and b.output_file_id is None and b.finalizing_at is not None
        fake.advance(1)
        b = poll(client, created.id)
        assert b.status == "completed" and b.completed_at is not None and b.model == "fake-teacher"
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (2, 2, 0)
        assert b.error_file_id is None
        assert (
            b.usage is not None and b.usage.output_tokens > 0 and b.usage.total_tokens > b.usage.output_tokens
        )

        out = by_id(read(client, b.output_file_id))
        assert set(out) == {"req-1", "req-2"}
        for custom_id, src in zip(("req-1", "req-2"), lines, strict=True):
            got = out[custom_id]
            assert (
                got["error"] is None
                and got["response"]["status_code"] == 200
                and got["response"]["request_id"]
            )
            batch_answer = ChatCompletion.model_validate(got["response"]["body"])
            online = client.chat.completions.create(**src["body"])
            assert batch_answer.choices[0].message.content == online.choices[0].message.content
            assert (
                batch_answer.choices[0].message.content
                == f"answer to {src['body']['messages'][-1]['content']}"
            )
            assert batch_answer.usage.prompt_tokens == online.usage.prompt_tokens
        assert fake.requests == 2  # the two online calls; batch lines are not counted there
        assert [x["custom_id"] for x in fake.batch_lines] == ["req-1", "req-2"]


def test_a_batch_completes_on_the_real_clock():
    with FakeBatchOpenAI(completion_delay=0.1) as fake, client_for(fake) as client:
        created = submit(client, [line("only", "hello")])
        deadline = time.monotonic() + 10
        while (b := poll(client, created.id)).status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline, b.status
            time.sleep(0.02)
        assert b.status == "completed"
        [out] = read(client, b.output_file_id)
        assert out["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello"
        assert fake.polls >= 1 and fake.downloads == 1


def test_failed_lines_go_to_the_error_file_as_status_lines_or_error_lines(fake, client):
    fake.fail_lines(lambda cid: cid == "b")
    fake.fail_lines("c", status=None, code="server_error", message="no answer (fake)")
    created = submit(client, [line(c, f"q {c}") for c in "abcd"])
    b = finish(fake, client, created.id)
    assert b.status == "completed"
    assert (b.request_counts.completed, b.request_counts.failed) == (2, 2)
    assert set(by_id(read(client, b.output_file_id))) == {"a", "d"}
    errors = by_id(read(client, b.error_file_id))
    assert set(errors) == {"b", "c"}
    assert errors["b"]["response"]["status_code"] == 500 and errors["b"]["error"] is None
    assert errors["b"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["c"]["response"] is None
    assert errors["c"]["error"] == {"code": "server_error", "message": "no answer (fake)"}


def test_a_fraction_of_lines_fails_and_the_same_ones_fail_on_a_fresh_server():
    def failed_ids() -> set[str]:
        with FakeBatchOpenAI() as fake, client_for(fake) as client:
            fake.fail_lines(fraction=0.5)
            b = finish(fake, client, submit(client, [line(f"id-{i}", f"q{i}") for i in range(20)]).id)
            return set(by_id(read(client, b.error_file_id)))

    first = failed_ids()
    assert 0 < len(first) < 20
    assert failed_ids() == first


def test_times_caps_the_failed_lines():
    with FakeBatchOpenAI() as fake, client_for(fake) as client:
        fake.fail_lines(times=2, status=503)
        b = finish(fake, client, submit(client, [line(c, c) for c in "abcde"]).id)
        errors = read(client, b.error_file_id)
        assert [x["custom_id"] for x in errors] == ["a", "b"]
        assert {x["response"]["status_code"] for x in errors} == {503}


def test_prompt_markers_fail_batch_lines_until_their_count_runs_out(fake, client):
    lines = [
        line("once", "FAULT:500*1 flaky"),
        line("always", "FAULT:400 broken"),
        line("cut", "FAULT:length x", max_tokens=7),
    ]
    first = finish(fake, client, submit(client, lines).id)
    errors = by_id(read(client, first.error_file_id))
    assert {k: v["response"]["status_code"] for k, v in errors.items()} == {"once": 500, "always": 400}
    [cut] = read(client, first.output_file_id)
    assert cut["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert cut["response"]["body"]["usage"]["completion_tokens"] == 7

    again = finish(fake, client, submit(client, lines[:2]).id)  # the resubmission of the failed lines
    assert set(by_id(read(client, again.output_file_id))) == {"once"}
    assert set(by_id(read(client, again.error_file_id))) == {"always"}
    assert fake.duplicates() == ["always", "once"]


def test_errors_can_share_the_output_file_as_vllm_run_batch_writes_them():
    with FakeBatchOpenAI(split_errors=False) as fake, client_for(fake) as client:
        fake.fail_lines("bad", status=400)
        b = finish(fake, client, submit(client, [line("good", "x"), line("bad", "y")]).id)
        assert b.error_file_id is None
        out = by_id(read(client, b.output_file_id))
        assert (out["good"]["response"]["status_code"], out["bad"]["response"]["status_code"]) == (200, 400)


def test_an_expired_batch_keeps_the_lines_answered_in_time(fake, client):
    fake.expire_next(keep=0.5)
    created = submit(client, [line(c, c) for c in "abcd"])
    fake.advance(7.5)  # 3 of 4 lines would be done by now, but only half are kept
    assert poll(client, created.id).request_counts.completed == 2
    b = finish(fake, client, created.id)
    assert b.status == "expired" and b.expired_at is not None and b.completed_at is None
    assert (b.request_counts.completed, b.request_counts.failed) == (2, 2)
    assert [x["custom_id"] for x in read(client, b.output_file_id)] == ["a", "b"]
    errors = read(client, b.error_file_id)
    assert [x["custom_id"] for x in errors] == ["c", "d"]
    assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in errors)
    later = finish(fake, client, submit(client, [line("e", "e")]).id)
    assert later.status == "completed"


def test_shuffled_output_lists_the_lines_out_of_input_order():
    with FakeBatchOpenAI(shuffle_output=True) as fake, client_for(fake) as client:
        ids = [f"id-{i}" for i in range(6)]
        b = finish(fake, client, submit(client, [line(i, i) for i in ids]).id)
        got = [x["custom_id"] for x in read(client, b.output_file_id)]
        assert got != ids and sorted(got) == ids


def test_cancel_moves_through_cancelling_and_keeps_the_finished_lines():
    with FakeBatchOpenAI(completion_delay=10, cancel_delay=1) as fake, client_for(fake) as client:
        created = submit(client, [line(c, c) for c in "abcd"])
        fake.advance(5)  # lines finish at 2.5, 5, 7.5 and 10 s
        cancelling = client.batches.cancel(created.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        fake.advance(1)
        b = poll(client, created.id)
        assert b.status == "cancelled" and b.cancelled_at is not None
        assert [x["custom_id"] for x in read(client, b.output_file_id)] == ["a", "b"]
        assert {x["error"]["code"] for x in read(client, b.error_file_id)} == {"batch_cancelled"}
        done = finish(fake, client, submit(client, [line("z", "z")]).id)
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(done.id)
        assert fake.cancels == 1


# --------------------------------------------------------------------------- validation and limits


def test_bad_input_files_make_failed_batches_with_errors(fake, client):
    dup = finish(fake, client, submit(client, [line("x", "1"), line("x", "2")]).id)
    assert dup.status == "failed" and dup.failed_at is not None and dup.output_file_id is None
    assert [(e.code, e.line) for e in dup.errors.data] == [("duplicate_custom_id", 2)]

    wrong_url = {**line("y", "1"), "url": "/v1/embeddings"}
    bad = finish(fake, client, submit(client, jsonl([wrong_url]) + b"not json\n").id)
    assert [(e.code, e.line) for e in bad.errors.data] == [
        ("mismatched_endpoint", 1),
        ("invalid_json_line", 2),
    ]

    fake.fail_batches(code="token_limit_exceeded")
    refused = submit(client, [line("z", "1")])
    assert poll(client, refused.id).errors.data[0].code == "token_limit_exceeded"
    assert not fake.submitted  # nothing in a failed batch was submitted

    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint=CHAT, completion_window="24h")
    f = client.files.create(file=("x.jsonl", jsonl([line("w", "1")])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="1h")  # type: ignore[arg-type]


def test_a_file_over_the_line_limit_fails_its_batch():
    with FakeBatchOpenAI(max_lines=2) as fake, client_for(fake) as client:
        assert finish(fake, client, submit(client, [line(c, c) for c in "ab"]).id).status == "completed"
        b = finish(fake, client, submit(client, [line(c, c) for c in "cde"]).id)
        assert b.status == "failed" and b.errors.data[0].code == "too_many_requests"
        assert sorted(fake.submitted) == ["a", "b"]


def test_the_submission_counter_finds_a_custom_id_submitted_twice(fake, client):
    lines = [line("a", "1"), line("b", "2")]
    f = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert fake.duplicates() == [] and fake.submitted == {"a": 1, "b": 1}
    client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert fake.duplicates() == ["a", "b"]
    assert fake.stats()["lines_submitted"] == 4


def test_list_pages_through_batches_newest_first(fake, client):
    ids = [submit(client, [line(f"l{i}", "x")]).id for i in range(3)]
    first_page = client.batches.list(limit=2)
    assert [b.id for b in first_page.data] == ids[::-1][:2] and first_page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows `after`


# --------------------------------------------------------------------------- restarts and the prefix cache


def test_a_restart_mid_poll_drops_connections_answers_503_then_serves_the_same_batches(fake):
    with client_for(fake, max_retries=3) as client:
        created = submit(client, [line("a", "a"), line("b", "b")])
        assert poll(client, created.id).status == "in_progress"
        fake.restart(unavailable=2, retry_after=0.01)
        assert poll(client, created.id).status == "in_progress"  # the SDK retried through both 503s
        assert fake.unavailable_served == 2
        fake.restart(down=0.2)  # not listening for a while: the SDK's retry finds it back
        b = finish(fake, client, created.id)
        assert b.status == "completed" and len(read(client, b.output_file_id)) == 2
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    with client_for(fake) as no_retries:
        fake.restart(unavailable=1)
        with pytest.raises(openai.InternalServerError):
            no_retries.batches.retrieve(created.id)
        assert no_retries.batches.retrieve(created.id).status == "completed"
        fake.restart(down=None)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", fake.port), timeout=1).close()
        with pytest.raises(openai.APIConnectionError):
            no_retries.batches.retrieve(created.id)
        fake.resume()
        assert no_retries.batches.retrieve(created.id).status == "completed"
    assert fake.duplicates() == []


def test_a_restart_closes_kept_alive_connections(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    conn.request("GET", "/v1/batches")
    assert conn.getresponse().read()
    fake.restart()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.request("GET", "/v1/batches")
        conn.getresponse().read()
    conn.close()


def test_cached_tokens_count_the_shared_prefix_in_whole_blocks():
    system = " ".join(f"rule{i}" for i in range(12))  # 12 shared words: 3 blocks of 4
    with FakeBatchOpenAI(cache_block=4, cache_min=8) as fake, client_for(fake) as client:

        def cached(text: str, system: str = system) -> int:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
            usage = client.chat.completions.create(model="m", messages=messages).usage
            return usage.prompt_tokens_details.cached_tokens

        assert cached("first question here") == 0
        assert cached("another question entirely") == 12
        assert (
            cached("x", system=" ".join(system.split()[:6]) + " other words follow here") == 0
        )  # 4 < cache_min

        b = finish(fake, client, submit(client, [line("p", "yet another one", system=system)]).id)
        [out] = read(client, b.output_file_id)
        assert out["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 12
        assert b.usage.input_tokens_details.cached_tokens == 12

    with FakeBatchOpenAI() as fake, client_for(fake) as client:  # OpenAI's floor: 1024 tokens
        long = " ".join(f"w{i}" for i in range(1100))
        for expected in (0, 1024):
            usage = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": long}]
            ).usage
            assert usage.prompt_tokens_details.cached_tokens == expected


def test_standalone_server_runs_a_batch():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.batch_server", "--port", "0", "--completion-delay", "0.05"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        ready, base_url = proc.stdout.readline().split()
        assert ready == "READY"
        with OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            created = submit(client, [line("a", "ping")])
            deadline = time.monotonic() + 10
            while (b := poll(client, created.id)).status != "completed":
                assert time.monotonic() < deadline, b.status
                time.sleep(0.02)
            [out] = read(client, b.output_file_id)
            assert out["response"]["body"]["choices"][0]["message"]["content"] == "echo: ping"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_wrong_key_gets_401_on_files_and_batches():
    with FakeBatchOpenAI(api_key="sk-right") as fake:
        with client_for(fake) as wrong, pytest.raises(openai.AuthenticationError):
            wrong.files.create(file=("a.jsonl", jsonl([line("a", "a")])), purpose="batch")
        with OpenAI(base_url=fake.base_url, api_key="sk-right", max_retries=0) as right:
            assert submit(right, [line("a", "a")]).status == "validating"
        assert fake.uploads == 1
