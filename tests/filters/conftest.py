"""Helpers for the filter tests."""

from __future__ import annotations

from datagen.record import Conversation, ToolCall, ToolResult, Turn


def conv(*pairs: tuple[str, str], id: str = "c", category: str | None = None, **kw) -> Conversation:
    """A Conversation from (human, assistant) pairs."""
    return Conversation(id=id, turns=[Turn(human=h, assistant=a) for h, a in pairs], category=category, **kw)


def tool_turn(
    human: str,
    assistant: str,
    *,
    name: str = "Calculate",
    arg: str = "1+1",
    ok: bool = True,
    output: str = "",
    snippets: list[str] | None = None,
) -> Turn:
    """A plugin turn with one call and its result."""
    return Turn(
        human=human,
        assistant=assistant,
        calls=[ToolCall(name, arg)],
        results=[ToolResult(name, arg, ok=ok, output=output, snippets=snippets or [])],
        flags=[] if ok else ["tool_failed"],
    )
