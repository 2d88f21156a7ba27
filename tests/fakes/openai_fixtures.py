"""pytest fixtures for the fake OpenAI-compatible server (see openai_server.py).

    def test_something(fake_openai, tmp_path):
        fake_openai.set_responder(lambda req: "a scripted reply")
        config = make_teacher_config_for(fake_openai, concurrency=4)
        results = run_requests(config, requests, journal_path=tmp_path / "journal.sqlite")
        assert fake_openai.requests == len(requests)

`teacher_config` is the same config as a fixture. Configs made here retry fast (10-100 ms back-off)
and time out after 5 s, so fault tests take milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI, Fault

__all__ = ["FakeOpenAI", "Fault", "fake_openai", "make_teacher_config_for", "teacher_config"]


def make_teacher_config_for(fake: FakeOpenAI, **overrides: Any):
    """A TeacherConfig pointing at `fake`, tuned for tests (small back-off, no progress bar).
    Keyword arguments override any field."""
    from datagen.teacher.config import TeacherConfig

    fields: dict[str, Any] = {
        "base_url": fake.base_url,
        "model": fake.model,
        "api_key_env": "DATAGEN_TEST_TEACHER_KEY",
        "concurrency": 8,
        "timeout": 5.0,
        "max_attempts": 4,
        "min_backoff": 0.01,
        "max_backoff": 0.1,
        "max_retry_after": 1.0,
        "stall_seconds": 30.0,
        "progress": False,
        "params": {"temperature": 0.7, "max_tokens": 256},
    }
    fields.update(overrides)
    return TeacherConfig(**fields)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server on 127.0.0.1 for one test (no latency, echo replies)."""
    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def teacher_config(fake_openai):
    """A TeacherConfig for `fake_openai` (see `make_teacher_config_for`)."""
    return make_teacher_config_for(fake_openai)
