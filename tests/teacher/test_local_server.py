"""The embedded teacher for real: llama-cpp-python's server with the packaged SmolLM2-135M GGUF on
127.0.0.1 answers a completion through datagen's own client path; a server that dies before or
during its first completion is named with its signal (or exit code) and its log; and killing
`datagen serve-teacher` by SIGTERM or SIGKILL leaves no server behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from datagen.errors import DatagenError
from datagen.teacher.config import TeacherConfig
from datagen.teacher.engine import TeacherEngine
from datagen.teacher.local_server import DEFAULT_MODEL_ALIAS, start_local_teacher, wait_ready
from datagen.teacher.preflight import check_teacher
from datagen.teacher.types import Request

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_port_free(port: int, timeout: float = 20.0) -> bool:
    """True once nothing listens on `port`. A killed server's main thread turns zombie before its
    other threads have exited and released the socket, so this can lag `wait_gone` a little."""
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_the_embedded_teacher_answers_a_completion_through_the_engine(tmp_path):
    log = tmp_path / "teacher-server.log"
    with start_local_teacher(port=free_port(), log_path=log, ready_timeout=300) as teacher:
        assert teacher.model_alias == DEFAULT_MODEL_ALIAS
        config = TeacherConfig(
            base_url=teacher.base_url,
            model=teacher.model_alias,
            concurrency=1,
            timeout=120,
            max_attempts=1,
            progress=False,
        )
        check_teacher(config)

        async def one() -> object:
            async with TeacherEngine(config, journal_path=tmp_path / "journal.sqlite") as engine:
                return await engine.complete(
                    Request(
                        messages=[{"role": "user", "content": "Say hello."}],
                        params={"max_tokens": 8},
                        require_complete=False,
                    )
                )

        result = asyncio.run(one())
        assert result.ok, result
        assert result.text.strip()
        assert teacher.death() is None
        pid = teacher.process.pid
    assert wait_gone(pid)
    assert str(tmp_path) not in log.read_text(errors="replace")  # run from the model's folder


def test_readiness_names_a_server_that_dies_in_its_first_completion(tmp_path):
    """The llama.cpp AMX crash, reenacted: the model list answers, the first completion segfaults.
    A readiness check that only lists models calls such a server ready."""
    port = free_port()
    log = tmp_path / "teacher-server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.teacher.segv_server", str(port)],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        with pytest.raises(DatagenError) as err:
            wait_ready(f"http://127.0.0.1:{port}/v1", proc, timeout=60, log="outputs/demo/teacher-server.log")
    finally:
        proc.kill()
        proc.wait()
    assert str(err.value) == (
        "the embedded teacher died (signal SIGSEGV) during its first completion; "
        "log: outputs/demo/teacher-server.log"
    )
    assert "ggml_backend_amx_mul_mat" in log.read_text()


def test_a_model_that_does_not_load_is_named_with_its_exit_code_and_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)  # a header, then nothing
    log = tmp_path / "teacher-server.log"
    with pytest.raises(DatagenError) as err:
        start_local_teacher(str(bad), port=free_port(), log_path=log, ready_timeout=120)
    message = str(err.value)
    assert message.startswith("the embedded teacher died (exit code ")
    assert message.endswith(f") while starting; log: {log}")
    assert "\n" not in message
    assert log.read_text(errors="replace").strip()  # the server said why, in its log


def serve_teacher(tmp_path: Path, port: int) -> tuple[subprocess.Popen, psutil.Process]:
    """`datagen serve-teacher` in a subprocess, once it serves; returns it and its llama server."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datagen",
            "serve-teacher",
            "--port",
            str(port),
            "--log",
            str(tmp_path / "server.log"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # printed once the server has answered a completion
    assert line.startswith(f"serving {DEFAULT_MODEL_ALIAS} at http://127.0.0.1:{port}/v1"), (
        line,
        proc.stderr.read() if proc.poll() is not None else "",
    )
    children = psutil.Process(proc.pid).children(recursive=True)
    servers = [c for c in children if "llama_cpp.server" in " ".join(c.cmdline())]
    assert len(servers) == 1, children
    return proc, servers[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_serve_teacher_leaves_no_server(tmp_path, sig):
    port = free_port()
    proc, server = serve_teacher(tmp_path, port)
    assert not port_is_free(port)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not wait_gone(server.pid, timeout=30):
            server.kill()
            pytest.fail(
                f"the llama server {server.pid} outlived `datagen serve-teacher` killed by {sig.name}"
            )
    assert wait_port_free(port)
    if sig == signal.SIGTERM:
        # Handled like Ctrl-C: the server was asked to stop and shut down cleanly (not killed by
        # the kernel when its parent went), and serve-teacher exited normally.
        assert proc.returncode == 0, proc.stderr.read()
        assert "Finished server process" in (tmp_path / "server.log").read_text(errors="replace")
    else:
        assert proc.returncode == -signal.SIGKILL


def test_the_installed_server_has_no_amx_or_avx512_kernels():
    """llama.cpp 0.3.36's AMX matmul segfaults on the first completion (issue 20824): the wheel make
    builds leaves AMX (and AVX-512, which AMX needs) out. A natively built wheel on a Sapphire Rapids
    machine, say from pip's cache, lists AMX_INT8 here."""
    import llama_cpp

    assert llama_cpp.__version__ == "0.3.36"
    features = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in features, features
    assert "AMX" not in features and "AVX512" not in features, features
