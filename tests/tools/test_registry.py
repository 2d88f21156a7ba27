from typing import ClassVar

import pytest

from datagen.errors import ConfigError
from datagen.record import PLUGIN_COMMANDS, ToolCall, ToolResult
from datagen.tools import NO_RESULT, Tool, build_tools, close_tools, get_tool, run_calls, tool_class


class EchoTool(Tool):
    """A user-defined tool loaded by dotted path in the tests."""

    name: ClassVar[str] = "Echo"
    plugin: ClassVar[str] = "echo"

    def __init__(self, *, prefix: str = ""):
        self.prefix = prefix

    def run(self, arg: str) -> ToolResult:
        return self.ok(arg, self.prefix + arg)


def test_builtin_tools_cover_every_moss_plugin():
    for plugin, command in PLUGIN_COMMANDS.items():
        cls = tool_class(plugin)
        assert cls.plugin == plugin and cls.name == command
        assert tool_class(command) is cls


def test_build_tools_from_config():
    tools = build_tools(
        {
            "calculator": {},
            "solver": {"isolate": False},
            "search": None,
            "text2image": False,
            "echo": {"class": "tests.tools.test_registry:EchoTool", "prefix": ">"},
        }
    )
    try:
        assert set(tools) == {"calculator", "solver", "search", "echo"}
        assert tools["calculator"].run("23*47+12").output == "1093"
        assert tools["solver"].run("x+y=500;5x+8y=4000").output == "x = 0\ny = 500"
        assert tools["echo"].run("hi").output == ">hi"
    finally:
        close_tools(tools)
    assert set(build_tools(["calculator", "text2image"])) == {"calculator", "text2image"}
    assert build_tools(None) == {}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: get_tool("weather"), "unknown tool 'weather'"),
        (lambda: get_tool("calculator", precision=3), "unknown option .precision."),
        (lambda: get_tool("tests.tools.test_registry:Nope"), "no attribute"),
        (lambda: get_tool("json:dumps"), "not a datagen.tools.Tool"),
        (lambda: get_tool("no_such_module_xyz:Tool"), "cannot import"),
        (lambda: build_tools({"calculator": 3}), "must be a mapping"),
    ],
)
def test_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_run_calls_numbers_snippets_across_searches():
    tools = build_tools({"search": {}, "calculator": {}})
    calls = [
        ToolCall("Search", "珠穆朗玛峰 高度"),
        ToolCall("Calculate", "8848.86-8844.43"),
        ToolCall("Search", "Eiffel Tower height"),
        ToolCall("Solve", "x=1"),
    ]
    results = run_calls(tools, calls)
    assert [r.name for r in results] == ["Search", "Calculate", "Search", "Solve"]
    first, calc, second, solve = results
    assert first.first_index == 1
    assert second.first_index == 1 + len(first.snippets)
    assert calc.output == "4.430000000000291"
    assert not solve.ok and solve.output == NO_RESULT  # solver not enabled


def test_tool_concurrency_defaults_and_options():
    from datagen.errors import ConfigError
    from datagen.tools import build_tools

    tools = build_tools({"calculator": {}, "solver": {}, "search": {}, "text2image": {}})
    assert {name: t.concurrency for name, t in tools.items()} == {
        "calculator": 1,
        "solver": 1,
        "search": 1,
        "text2image": 1,
    }
    tools = build_tools(
        {
            "search": {"backend": "http", "url": "http://127.0.0.1:9/search"},
            "text2image": {"url": "http://127.0.0.1:9/img", "concurrency": 3},
        }
    )
    assert tools["search"].concurrency == 8 and tools["text2image"].concurrency == 3
    with pytest.raises(ConfigError):
        build_tools({"search": {"concurrency": 0}})
