"""ShareGPT (`conversations` of `from`/`value`) <-> `Conversation`, losslessly.

    {"id": "16",
     "conversations": [
        {"from": "system", "value": <meta instruction>},
        {"from": "human", "value": "..."},
        {"from": "function_call", "value": "{\\"name\\": \\"Search\\", \\"arguments\\": {\\"query\\": \\"...\\"}}",
         "reasoning_content": <inner thoughts>},
        {"from": "observation", "value": "<|1|>: 'snippet'"},
        {"from": "gpt", "value": "answer"}],
     "tools": "<JSON string of the function schemas>",
     "datagen": {...}}

This is the LLaMA-Factory flavour: one `function_call` per turn whose value is a JSON object, or a
JSON array of objects for several calls; one `observation` whose value is the tool text, or a
JSON array of texts for several calls (one per call, in call order: a call the source has no
result for reads `No result.`); `tools` as a JSON string. Thoughts, raw segments, parse problems
and flags travel as in `datagen.formats.messages` (`reasoning_content`, and `datagen` on the `gpt`
turn).
A top-level `system` string is read like a system message. Readers also accept `user`/`assistant`/
`tool` as `from` values.
"""

from __future__ import annotations

import json
from typing import Any

from datagen.errors import FormatError
from datagen.formats.messages import (
    Event,
    command_name,
    conversation_from_events,
    located_errors,
    parse_arguments,
    record_id,
    to_messages,
    with_source,
)
from datagen.record import Conversation, ToolCall

_FROM = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "function_call": "calls",
    "observation": "tool",
    "tool": "tool",
}


def to_sharegpt(conv: Conversation, *, metadata: bool = True) -> dict[str, Any]:
    """The ShareGPT record of `conv` (see the module docstring)."""
    m = to_messages(conv, metadata=metadata, tool_arguments="object")
    turns: list[dict[str, Any]] = []
    msgs = m["messages"]
    k = 0
    while k < len(msgs):
        msg = msgs[k]
        role = msg["role"]
        if role == "system":
            turns.append({"from": "system", "value": msg["content"]})
        elif role == "user":
            turns.append({"from": "human", "value": msg["content"]})
        elif role == "assistant" and msg.get("tool_calls"):
            calls = [
                {"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]}
                for tc in msg["tool_calls"]
            ]
            fc: dict[str, Any] = {
                "from": "function_call",
                "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False),
            }
            if "reasoning_content" in msg:
                fc["reasoning_content"] = msg["reasoning_content"]
            turns.append(fc)
            outs = []
            while k + 1 < len(msgs) and msgs[k + 1]["role"] == "tool":
                k += 1
                outs.append(msgs[k]["content"])
            if outs:
                value = outs[0] if len(calls) == 1 else json.dumps(outs, ensure_ascii=False)
                turns.append({"from": "observation", "value": value})
        elif role == "assistant":
            g = {"from": "gpt", "value": msg["content"]}
            g.update({key: msg[key] for key in ("reasoning_content", "datagen") if key in msg})
            turns.append(g)
        k += 1
    rec: dict[str, Any] = {"id": m["id"], "conversations": turns}
    if "tools" in m:
        rec["tools"] = json.dumps(m["tools"], ensure_ascii=False)
    if "datagen" in m:
        rec["datagen"] = m["datagen"]
    return rec


def _calls_from_value(value: Any, where: str) -> list[ToolCall]:
    obj = value
    if isinstance(value, str):
        try:
            obj = json.loads(value)
        except ValueError:
            raise FormatError("value is not JSON", field=f"{where}.value") from None
    items = obj if isinstance(obj, list) else [obj]
    calls = []
    for j, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FormatError(
                "expected {name, arguments}",
                field=f"{where}.value[{j}]" if len(items) > 1 else f"{where}.value",
            )
        name = command_name(item["name"])
        calls.append(
            ToolCall(
                name,
                parse_arguments(name, item.get("arguments", item.get("parameters", "")), f"{where}.value"),
            )
        )
    return calls


def _events(record: dict[str, Any]) -> list[Event]:
    convs = record["conversations"]
    if not isinstance(convs, list):
        raise FormatError(f"expected an array, got {type(convs).__name__}", field="conversations")
    events: list[Event] = []
    if isinstance(record.get("system"), str) and record["system"]:
        events.append(Event("system", "system", record["system"]))
    pending_calls = 0
    for k, m in enumerate(convs):
        where = f"conversations[{k}]"
        if not isinstance(m, dict):
            raise FormatError(f"expected an object, got {type(m).__name__}", field=where)
        who = m.get("from", m.get("role"))
        kind = _FROM.get(who) if isinstance(who, str) else None
        if kind is None:
            raise FormatError(f"unknown sender {who!r}", field=f"{where}.from")
        value = m.get("value", m.get("content"))
        thoughts = m.get("reasoning_content")
        if thoughts is not None and not isinstance(thoughts, str):
            raise FormatError("expected a string", field=f"{where}.reasoning_content")
        if kind == "calls":
            calls = _calls_from_value(value, where)
            events.append(Event("calls", where, thoughts=thoughts, calls=calls, call_ids=[None] * len(calls)))
            pending_calls = len(calls)
            continue
        if not isinstance(value, str):
            raise FormatError(f"expected a string, got {type(value).__name__}", field=f"{where}.value")
        if kind == "tool":
            outs: list[Any] = [value]
            if pending_calls > 1:
                try:
                    outs = json.loads(value)
                except ValueError:
                    outs = None  # type: ignore[assignment]
                if not isinstance(outs, list) or not all(isinstance(o, str) for o in outs):
                    raise FormatError(
                        f"{pending_calls} calls need a JSON array of {pending_calls} results",
                        field=f"{where}.value",
                    )
            events.extend(Event("tool", where, o) for o in outs)
            pending_calls = 0
            continue
        extras = m.get("datagen") or {}
        if not isinstance(extras, dict):
            raise FormatError("expected an object", field=f"{where}.datagen")
        events.append(Event(kind, where, value, thoughts=thoughts, extras=extras))
    return events


def from_sharegpt(
    record: dict[str, Any], *, path: str | None = None, line: int | None = None
) -> Conversation:
    """Parse a ShareGPT record (see the module docstring). Raises FormatError naming path, line
    and the offending entry (`conversations[3].value`)."""
    with located_errors(path, line):
        if not isinstance(record, dict):
            raise FormatError(f"expected a JSON object, got {type(record).__name__}")
        if "conversations" not in record:
            raise FormatError("missing", field="conversations")
        meta = record.get("datagen")
        if meta is not None and not isinstance(meta, dict):
            raise FormatError("expected an object", field="datagen")
        tools = record.get("tools")
        if isinstance(tools, str):
            try:
                tools = json.loads(tools) if tools.strip() else []
            except ValueError:
                raise FormatError("not a JSON string", field="tools") from None
        names = [t.get("function", t).get("name") for t in tools or [] if isinstance(t, dict)]
        conv = conversation_from_events(
            _events(record),
            id=record_id(record, "conversations"),
            meta=meta,
            tools=[n for n in names if isinstance(n, str)],
        )
    return with_source(conv, path)
