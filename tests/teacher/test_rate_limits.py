"""RPM and TPM limits end to end: counted at the fake server's arrivals, never over the limit."""

from __future__ import annotations

import bisect

from datagen.teacher.engine import run_requests
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for


def max_in_any_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_right(stamps, t + window) - i for i, t in enumerate(stamps))


def test_rpm_limit_holds_in_every_window_at_the_server(fake_openai):
    config = make_teacher_config_for(fake_openai, concurrency=16, rpm=20, rate_window=0.5)
    results = run_requests(
        config, [Request(messages=[{"role": "user", "content": f"r{i}"}]) for i in range(50)]
    )
    assert all(r.ok for r in results)
    assert fake_openai.requests == 50
    assert max_in_any_window(fake_openai.arrivals, 0.5) <= 20


def test_tpm_limit_settles_on_reported_usage(fake_openai):
    fake_openai.set_responder(lambda req: {"content": "x", "prompt_tokens": 10, "completion_tokens": 30})
    config = make_teacher_config_for(
        fake_openai, concurrency=16, tpm=200, rate_window=0.5, params={"max_tokens": 30}
    )
    results = run_requests(
        config, [Request(messages=[{"role": "user", "content": f"t{i}"}]) for i in range(20)]
    )
    assert all(r.ok for r in results)
    assert fake_openai.requests == 20
    assert max_in_any_window(fake_openai.arrivals, 0.5) <= 200 // 40
