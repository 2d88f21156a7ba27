"""The tool runner bounds every call: a call past its tool's time limit fails as retryable, a tool
stuck on earlier calls fails fast, and a stopped run (Ctrl-C) does not wait for a hung tool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from datagen.generate.common import PromptRow
from datagen.generate.dialogues import generate_dialogues
from datagen.generate.maker import ToolRunner
from datagen.record import ToolCall, ToolResult
from datagen.tools import Tool, ToolUnavailableError, run_calls
from datagen.tools.base import ToolTimeoutError
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import scripted_teacher

ROOT = Path(__file__).resolve().parents[2]


class BlockingTool(Tool):
    """Blocks each call until `release` is set (or `hold` seconds pass), counting calls in flight."""

    name: ClassVar[str] = "Calculate"
    plugin: ClassVar[str] = "calculator"

    def __init__(self, *, time_limit: float = 0.2, hold: float = 5.0, concurrency: int = 1):
        self.time_limit = time_limit
        self.hold = hold
        self.concurrency = concurrency
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    def run(self, arg: str) -> ToolResult:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if arg != "fast":
                self.release.wait(self.hold)
            return self.ok(arg, "42")
        finally:
            with self.lock:
                self.in_flight -= 1


def test_a_call_past_its_time_limit_fails_instead_of_holding_the_stage():
    # Before, the runner awaited the call for as long as it took (here `hold`, 5 s, then "42").
    tool = BlockingTool(time_limit=0.2)
    runner = ToolRunner({"calculator": tool})
    try:
        with pytest.raises(ToolTimeoutError, match=r'Calculate\("1\+1"\) gave no result within 0.2 s'):
            asyncio.run(runner.run([ToolCall("Calculate", "1+1")]))
        assert isinstance(ToolTimeoutError("x"), ToolUnavailableError)  # a retryable tool failure
    finally:
        tool.release.set()


def test_a_tool_stuck_on_earlier_calls_fails_fast_and_never_runs_two_calls_at_once():
    tool = BlockingTool(time_limit=0.2, hold=30.0, concurrency=1)
    runner = ToolRunner({"calculator": tool})

    async def scenario() -> list[object]:
        # the first call holds the only slot past its limit; the second queued behind it
        first, second = await asyncio.gather(
            runner.run([ToolCall("Calculate", "slow")]),
            runner.run([ToolCall("Calculate", "fast")]),
            return_exceptions=True,
        )
        # while the abandoned call still runs, the tool takes no call (it is not thread safe)
        third = await asyncio.gather(runner.run([ToolCall("Calculate", "fast")]), return_exceptions=True)
        tool.release.set()
        for _ in range(200):  # the abandoned thread ends and hands its slot back
            if tool.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        fourth = await runner.run([ToolCall("Calculate", "fast")])
        return [first, second, third[0], fourth]

    try:
        first, second, third, fourth = asyncio.run(scenario())
    finally:
        tool.release.set()
    assert isinstance(first, ToolTimeoutError)
    assert isinstance(second, ToolUnavailableError) and "stuck" in str(second)
    assert isinstance(third, ToolUnavailableError) and "stuck" in str(third)
    assert [r.output for r in fourth] == ["42"]
    assert tool.max_in_flight == 1 and tool.calls == 2


def test_run_calls_bounds_each_call_too():
    tool = BlockingTool(time_limit=0.2)
    try:
        with pytest.raises(ToolTimeoutError):
            run_calls({"calculator": tool}, [ToolCall("Calculate", "slow")])
        assert run_calls({"calculator": tool}, [ToolCall("Calculate", "fast")])[0].output == "42"
    finally:
        tool.release.set()


class HangingSearch:
    """A search backend that never answers (a socket with no timeout): waits on an event nobody sets."""

    time_limit = 0.3

    def __init__(self) -> None:
        self.never = threading.Event()

    def search(self, query, k=3):
        print("SEARCH-STARTED", flush=True)
        self.never.wait(float(os.environ.get("HANG_SECONDS", "600")))
        return []


def test_a_hung_tool_fails_its_dialogue_as_retryable(fake_openai, tmp_path):
    from datagen.tools.search import SearchTool

    fake_openai.set_responder(scripted_teacher)
    backend = HangingSearch()
    prompt = PromptRow(
        id="t1", text="How tall is Mount Everest?", language="en", category="tool", plugins=["search"]
    )
    threading.Timer(5.0, backend.never.set).start()  # so that a runner without a bound fails, not hangs
    try:
        stats = generate_dialogues(
            [prompt],
            "plugin",
            {"turns": 1},
            make_teacher_config_for(fake_openai),
            tmp_path / "out.jsonl",
            tmp_path / "j.sqlite",
            tools={"search": SearchTool(backend=backend)},
        )
    finally:
        backend.never.set()
    assert stats.counts["failed_tool_unavailable"] == 1 and stats.retryable_failed == 1
    [row] = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert "ToolTimeoutError" in row["detail"] and "gave no result within 0.3 s" in row["detail"]


_CTRL_C_SCRIPT = """
import sys
from datagen.generate.common import PromptRow
from datagen.generate.dialogues import generate_dialogues
from datagen.teacher.config import TeacherConfig
from datagen.tools.search import SearchTool
from tests.generate.test_tool_runner import HangingSearch

backend = HangingSearch()
backend.time_limit = 600  # the runner would wait; only Ctrl-C ends this
teacher = TeacherConfig(base_url=sys.argv[1], model=sys.argv[2], api_key_env="DATAGEN_TEST_TEACHER_KEY",
                        progress=False, timeout=5.0, params={"temperature": 0.7, "max_tokens": 256})
prompt = PromptRow(id="t1", text="How tall is Mount Everest?", language="en", category="tool", plugins=["search"])
generate_dialogues([prompt], "plugin", {"turns": 1}, teacher, sys.argv[3] + "/out.jsonl",
                   sys.argv[3] + "/j.sqlite", tools={"search": SearchTool(backend=backend)})
"""


def test_ctrl_c_stops_a_run_whose_tool_hangs(fake_openai, tmp_path):
    # Before, the interpreter's exit joined the tool thread pool: the stopped run waited for the
    # hung call to return (here HANG_SECONDS; in the field, forever).
    fake_openai.set_responder(scripted_teacher)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HANG_SECONDS": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SCRIPT, fake_openai.base_url, fake_openai.model, str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "SEARCH-STARTED", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the run ignored Ctrl-C while a tool call hung")
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
