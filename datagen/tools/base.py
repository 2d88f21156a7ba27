"""The one interface every plugin tool implements, and the registry that builds tools from config.

A tool turns the argument of one MOSS command into a `datagen.record.ToolResult`:

    from datagen.tools import build_tools, run_calls
    tools = build_tools({"calculator": {}, "search": {"docs": "my_docs.jsonl"}})
    tools["calculator"].run("23*47+12").output        # '1093'

Contract of `Tool.run(arg)`:
- a bad argument (unparsable expression, unsolvable system, a search with no hits) never raises:
  it returns `ok=False, output="No result."`, which is what MOSS writes;
- only an infrastructure failure (the configured HTTP API is down, times out, answers garbage)
  raises `ToolUnavailableError`, so a generator can retry later instead of training a model on a
  fake `No result.`.

Users add their own tool by subclassing `Tool` and either decorating it with `@register_tool`,
exposing it as an entry point in the `datagen.tools` group, or naming it by dotted path in the
config (`{"weather": {"class": "mypkg.tools:WeatherTool", "api": "..."}}`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from datagen.errors import ConfigError, DatagenError
from datagen.record import ToolCall, ToolResult

NO_RESULT = "No result."
ENTRY_POINT_GROUP = "datagen.tools"


class ToolUnavailableError(DatagenError, RuntimeError):
    """A tool's backend (HTTP API, worker process) failed; the call should be retried later."""


class Tool(ABC):
    """A plugin tool. Subclasses set `name` (the MOSS command, e.g. `Calculate`) and `plugin`
    (datagen's plugin name, e.g. `calculator`), take their options as keyword arguments, and
    implement `run`."""

    name: ClassVar[str]
    plugin: ClassVar[str]
    #: how many calls of this tool may run at once across all dialogues. 1 for tools that are not
    #: thread-safe or are CPU-bound here (calculator, solver, local search); HTTP-backed tools set
    #: more, so a slow search API does not serialise every plugin dialogue.
    concurrency: int = 1

    @abstractmethod
    def run(self, arg: str) -> ToolResult:
        """Execute the command on `arg` and return its result (see the module docstring)."""

    def close(self) -> None:  # noqa: B027  (optional hook, most tools hold nothing)
        """Release resources (worker processes, open files). Safe to call twice."""

    def __call__(self, arg: str) -> ToolResult:
        return self.run(arg)

    def __enter__(self) -> Tool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # helpers for subclasses
    def ok(self, arg: str, output: str = "", snippets: list[str] | None = None) -> ToolResult:
        return ToolResult(name=self.name, arg=arg, ok=True, output=output, snippets=list(snippets or []))

    def no_result(self, arg: str) -> ToolResult:
        return ToolResult(name=self.name, arg=arg, ok=False, output=NO_RESULT)


#: plugin name -> Tool class
_REGISTRY: dict[str, type[Tool]] = {}


def register_tool(cls: type[Tool]) -> type[Tool]:
    """Class decorator adding a Tool subclass to the registry under its `plugin` name."""
    for attr in ("name", "plugin"):
        if not isinstance(getattr(cls, attr, None), str):
            raise TypeError(f"{cls.__name__} must set the class attribute `{attr}` to a string")
    _REGISTRY[cls.plugin] = cls
    return cls


def _load_builtins() -> None:
    # importing the modules runs their @register_tool decorators
    from datagen.tools import calculator, search, solver, text2image  # noqa: F401


def _load_dotted(path: str) -> type[Tool]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"tool class {path!r} must look like 'package.module:ClassName'", field="class")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for tool {path!r}: {exc}", field="class") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}", field="class")
    if not (isinstance(obj, type) and issubclass(obj, Tool)):
        raise ConfigError(f"{path!r} is not a datagen.tools.Tool subclass", field="class")
    return obj


def tool_class(name: str) -> type[Tool]:
    """Resolve a tool class from a plugin name (`calculator`), a MOSS command name (`Calculate`),
    an entry point name in the `datagen.tools` group, or a dotted path `pkg.module:Class`."""
    if ":" in name:
        return _load_dotted(name)
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for cls in _REGISTRY.values():
        if cls.name == name:
            return cls
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Tool)):
                raise ConfigError(
                    f"entry point {ep.value!r} is not a datagen.tools.Tool subclass", field=name
                )
            return cls
    known = ", ".join(sorted(_REGISTRY))
    raise ConfigError(f"unknown tool {name!r} (known: {known}; or give 'package.module:Class')", field=name)


def get_tool(name: str, **config: Any) -> Tool:
    """Build one tool: `get_tool("calculator")`, `get_tool("search", docs="docs.jsonl")`.
    Unknown options raise ConfigError naming the option."""
    cls = tool_class(name)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"bad options for tool {name!r}: {exc}", field=name) from None


def build_tools(config: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Tool]:
    """Build the enabled tools, keyed by plugin name.

    `config` maps a plugin name to its options: a dict (passed to the constructor; the key
    `class` picks another implementation, e.g. `"pkg.mod:MySearch"`), `True`/`None`/`{}` for the
    defaults, or `False` to disable it. A plain list of plugin names builds each with defaults.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        config = {name: {} for name in config}
    tools: dict[str, Tool] = {}
    for key, options in config.items():
        if options is False:
            continue
        if options is None or options is True:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"options of tool {key!r} must be a mapping, got {type(options).__name__}",
                field=f"tools.{key}",
            )
        options = dict(options)
        cls_name = options.pop("class", None) or key
        tool = get_tool(cls_name, **options)
        tools[tool.plugin if cls_name == key and ":" not in key else key] = tool
    return tools


def run_calls(tools: Mapping[str, Tool], calls: Iterable[ToolCall]) -> list[ToolResult]:
    """Run one turn's commands in order and return their results.

    Calls are matched to tools by MOSS command name; a command with no enabled tool gets
    `No result.`. Search snippet numbers (`first_index`) continue across the searches of the turn,
    as MOSS numbers `<|1|>`, `<|2|>`, ... Raises ToolUnavailableError if a backend is down.
    """
    by_command = {t.name: t for t in tools.values()}
    results: list[ToolResult] = []
    next_index = 1
    for call in calls:
        tool = by_command.get(call.name)
        if tool is None:
            result = ToolResult(name=call.name, arg=call.arg, ok=False, output=NO_RESULT)
        else:
            result = tool.run(call.arg)
        if result.snippets:
            result.first_index = next_index
            next_index += len(result.snippets)
        results.append(result)
    return results


def close_tools(tools: Mapping[str, Tool]) -> None:
    """Close every tool of a `build_tools` result."""
    for tool in tools.values():
        tool.close()
