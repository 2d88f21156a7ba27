"""Plugin tools: calculator, equation solver, search, text-to-image.

    from datagen.tools import build_tools, run_calls
    tools = build_tools({"calculator": {}, "solver": {}, "search": {"docs": "docs.jsonl"}, "text2image": {}})
    tools["calculator"].run("23*47+12").output                        # '1093'
    run_calls(tools, turn.calls)                                       # one turn's ToolResults

Every tool implements `datagen.tools.base.Tool` (`name`, `plugin`, `run(arg) -> ToolResult`); see
that module for the contract and for adding your own. `validate_tool_settings(config["tools"])` checks
a `tools:` section (tool names, option types and ranges) without building anything.
"""

from datagen.tools.base import (
    NO_RESULT,
    Bounds,
    Tool,
    ToolTimeoutError,
    ToolUnavailableError,
    build_tools,
    close_tools,
    get_tool,
    register_tool,
    run_calls,
    tool_class,
    validate_tool_settings,
)

__all__ = [
    "NO_RESULT",
    "Bounds",
    "Tool",
    "ToolTimeoutError",
    "ToolUnavailableError",
    "build_tools",
    "close_tools",
    "get_tool",
    "register_tool",
    "run_calls",
    "tool_class",
    "validate_tool_settings",
]
