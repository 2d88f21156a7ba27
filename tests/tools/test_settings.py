"""`validate_tool_settings`: a bad `tools:` section fails when the config is read, naming the option."""

from typing import ClassVar

import pytest

from datagen.errors import ConfigError
from datagen.record import ToolResult
from datagen.tools import Bounds, Tool, get_tool, validate_tool_settings


class SizedTool(Tool):
    """A user tool with typed, bounded options, loaded by dotted path."""

    name: ClassVar[str] = "Sized"
    plugin: ClassVar[str] = "sized"
    bounds: ClassVar[dict[str, Bounds]] = {"size": Bounds(low=1, high=10)}

    def __init__(self, *, size: int = 3, label: str | None = None, weights: dict[str, float] | None = None):
        self.size = size

    def run(self, arg: str) -> ToolResult:
        return self.ok(arg, arg * self.size)


SIZED = "tests.tools.test_settings:SizedTool"


class PlainTool(Tool):
    """A user tool without a constructor: it takes no options."""

    name: ClassVar[str] = "Plain"
    plugin: ClassVar[str] = "plain"

    def run(self, arg: str) -> ToolResult:
        return self.ok(arg, arg)


def test_good_settings_pass():
    validate_tool_settings(
        {
            "calculator": {"max_digits": 200, "max_length": 500},
            "solver": {"timeout": 2.5, "memory_mb": 1024, "isolate": True},
            "search": {"docs": ["a.jsonl", "b.jsonl"], "top_k": 2, "min_relative_score": 0.5},
            "text2image": {"url": "http://127.0.0.1:1/v1/images", "params": {"size": "512x512"}},
            "sized": {"class": SIZED, "size": 10, "label": None, "weights": {"a": 1, "b": 0.5}},
        }
    )
    validate_tool_settings({"calculator": None, "solver": True, "search": False, "text2image": {}})
    validate_tool_settings(
        {"search": {"backend": "http", "url": "http://127.0.0.1:1/search", "method": "post"}}
    )


@pytest.mark.parametrize(
    ("tools", "field", "message"),
    [
        ({"calculator": {"max_digits": "x"}}, "tools.calculator.max_digits", "must be an integer, got 'x'"),
        ({"calculator": {"max_digits": 1.5}}, "tools.calculator.max_digits", "must be an integer"),
        ({"calculator": {"max_digits": True}}, "tools.calculator.max_digits", "must be an integer"),
        ({"calculator": {"max_digits": 0}}, "tools.calculator.max_digits", "at least 1"),
        ({"calculator": {"max_digits": 10**6}}, "tools.calculator.max_digits", "at most 4300"),
        ({"calculator": {"precision": 3}}, "tools.calculator.precision", "unknown option 'precision'"),
        ({"calculator": 3}, "tools.calculator", "must be a mapping"),
        ({"wether": {}}, "tools.wether", "unknown tool 'wether'"),
        ({"weather": {"class": "no_such_module_xyz:Tool"}}, "tools.weather.class", "cannot import"),
        ({"solver": {"timeout": 0}}, "tools.solver.timeout", "greater than 0"),
        ({"solver": {"isolate": "yes"}}, "tools.solver.isolate", "true or false"),
        ({"search": {"top_k": 0}}, "tools.search.top_k", "at least 1"),
        ({"search": {"docs": 3}}, "tools.search.docs", "must be a string"),
        ({"search": {"backend": "bing"}}, "tools.search.backend", "unknown search backend"),
        ({"search": {"backend": "http"}}, "tools.search.url", "needs the option 'url'"),
        (
            {"search": {"backend": "http", "url": "http://h", "timeout": "slow"}},
            "tools.search.timeout",
            "a number",
        ),
        (
            {"search": {"backend": "http", "url": "http://h", "method": "PUT"}},
            "tools.search.method",
            "GET, POST",
        ),
        (
            {"search": {"backend": "http", "url": "http://h", "docs": "d.jsonl"}},
            "tools.search.docs",
            "unknown option",
        ),
        (
            {"text2image": {"headers_env": {"Authorization": 1}}},
            "tools.text2image.headers_env",
            "string values",
        ),
        ({"text2image": {"retries": -1}}, "tools.text2image.retries", "at least 0"),
        ({"sized": {"class": SIZED, "size": 11}}, "tools.sized.size", "at most 10"),
        ({"sized": {"class": SIZED, "weights": {"a": "heavy"}}}, "tools.sized.weights", "number values"),
        (
            {"plain": {"class": "tests.tools.test_settings:PlainTool", "x": 1}},
            "tools.plain.x",
            "options: none",
        ),
    ],
)
def test_bad_settings_name_the_option(tools, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_tool_settings(tools)
    assert info.value.field == field


def test_building_a_tool_checks_the_same_settings():
    # Before, `max_digits: "x"` built a tool whose every call raised a TypeError (a "retryable" failure).
    with pytest.raises(ConfigError, match="must be an integer") as info:
        get_tool("calculator", max_digits="x")
    assert info.value.field == "tools.calculator.max_digits"
