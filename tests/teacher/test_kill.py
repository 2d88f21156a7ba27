"""SIGKILL (or Ctrl-C) in the middle of 500 calls, then a rerun: nothing lost, at most `concurrency`
re-paid."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
N = 500
CONCURRENCY = 16


def child(fake, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.teacher.kill_child",
            fake.base_url,
            str(tmp_path / "journal.sqlite"),
            str(tmp_path / "out.jsonl"),
            str(N),
            str(CONCURRENCY),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ok_rows(journal: Path) -> int:
    conn = sqlite3.connect(journal)
    try:
        return conn.execute("SELECT count(*) FROM calls WHERE status = 'ok'").fetchone()[0]
    finally:
        conn.close()


def interrupt_midway(fake, proc: subprocess.Popen, sig: int) -> None:
    deadline = time.monotonic() + 60
    while fake.requests < N // 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "child made no progress"
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait(timeout=20)  # a Ctrl-C must stop the run promptly, not hang on in-flight calls


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupt_midway_then_rerun_completes_without_repaying(fake_openai, tmp_path, sig):
    fake_openai.set_latency(0.03)
    proc = child(fake_openai, tmp_path)
    interrupt_midway(fake_openai, proc, sig)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in proc.stderr.read()
    journaled = ok_rows(tmp_path / "journal.sqlite")
    assert 0 < journaled < N  # really killed midway
    paid_before_kill = fake_openai.requests

    proc = child(fake_openai, tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failed"] == 0
    assert summary["cached"] + summary["sent"] + summary["skipped"] == N
    # Calls journaled but not yet written to out.jsonl came from the journal, unpaid.
    assert fake_openai.requests - paid_before_kill == summary["sent"]

    print(
        f"server saw {fake_openai.requests} requests for {N} calls ({paid_before_kill} before the kill, "
        f"{journaled} journaled at the kill, rerun: {summary})"
    )
    assert fake_openai.requests <= N + CONCURRENCY
    assert ok_rows(tmp_path / "journal.sqlite") == N
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    tags = Counter(json.loads(line)["tag"] for line in lines)
    assert sorted(tags) == list(range(N))
    assert set(tags.values()) == {1}
    assert all(json.loads(line)["text"] == f"echo: kill test {json.loads(line)['tag']}" for line in lines)
