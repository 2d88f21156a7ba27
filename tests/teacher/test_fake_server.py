"""The fake server itself: standalone mode (used by the bench and child processes) and scripting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from datagen.teacher.engine import run_requests
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.fakes.openai_server import Fault, last_user_text

REPO = Path(__file__).resolve().parents[2]


def test_standalone_server_serves_and_reports(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "READY" and line[1].endswith("/v1")
        base_url = line[1]
        root = base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{base_url}/models") as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "fake-teacher"
        req = urllib.request.Request(
            f"{root}/_control", data=json.dumps({"inject": {"kind": "500"}}).encode(), method="POST"
        )
        urllib.request.urlopen(req).read()

        class Fake:  # just enough for make_teacher_config_for
            model = "fake-teacher"

        Fake.base_url = base_url
        [result] = run_requests(
            make_teacher_config_for(Fake), [Request(messages=[{"role": "user", "content": "hi"}])]
        )
        assert result.ok and result.attempts == 2
        with urllib.request.urlopen(f"{root}/_stats?arrivals=1") as resp:
            stats = json.loads(resp.read())
        assert stats["requests"] == 2 and stats["faults"] == {"500": 1} and len(stats["arrivals"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_responder_sees_the_messages_and_can_return_text_dicts_or_faults(fake_openai):
    seen = []

    def responder(req):
        seen.append(req["messages"])
        text = last_user_text(req)
        if text == "fault":
            return Fault("400")
        if text == "dict":
            return {"content": "from a dict", "completion_tokens": 42}
        return text.upper()

    fake_openai.set_responder(responder)
    config = make_teacher_config_for(fake_openai)
    asks = [
        Request(messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": t}])
        for t in ("shout", "dict", "fault")
    ]
    shout, as_dict, fault = run_requests(config, asks)
    assert shout.text == "SHOUT"
    assert (as_dict.text, as_dict.completion_tokens) == ("from a dict", 42)
    assert fault.error == "bad_request"
    assert all(m[0] == {"role": "system", "content": "sys"} for m in seen)
    assert fake_openai.by_prompt == {"shout": 1, "dict": 1, "fault": 1}
    assert fake_openai.count("sys") == 3


def test_inject_match_only_hits_matching_requests(fake_openai):
    fake_openai.inject("400", times=None, match="bad one")
    config = make_teacher_config_for(fake_openai)
    results = run_requests(
        config,
        [Request(messages=[{"role": "user", "content": t}]) for t in ("good", "the bad one", "also good")],
    )
    assert [r.ok for r in results] == [True, False, True]


def test_unknown_fault_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("418")


def test_random_faults_hit_about_their_share_and_echo_key_quotes_the_header(fake_openai, monkeypatch):
    fake_openai.inject("500", times=None, probability=0.3, match="share")
    config = make_teacher_config_for(fake_openai, max_attempts=1, concurrency=4)
    results = run_requests(
        config, [Request(messages=[{"role": "user", "content": f"share {i}"}]) for i in range(200)]
    )
    assert 40 <= sum(not r.ok for r in results) == fake_openai.faults_served["500"] <= 80
    monkeypatch.setenv("DATAGEN_TEST_TEACHER_KEY", "sk-fake-echoed-0123456789")
    fake_openai.inject("echo_key", times=1)
    [result] = run_requests(config, [Request(messages=[{"role": "user", "content": "echo"}])])
    assert result.error == "bad_request"
    assert result.detail.endswith("headers received: Authorization: Bearer ***")  # the engine redacted it
