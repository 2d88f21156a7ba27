"""Resume: `datagen generate` of 50 dialogues is SIGKILLed midway; the rerun finishes without paying
again for finished turns and without duplicating dialogues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from datagen.formats.validate import validate_paths
from tests.generate.scripted_teacher import scripted_teacher

REPO = Path(__file__).resolve().parents[2]
N = 50
TURNS = 3
CALLS = N * (2 * TURNS - 1)  # per dialogue: 3 assistant calls + 2 simulated-user calls
TEACHER_CONCURRENCY = 8


def _generate(fake, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DATAGEN_DEBUG", None)
    cmd = [
        sys.executable,
        "-m",
        "datagen",
        "generate",
        str(tmp_path / "prompts.jsonl"),
        "--kind",
        "hhh",
        "--out",
        str(tmp_path / "hhh.jsonl"),
        "--turns",
        str(TURNS),
        "--concurrency",
        "12",
        "--base-url",
        fake.base_url,
        "--teacher-model",
        fake.model,
        "--api-key-env",
        "DATAGEN_TEST_TEACHER_KEY",
        "--teacher-concurrency",
        str(TEACHER_CONCURRENCY),
        "--no-progress",
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _key(body: dict) -> str:
    return json.dumps(body["messages"], sort_keys=True, ensure_ascii=False)


def test_sigkill_midway_then_rerun_finishes_without_repaying(fake_openai, tmp_path):
    rows = [
        {
            "id": f"p{i:02d}",
            "text": f"Question {i}: how does topic number {i} work?",
            "language": "en",
            "category": "brainstorming",
        }
        for i in range(N)
    ]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fake_openai.set_responder(scripted_teacher)
    fake_openai.set_latency(0.02)
    out = tmp_path / "hhh.jsonl"

    proc = _generate(fake_openai, tmp_path)
    deadline = time.monotonic() + 120
    while not out.exists() or len(out.read_text().splitlines()) < 10:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    written_before = len([line for line in out.read_text().splitlines() if line.endswith("}")])
    assert 10 <= written_before < N  # really killed midway
    paid_before = fake_openai.requests
    assert paid_before < CALLS

    proc = _generate(fake_openai, tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "hhh dialogues:" in stderr and "already done" in stderr

    convs = [json.loads(line) for line in out.read_text().splitlines()]
    ids = Counter(c["id"] for c in convs)
    assert sorted(ids) == [f"hhh-p{i:02d}" for i in range(N)] and set(ids.values()) == {1}
    assert all(len(c["turns"]) == TURNS for c in convs)
    # Every distinct request was paid once, except at most those in flight at the kill.
    per_request = Counter(
        _key(body) for body in fake_openai.received if "messages" in body
    )  # a body cut by the kill was never served
    repeats = sum(n - 1 for n in per_request.values())
    print(
        f"{fake_openai.requests} requests for {CALLS} calls ({paid_before} before the kill, {repeats} repeated)"
    )
    assert len(per_request) == CALLS
    assert repeats <= TEACHER_CONCURRENCY
    assert fake_openai.requests <= CALLS + TEACHER_CONCURRENCY
    problems: list[str] = []
    assert validate_paths([str(out)], report=problems.append).ok, problems
