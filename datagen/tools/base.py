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
  fake `No result.`;
- a call returns within the tool's `time_limit` seconds. The runners (`run_calls`,
  `datagen.generate.maker.ToolRunner`) run each call in a daemon thread and give up on it after
  that (`ToolTimeoutError`), so a hung backend never holds up a stage or Ctrl-C. A thread cannot be
  killed, and one stuck in C code holds the GIL, so in-process tools must also bound their own
  work (the calculator checks every operation before it runs; the solver runs sympy in a worker
  process it kills on timeout).

Users add their own tool by subclassing `Tool` and either decorating it with `@register_tool`,
exposing it as an entry point in the `datagen.tools` group, or naming it by dotted path in the
config (`{"weather": {"class": "mypkg.tools:WeatherTool", "api": "..."}}`).

A tool's options are its constructor's keyword arguments: their annotations give their types and
the class attribute `bounds` their ranges, so `validate_tool_settings` can reject a bad `tools:`
section when the config is loaded, before any stage has been paid for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import threading
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from datagen.errors import ConfigError, DatagenError
from datagen.formats.commands import NO_RESULT
from datagen.record import ToolCall, ToolResult

ENTRY_POINT_GROUP = "datagen.tools"


class ToolUnavailableError(DatagenError, RuntimeError):
    """A tool's backend (HTTP API, worker process) failed; the call should be retried later."""


class ToolTimeoutError(ToolUnavailableError):
    """A call ran past its tool's `time_limit` and was given up on (its thread ends on its own)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where a numeric option must lie (`low <= v <= high`, `v > above`) or, for a string option,
    the values it may take."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of bounds, or None."""
        if self.choices and isinstance(value, str) and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if self.above is not None and not value > self.above:
            return f"must be greater than {self.above:g}, got {value!r}"
        if self.low is not None and value < self.low:
            return f"must be at least {self.low:g}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"must be at most {self.high:g}, got {value!r}"
        return None


@dataclass(frozen=True, slots=True)
class Setting:
    """One option a tool takes: its type (the constructor's annotation) and its bounds."""

    annotation: Any = Any
    bounds: Bounds = Bounds()
    required: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this option, or None."""
        if not _matches(value, self.annotation):
            return f"must be {_describe(self.annotation)}, got {value!r} ({type(value).__name__})"
        return self.bounds.problem(value)


@dataclass(slots=True)
class SettingsSchema:
    """The options of a tool, by name. `open` when it also takes options it does not name (a
    `**kwargs` constructor), which then go unchecked."""

    settings: dict[str, Setting] = field(default_factory=dict)
    open: bool = False


def constructor_settings(cls: type, bounds: Mapping[str, Bounds] | None = None) -> SettingsSchema:
    """The options `cls(...)` takes, read from its constructor's signature and annotations, with
    `bounds` (by option name) added."""
    bounds = bounds or {}
    if cls.__init__ is object.__init__:  # no constructor: no options
        return SettingsSchema()
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: check names, not types
        hints = {}
    schema = SettingsSchema()
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind is param.VAR_KEYWORD:
            schema.open = True
        elif param.kind is not param.VAR_POSITIONAL:
            schema.settings[param.name] = Setting(
                annotation=hints.get(param.name, Any),
                bounds=bounds.get(param.name, Bounds()),
                required=param.default is param.empty,
            )
    return schema


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(annotation)))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    args = typing.get_args(annotation)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if len(args) == 2 and args[1] is not Any:
            return f"a mapping with {_describe(args[1]).removeprefix('a ').removeprefix('an ')} values"
        return "a mapping"
    if origin in (list, tuple, Sequence) or annotation in (list, tuple, Sequence):
        if len(args) == 1 and args[0] is not Any:
            return f"a list of ({_describe(args[0])})"
        return "a list"
    if annotation is os.PathLike or origin is os.PathLike:
        return "a path"
    if annotation in _NAMES:
        return _NAMES[annotation]
    return f"a {getattr(annotation, '__name__', annotation)}"


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a config value fits an annotation. Unknown or unresolved annotations accept
    anything: the constructor has the last word."""
    if annotation is Any or isinstance(annotation, str | typing.TypeVar):
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        return True
    if origin in (list, tuple, Sequence) or annotation in (list, tuple, Sequence):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            return False
        return len(args) != 1 or all(_matches(v, args[0]) for v in value)
    check = origin if isinstance(origin, type) else annotation
    if not isinstance(check, type):
        return True
    try:
        return isinstance(value, check)
    except TypeError:  # a Protocol that is not runtime-checkable
        return True


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
    #: the most seconds one call may take before the runner gives up on it (ToolTimeoutError).
    #: Tools with timeouts of their own (HTTP requests, the solver's worker) set it above them.
    time_limit: float = 120.0
    #: ranges of the constructor's numeric options and choices of its string ones, by option name
    bounds: ClassVar[Mapping[str, Bounds]] = {}

    @classmethod
    def settings(cls, options: Mapping[str, Any]) -> SettingsSchema:
        """The options this tool accepts (by default its constructor's). A tool whose options
        depend on one of them (search's `backend`) overrides this and looks at `options`."""
        return constructor_settings(cls, cls.bounds)

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


