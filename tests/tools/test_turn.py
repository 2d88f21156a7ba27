"""One turn's calls give the same results whether the sync `run_calls` or the stage's async
`ToolRunner` runs them: `No result.` for a command no tool answers, snippets numbered across the
turn."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from datagen.generate.maker import ToolRunner
from datagen.record import ToolCall, ToolResult
from datagen.tools import NO_RESULT, Tool, run_calls
from datagen.tools.base import number_snippets, unknown_command


class Snippets(Tool):
    """A search that answers `n` snippets for the argument `n`."""

    name: ClassVar[str] = "Search"
    plugin: ClassVar[str] = "search"

    def run(self, arg: str) -> ToolResult:
        return self.ok(arg, snippets=[f"{arg}-{i}" for i in range(int(arg))])


TURN = [
    ToolCall("Search", "2"),
    ToolCall("Weather", "Paris"),
    ToolCall("Search", "0"),
    ToolCall("Search", "3"),
]


def test_unknown_command_is_what_moss_writes():
    result = unknown_command(ToolCall("Weather", "Paris"))
    assert (result.name, result.arg, result.ok, result.output) == ("Weather", "Paris", False, "No result.")
    assert NO_RESULT == "No result."


def test_number_snippets_continues_across_a_turn():
    results = [
        ToolResult("Search", "a", snippets=["x", "y"]),
        ToolResult("Calculate", "1", output="1"),
        ToolResult("Search", "b", snippets=["z"]),
    ]
    assert [r.first_index for r in number_snippets(results)] == [1, 1, 3]


def test_sync_and_async_runners_give_the_same_turn():
    tools = {"search": Snippets()}
    sync = run_calls(tools, TURN)
    async_ = asyncio.run(ToolRunner(tools).run(TURN))
    assert [r.to_dict() for r in sync] == [r.to_dict() for r in async_]
    assert [(r.ok, r.output, r.first_index, len(r.snippets)) for r in sync] == [
        (True, "", 1, 2),
        (False, NO_RESULT, 1, 0),
        (True, "", 1, 0),
        (True, "", 3, 3),
    ]
