import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from datagen.tools import NO_RESULT
from datagen.tools.solver import SolveError, SolveTool, solve_equations

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4x+12=116", "x = 26"),
        ("y-8=0", "y = 8"),
        ("x+y=500;5x+8y=4000", "x = 0\ny = 500"),
        # MOSS's released sample: 15 significant digits for non-integers
        ("y=(5/4)*(x-y);y-40=(1/10)*(x-y+40)", "x = 86.0869565217391\ny = 47.8260869565217"),
        ("x = 1/3", "x = 0.333333333333333"),
        ("0.5(x+1)=3", "x = 5"),
        ("x^2=4", "x = -2\nx = 2"),
        ("x^3-6x^2+11x-6=0", "x = 1\nx = 2\nx = 3"),
        ("x^2+y^2=25；x+y=7", "x = 3\ny = 4\nx = 4\ny = 3"),
        ("2^x=8", "x = 3"),
        ("sqrt(x)=3", "x = 9"),
        ("a+b+c=6;a-b=1;b-c=1", "a = 3\nb = 2\nc = 1"),
        ("ｘ＋１＝３", "x = 2"),
        ("x^2-2", "x = -1.41421356237310\nx = 1.41421356237310"),  # no `=` means `= 0`
    ],
)
def test_solutions(text, expected):
    assert solve_equations(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x+y=5000;0.08=0.01(x*r+y*r)", "infinitely many"),  # MOSS's sample: No result.
        ("x+y=2", "infinitely many"),
        ("x+y=2;x+y=3", "no real solution"),
        ("x=x+1", "contradictory"),
        ("x^2=-1", "no real solution"),
        ("2=2", "no unknowns"),
        ("__import__('os')", "not allowed"),
        ("x.__class__=1", "not allowed"),
        ("lambda=1", "not allowed"),
        ("x==", "not an equation"),
        ("x+*=2", "cannot parse"),
        ("", "no equation"),
    ],
)
def test_no_result_reasons(text, reason):
    with pytest.raises(SolveError, match=reason):
        solve_equations(text)


@pytest.fixture(scope="module")
def isolated():
    tool = SolveTool(timeout=1.0, memory_mb=512)
    yield tool
    tool.close()


def test_isolated_worker_solves_and_survives_a_runaway_input(isolated):
    ok = isolated.run("x+y=500;5x+8y=4000")
    assert ok.ok and ok.output == "x = 0\ny = 500" and ok.name == "Solve"
    runaway = isolated.run("x = 10^10^10")  # sympy would build a 10-billion-digit integer
    assert not runaway.ok and runaway.output == NO_RESULT
    assert isolated.last_reason in ("time limit", "memory limit", "worker died")
    again = isolated.run("4x+12=116")  # a fresh worker takes over
    assert again.ok and again.output == "x = 26"


def test_in_process_mode_gives_no_result():
    tool = SolveTool(isolate=False)
    result = tool.run("x+y=2")
    assert not result.ok and result.output == NO_RESULT
    assert "infinitely many" in tool.last_reason


def test_a_worker_that_cannot_start_is_an_error_not_no_result(monkeypatch):
    import shutil
    import sys

    from datagen.tools import ToolUnavailableError

    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    tool = SolveTool(timeout=1.0)
    with pytest.raises(ToolUnavailableError, match="did not start"):
        tool.run("x=1")
    tool.close()


_PARENT_SCRIPT = """
import threading
from datagen.tools.solver import SolveTool

tool = SolveTool(timeout=300.0)

def call(text):
    # tool calls come from short-lived threads (the tool runner starts one per call)
    t = threading.Thread(target=tool.run, args=(text,))
    t.start()
    return t

call("x=1").join()  # starts the worker; the thread that asked for it ends here
first = tool._worker._proc.pid
call("x=2").join()
assert tool._worker._proc.pid == first, "the worker died with the thread that started it"
call("x = 10^10^9")  # keeps the worker busy for minutes
print(first, flush=True)
threading.Event().wait()
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_the_worker_dies_with_the_process_that_started_it():
    # Before, a `datagen run` killed with SIGKILL left its solver worker computing, and a resume
    # started a second one beside it.
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    worker = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), parent.stderr.read() if parent.stderr else ""
        worker = int(line)
        for _ in range(
            100
        ):  # until the busy solve has reached the worker (an idle one would exit at EOF anyway)
            if psutil.Process(worker).status() == psutil.STATUS_RUNNING:
                break
            time.sleep(0.1)
        assert psutil.Process(worker).status() == psutil.STATUS_RUNNING
        parent.kill()
        parent.wait()
        for _ in range(100):
            if _gone(worker):
                break
            time.sleep(0.1)
        assert _gone(worker), "the solver worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if worker is not None and not _gone(worker):
            os.kill(worker, signal.SIGKILL)