def check_options(cls: type[Tool], options: Mapping[str, Any], where: str) -> None:
    """Check options against `cls.settings(options)`; ConfigError with field `<where>.<option>`."""
    try:
        schema = cls.settings(options)
    except ConfigError as exc:  # a tool's own check names the option; place it under `where`
        raise ConfigError(exc.reason, field=f"{where}.{exc.field}" if exc.field else where) from None
    for key, value in options.items():
        setting = schema.settings.get(key)
        if setting is None:
            if schema.open:
                continue
            known = ", ".join(schema.settings) or "none"
            raise ConfigError(
                f"unknown option {key!r} for tool {cls.plugin!r} (options: {known})", field=f"{where}.{key}"
            )
        problem = setting.problem(value)
        if problem:
            raise ConfigError(problem, field=f"{where}.{key}")
    for key, setting in schema.settings.items():
        if setting.required and key not in options:
            raise ConfigError(f"tool {cls.plugin!r} needs the option {key!r}", field=f"{where}.{key}")


def validate_tool_settings(tools: Mapping[str, Any]) -> None:
    """Check a config's `tools:` section without building anything: every tool exists (a plugin
    name, an entry point, or a `class: pkg.module:Class`) and every option is one its class takes,
    of the right type and within its bounds. Raises ConfigError with field `tools.<name>.<option>`."""
    if not isinstance(tools, Mapping):
        raise ConfigError(
            f"tools must be a mapping of tool name to options, got {type(tools).__name__}", field="tools"
        )
    for key, options in tools.items():
        where = f"tools.{key}"
        if options is False or options is None or options is True:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"options of tool {key!r} must be a mapping, got {type(options).__name__}", field=where
            )
        options = dict(options)
        cls_name = options.pop("class", None) or key
        if not isinstance(cls_name, str):
            raise ConfigError(
                f"must be a string like 'package.module:Class', got {cls_name!r}", field=f"{where}.class"
            )
        try:
            cls = tool_class(cls_name)
        except ConfigError as exc:
            raise ConfigError(exc.reason, field=where + (".class" if cls_name != key else "")) from None
        check_options(cls, options, where)


def get_tool(name: str, **config: Any) -> Tool:
    """Build one tool: `get_tool("calculator")`, `get_tool("search", docs="docs.jsonl")`.
    Unknown options and options of the wrong type or out of range raise ConfigError naming the
    option."""
    return _build(name, f"tools.{name}", config)


def _build(cls_name: str, where: str, options: Mapping[str, Any]) -> Tool:
    cls = tool_class(cls_name)
    check_options(cls, options, where)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for tool {cls_name!r}: {exc}", field=where) from None


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
        tool = _build(cls_name, f"tools.{key}", options)
        tools[tool.plugin if cls_name == key and ":" not in key else key] = tool
    return tools


def call_in_thread(
    tool: Tool, arg: str, on_done: Callable[[ToolResult | None, BaseException | None], None]
) -> threading.Thread:
    """Start `tool.run(arg)` in a daemon thread; `on_done(result, error)` is called from that
    thread when it returns or raises. Daemon, so a call that never returns cannot keep the process
    alive after the run is stopped."""

    def work() -> None:
        try:
            result = tool.run(arg)
        except BaseException as exc:  # handed to the waiting side, which re-raises it
            on_done(None, exc)
        else:
            on_done(result, None)

    thread = threading.Thread(target=work, name=f"datagen-tool-{tool.plugin}", daemon=True)
    thread.start()
    return thread


def time_limit_of(tool: Any) -> float:
    """The seconds one call of `tool` may take: its `time_limit` when it is a positive number."""
    limit = getattr(tool, "time_limit", None)
    ok = isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0
    return float(limit) if ok else Tool.time_limit


def timed_out(tool: Any, arg: str, limit: float) -> ToolTimeoutError:
    """The error of a call given up on after `limit` seconds."""
    shown = arg if len(arg) <= 80 else arg[:77] + "..."
    return ToolTimeoutError(f'{tool.name}("{shown}") gave no result within {limit:g} s')


def run_call(tool: Tool, arg: str) -> ToolResult:
    """Run one call within its tool's `time_limit` (ToolTimeoutError past it)."""
    done = threading.Event()
    box: list[Any] = []

    def on_done(result: ToolResult | None, error: BaseException | None) -> None:
        box.extend((result, error))
        done.set()

    call_in_thread(tool, arg, on_done)
    limit = time_limit_of(tool)
    if not done.wait(limit):
        raise timed_out(tool, arg, limit)
    result, error = box
    if error is not None:
        raise error
    return result


def unknown_command(call: ToolCall) -> ToolResult:
    """The result of a command no enabled tool answers: `No result.`, as MOSS writes."""
    return ToolResult(name=call.name, arg=call.arg, ok=False, output=NO_RESULT)


def number_snippets(results: list[ToolResult]) -> list[ToolResult]:
    """Number the search snippets of one turn's results (in order) the way MOSS does, `<|1|>`,
    `<|2|>`, ... continuing across the turn's searches: each result with snippets gets the
    `first_index` after the previous one's. Returns `results`."""
    next_index = 1
    for result in results:
        if result.snippets:
            result.first_index = next_index
            next_index += len(result.snippets)
    return results


def run_calls(tools: Mapping[str, Tool], calls: Iterable[ToolCall]) -> list[ToolResult]:
    """Run one turn's commands in order and return their results.

    Calls are matched to tools by MOSS command name; a command with no enabled tool gets
    `unknown_command`'s `No result.`. Snippets are numbered across the turn (`number_snippets`).
    Raises ToolUnavailableError if a backend is down, and ToolTimeoutError for a call past its
    tool's `time_limit`. `datagen.generate.maker.ToolRunner.run` is the same loop, on an event loop.
    """
    by_command = {t.name: t for t in tools.values()}
    results = []
    for call in calls:
        tool = by_command.get(call.name)
        results.append(unknown_command(call) if tool is None else run_call(tool, call.arg))
    return number_snippets(results)


def close_tools(tools: Mapping[str, Tool]) -> None:
    """Close every tool of a `build_tools` result."""
    for tool in tools.values():
        tool.close()
