"""`datagen run --serve-teacher` for real: the embedded llama-cpp-python server with SmolLM2-135M
writes the expansion and two dialogues of each kind (configs/smoke.yaml), every stage finishes, and
the manifest counts the embedded teacher's calls. A SIGTERM in the middle stops the run and its
server cleanly; a server that dies in the middle is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from datagen.formats.validate import validate_paths
from datagen.teacher.local_server import DEFAULT_MODEL_ALIAS
from tests.teacher.test_local_server import wait_gone, wait_port_free

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


def run_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "datagen",
        "run",
        str(SMOKE),
        "--out",
        str(out),
        "--serve-teacher",
        "--no-progress",
        *extra,
    ]


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(REPO)}
    e.pop("DATAGEN_DEBUG", None)
    return e


def test_run_with_the_embedded_teacher_end_to_end(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(run_cmd(out), cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done in" in done.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    for stage in ("seeds", "expand", "dialogues.hhh", "dialogues.plugin", "filter", "final", "dataset"):
        assert manifest["stages"][stage]["status"] == "done", stage
    assert manifest["config"]["teacher"]["model"] == DEFAULT_MODEL_ALIAS
    calls = manifest["teacher_calls"]
    assert calls["ok"] > 0 and calls["completion_tokens"] > 0  # SmolLM2 really wrote them
    for kind in ("hhh", "plugin"):
        made = (out / "dialogues" / f"{kind}.jsonl").read_text().splitlines()
        failed = out / "dialogues" / f"{kind}.failed.jsonl"
        tried = len(made) + (len(failed.read_text().splitlines()) if failed.exists() else 0)
        assert tried == 2, kind  # the smoke config asks for two of each
    final = out / "final.jsonl"
    assert final.exists()
    report = validate_paths([final])
    assert report.invalid == 0
    assert str(tmp_path) not in json.dumps(manifest["stages"])  # no machine paths
    log = (out / "teacher-server.log").read_text(errors="replace")
    assert "Finished server process" in log  # stopped cleanly when the run ended
    assert str(REPO.parent) not in log


def start_run(out: Path) -> tuple[subprocess.Popen, psutil.Process]:
    """`datagen run --serve-teacher` in a subprocess, once its server is up and the HHH stage is under way."""
    proc = subprocess.Popen(
        run_cmd(out), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    server = None
    while server is None or not (out / "dialogues").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached its dialogue stage: {proc.communicate()}")
        servers = [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "llama_cpp.server" in " ".join(c.cmdline())
        ]
        server = servers[0] if servers else None
        time.sleep(0.1)
    return proc, server


def test_sigterm_stops_the_run_and_its_embedded_teacher(tmp_path):
    out = tmp_path / "run"
    proc, server = start_run(out)
    port = int(server.cmdline()[server.cmdline().index("--port") + 1])
    try:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]  # handled as an interrupt: cleanup ran
    assert "rerun the same command to resume" in stderr
    assert wait_gone(server.pid)
    assert wait_port_free(port)
    # the run's cleanup stopped the server (a Ctrl-C, not an orphan or a SIGKILL); mid-completion on a
    # loaded machine uvicorn may be force-quit before it logs "Finished server process"
    assert "Shutting down" in (out / "teacher-server.log").read_text(errors="replace")


def test_a_teacher_that_dies_mid_run_is_named(tmp_path):
    """Without this the run said only `N teacher calls failed (connection); rerun the same command`."""
    out = tmp_path / "run"
    proc, server = start_run(out)
    try:
        server.send_signal(signal.SIGSEGV)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        f"Error: the embedded teacher died (signal SIGSEGV) during the run; log: {out / 'teacher-server.log'}"
    ], stderr[-3000:]
    assert "dialogues.hhh" in stderr  # the stage's own account comes first
