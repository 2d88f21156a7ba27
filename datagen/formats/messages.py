"""OpenAI chat messages <-> `Conversation`, losslessly.

`to_messages(conv)` writes::

    {"id": "16",
     "messages": [
        {"role": "system", "content": <meta instruction>},
        {"role": "user", "content": "..."},
        {"role": "assistant", "content": null, "reasoning_content": <inner thoughts>,
         "tool_calls": [{"id": "call_1_1", "type": "function",
                         "function": {"name": "Search", "arguments": {"query": "..."}}}]},
        {"role": "tool", "tool_call_id": "call_1_1", "content": "<|1|>: 'snippet'"},
        {"role": "assistant", "content": "answer"}],
     "tools": [<function schema of each enabled plugin>],
     "datagen": {<category, plugins, lineage, ... of the Conversation>}}

`arguments` is an object by default (`tool_arguments="object"`): the form Hugging Face chat
templates expect (Qwen2.5, Llama 3.1, LLaMA-Factory's OpenAI path render it with `tojson`, so a
string there comes out double-encoded). `tool_arguments="string"` writes the OpenAI wire form, a
JSON string, as the OpenAI API sends and accepts it. Readers take either.

Inner thoughts travel in `reasoning_content` (the key DeepSeek, vLLM and others use), on the
tool-call message when the turn has commands and on the answer otherwise. Every call gets one tool
message, in call order: the result that echoes it (matched by content when the source lists results
in another order, `match_results`), or `No result.` with `"datagen": {"missing": true}` when the
source has no result for it, so no call is left unanswered. Tool contents are the tool's text:
Search gives its numbered snippets (`<|N|>: ...`, cited by the answer), the others their output.
Anything the plain messages cannot carry (non-canonical raw segments, segments that did not parse
and why, flags, results that do not mirror the calls) rides in a `datagen` key on the turn's
answer, so MOSS -> messages -> MOSS is exact, down to the SFT bytes.

`from_messages` also reads messages written by other tools: system/developer prompts, legacy
`function_call` + `function` messages, content given as a list of text parts, plugin names given
as datagen names (`search`) or MOSS names (`Search`); records without an `id` get a content hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import FormatError
from datagen.formats.commands import NO_RESULT, is_failure, match_results, result_from_block
from datagen.formats.meta import (
    COMMAND_PARAMS,
    build_meta_instruction,
    meta_instruction_for,
    parse_meta_instruction,
)
from datagen.record import PLUGIN_COMMANDS, Conversation, ToolCall, ToolResult, Turn

_TOOL_DESCRIPTIONS = {
    "Search": "Search the web; returns numbered snippets to cite as <sup><|N|></sup>.",
    "Calculate": "Evaluate an arithmetic expression.",
    "Solve": "Solve an equation or a system of equations separated by ';'.",
    "Text2Image": "Generate an image from an English description.",
}


# -- Conversation -> messages --------------------------------------------------------------------


def tool_schemas(plugins: Iterable[str]) -> list[dict[str, Any]]:
    """OpenAI function schemas for these datagen plugin names, in MOSS order."""
    enabled = set(plugins)
    out = []
    for plugin, command in PLUGIN_COMMANDS.items():
        if plugin in enabled:
            param = COMMAND_PARAMS[command]
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": command,
                        "description": _TOOL_DESCRIPTIONS[command],
                        "parameters": {
                            "type": "object",
                            "properties": {param: {"type": "string"}},
                            "required": [param],
                        },
                    },
                }
            )
    return out


#: How `to_messages` writes `tool_calls[].function.arguments`: `object` (Hugging Face chat
#: templates) or `string` (the OpenAI wire form).
TOOL_ARGUMENTS = ("object", "string")


def call_arguments(call: ToolCall, form: str = "string") -> str | dict[str, str]:
    """The `arguments` of a call, `{"query": "..."}` etc.: a JSON string (`form="string"`, the
    OpenAI wire form) or the object itself (`form="object"`, what HF chat templates expect)."""
    if form not in TOOL_ARGUMENTS:
        raise ValueError(f"tool arguments form must be one of {TOOL_ARGUMENTS}, got {form!r}")
    args = {COMMAND_PARAMS.get(call.name, "input"): call.arg}
    return args if form == "object" else json.dumps(args, ensure_ascii=False)


def tool_content(result: ToolResult) -> str:
    """What a tool message says for `result`: Search's numbered snippets (after any text it
    returned), the output for the other tools."""
    if result.name != "Search":
        return result.output
    lines = [result.output] if result.output else []
    lines += [f"<|{result.first_index + j}|>: {s}" for j, s in enumerate(result.snippets)]
    return "\n".join(lines)


def result_from_content(call: ToolCall, content: str) -> ToolResult:
    """Inverse of `tool_content` for a result of `call`."""
    if call.name == "Search":
        return result_from_block("Search", call.arg, None, content.split("\n") if content else [], None)
    return ToolResult(call.name, call.arg, ok=not is_failure(content), output=content)


def conversation_meta(conv: Conversation) -> dict[str, Any]:
    """The Conversation's fields other than id, turns and meta instruction, empty ones left out."""
    d = conv.to_dict()
    for k in ("id", "turns", "meta_instruction", "record_version"):
        d.pop(k, None)
    return {
        k: v
        for k, v in d.items()
        if v not in (None, [], {})
        and not (k == "usage" and not any(v.values()))
        and not (k == "inner_thoughts" and v is False)
    }


def _turn_extras(turn: Turn, results_match: bool) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    flags = [f for f in turn.flags if f != "tool_failed" or all(r.ok for r in turn.results)]
    if flags:
        extras["flags"] = flags
    if turn.raw:
        extras["raw"] = dict(turn.raw)
    if turn.problems:
        extras["problems"] = dict(turn.problems)
    if not results_match:
        extras["results"] = [r.to_dict() for r in turn.results]
    return extras


def answered_calls(turn: Turn) -> list[tuple[ToolCall, ToolResult | None]]:
    """Each call of the turn with the result that answers it (`match_results`), None when the
    source has none."""
    pairing = match_results(turn.calls, turn.results)
    return [(c, None if j is None else turn.results[j]) for c, j in zip(turn.calls, pairing, strict=True)]


def to_messages(
    conv: Conversation, *, metadata: bool = True, tool_arguments: str = "object"
) -> dict[str, Any]:
    """The OpenAI messages record of `conv` (see the module docstring). `metadata=False` leaves
    out the `datagen` keys (conversation metadata, raw segments, flags), for tools that reject
    unknown keys; the result is then exact only for canonical conversations. `tool_arguments`:
    `object` (default; HF chat templates) or `string` (OpenAI wire form)."""
    if tool_arguments not in TOOL_ARGUMENTS:
        raise ValueError(f"tool_arguments must be one of {TOOL_ARGUMENTS}, got {tool_arguments!r}")
    msgs: list[dict[str, Any]] = [{"role": "system", "content": meta_instruction_for(conv)}]
    for i, turn in enumerate(conv.turns, start=1):
        msgs.append({"role": "user", "content": turn.human})
        ids = [f"call_{i}_{j}" for j in range(1, len(turn.calls) + 1)]
        answered = answered_calls(turn)
        contents = [NO_RESULT if r is None else tool_content(r) for _, r in answered]
        rebuilt = [result_from_content(c, text) for c, text in zip(turn.calls, contents, strict=True)]
        if turn.calls:
            m: dict[str, Any] = {"role": "assistant", "content": None}
            if turn.thoughts is not None:
                m["reasoning_content"] = turn.thoughts
            m["tool_calls"] = [
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": c.name, "arguments": call_arguments(c, tool_arguments)},
                }
                for cid, c in zip(ids, turn.calls, strict=True)
            ]
            msgs.append(m)
            for cid, (_, r), text in zip(ids, answered, contents, strict=True):
                tool: dict[str, Any] = {"role": "tool", "tool_call_id": cid, "content": text}
                if r is None and metadata:
                    tool["datagen"] = {"missing": True}
                msgs.append(tool)
        answer: dict[str, Any] = {"role": "assistant", "content": turn.assistant}
        if not turn.calls and turn.thoughts is not None:
            answer["reasoning_content"] = turn.thoughts
        extras = _turn_extras(turn, rebuilt == turn.results)
        if extras and metadata:
            answer["datagen"] = extras
        msgs.append(answer)
    rec: dict[str, Any] = {"id": conv.id, "messages": msgs}
    if conv.plugins:
        rec["tools"] = tool_schemas(conv.plugins)
    if metadata:
        meta = conversation_meta(conv)
        if meta:
            rec["datagen"] = meta
    return rec


# -- events -> Conversation (shared with ShareGPT) -------------------------------------------------


@dataclass(slots=True)
class Event:
    """One message, normalised: `kind` is system, user, calls, tool or assistant; `where` names
    it in the source record (`messages[3]`) for error messages."""

    kind: str
    where: str
    text: str = ""
    thoughts: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    call_ids: list[str | None] = field(default_factory=list)
    call_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def command_name(name: str) -> str:
    """MOSS command name for a tool name given either way (`search` or `Search`)."""
    return PLUGIN_COMMANDS.get(name, PLUGIN_COMMANDS.get(name.lower(), name))


def parse_arguments(name: str, arguments: Any, where: str) -> str:
    """The single argument of a call from its OpenAI `arguments` (JSON string or object)."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments  # a bare string argument
    if isinstance(value, dict):
        param = COMMAND_PARAMS.get(name)
        if param in value:
            value = value[param]
        elif len(value) == 1:
            value = next(iter(value.values()))
        else:
            raise FormatError(
                f"arguments {json.dumps(value, ensure_ascii=False)[:80]} do not give one "
                f"{param or 'input'} value",
                field=where,
            )
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return value


def text_of(content: Any, where: str) -> str:
    """Message content as text: a string, null (empty), or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise FormatError(
                    f"only text content is supported, got part {k} of type "
                    f"{part.get('type') if isinstance(part, dict) else type(part).__name__}",
                    field=f"{where}.content",
                )
        return "".join(parts)
    raise FormatError(f"expected a string, got {type(content).__name__}", field=f"{where}.content")


def content_id(obj: Any) -> str:
    """A stable id for a record without one: 16 hex digits of a hash of its content."""
    data = json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def conversation_from_events(
    events: list[Event], *, id: str, meta: dict[str, Any] | None, tools: list[str] | None
) -> Conversation:
    """Assemble a Conversation from normalised events (see `Event`). Raises FormatError naming
    the event (`messages[3]`) that breaks the user -> [calls -> tools] -> assistant order."""
    system: list[str] = []
    turns: list[Turn] = []
    k = 0
    n = len(events)
    while k < n and events[k].kind == "system":
        system.append(events[k].text)
        k += 1
    if k == n:
        raise FormatError("no user message", field="messages" if not events else events[-1].where)
    while k < n:
        ev = events[k]
        if ev.kind != "user":
            raise FormatError(f"expected a user message, got {ev.kind}", field=ev.where)
        turn = Turn(human=ev.text)
        k += 1
        if k < n and events[k].kind == "calls":
            cev = events[k]
            turn.calls = list(cev.calls)
            turn.thoughts = cev.thoughts
            k += 1
            by_id: dict[str, int] = {cid: j for j, cid in enumerate(cev.call_ids) if cid}
            got: dict[int, ToolResult] = {}
            while k < n and events[k].kind == "tool":
                tev = events[k]
                j = by_id.get(tev.call_id, -1) if tev.call_id else len(got)
                if j < 0 or j >= len(turn.calls) or j in got:
                    raise FormatError(
                        f"tool message for unknown call id {tev.call_id!r}"
                        if tev.call_id
                        else "more tool messages than calls",
                        field=tev.where,
                    )
                got[j] = result_from_content(turn.calls[j], tev.text)
                k += 1
            turn.results = [got[j] for j in sorted(got)]
        if k >= n or events[k].kind != "assistant":
            where = events[k].where if k < n else events[-1].where
            what = events[k].kind if k < n else "the end of the conversation"
            raise FormatError(f"expected the assistant's answer, got {what}", field=where)
        aev = events[k]
        k += 1
        turn.assistant = aev.text
        if not turn.calls and aev.thoughts is not None:
            turn.thoughts = aev.thoughts
        extras = aev.extras
        if "results" in extras:
            turn.results = [ToolResult.from_dict(r) for r in extras["results"]]
        turn.raw = dict(extras.get("raw") or {})
        turn.problems = dict(extras.get("problems") or {})
        turn.flags = list(extras.get("flags") or [])
        if any(not r.ok for r in turn.results) and "tool_failed" not in turn.flags:
            turn.flags.append("tool_failed")
        turns.append(turn)
    meta_text = "\n".join(system) if system else None
    conv = Conversation(id=id, turns=turns)
    if meta:
        base = Conversation.from_dict({**meta, "id": id, "turns": []})
        base.turns = turns
        conv = base
        conv.meta_instruction = meta_text
        if meta_text is not None:
            info = parse_meta_instruction(meta_text)
            if (
                info.canonical
                and set(info.plugins) == set(conv.plugins)
                and info.inner_thoughts == conv.inner_thoughts
            ):
                conv.meta_instruction = None
        return conv
    info = parse_meta_instruction(meta_text) if meta_text is not None else None
    if info is not None and info.has_capabilities:
        conv.plugins, conv.inner_thoughts = list(info.plugins), info.inner_thoughts
        conv.meta_instruction = None if info.canonical else meta_text
    else:
        used = {c.name for t in turns for c in t.calls} | {command_name(t) for t in tools or []}
        conv.plugins = [p for p, c in PLUGIN_COMMANDS.items() if c in used]
        conv.inner_thoughts = any(t.thoughts is not None for t in turns)
        conv.meta_instruction = meta_text
        if meta_text is not None and meta_text == build_meta_instruction(conv.plugins, conv.inner_thoughts):
            conv.meta_instruction = None
    return conv


def _message_events(messages: Any) -> list[Event]:
    if not isinstance(messages, list):
        raise FormatError(f"expected an array, got {type(messages).__name__}", field="messages")
    events: list[Event] = []
    for k, m in enumerate(messages):
        where = f"messages[{k}]"
        if not isinstance(m, dict):
            raise FormatError(f"expected an object, got {type(m).__name__}", field=where)
        role = m.get("role")
        if role in ("system", "developer"):
            events.append(Event("system", where, text_of(m.get("content"), where)))
        elif role == "user":
            events.append(Event("user", where, text_of(m.get("content"), where)))
        elif role == "assistant":
            thoughts = m.get("reasoning_content")
            if thoughts is not None and not isinstance(thoughts, str):
                raise FormatError("expected a string", field=f"{where}.reasoning_content")
            raw_calls = m.get("tool_calls")
            if raw_calls is None and isinstance(m.get("function_call"), dict):
                raw_calls = [{"function": m["function_call"]}]
            if raw_calls:
                if not isinstance(raw_calls, list):
                    raise FormatError("expected an array", field=f"{where}.tool_calls")
                ev = Event("calls", where, thoughts=thoughts)
                content = text_of(m.get("content"), where)
                if content and ev.thoughts is None:
                    ev.thoughts = content  # some tools put the reasoning before a call in content
                for j, tc in enumerate(raw_calls):
                    fn = tc.get("function") if isinstance(tc, dict) else None
                    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                        raise FormatError(
                            "expected {function: {name, arguments}}", field=f"{where}.tool_calls[{j}]"
                        )
                    name = command_name(fn["name"])
                    ev.calls.append(
                        ToolCall(
                            name,
                            parse_arguments(
                                name, fn.get("arguments", ""), f"{where}.tool_calls[{j}].function.arguments"
                            ),
                        )
                    )
                    ev.call_ids.append(tc.get("id"))
                events.append(ev)
            else:
                extras = m.get("datagen") or {}
                if not isinstance(extras, dict):
                    raise FormatError("expected an object", field=f"{where}.datagen")
                events.append(
                    Event(
                        "assistant", where, text_of(m.get("content"), where), thoughts=thoughts, extras=extras
                    )
                )
        elif role in ("tool", "function"):
            events.append(
                Event("tool", where, text_of(m.get("content"), where), call_id=m.get("tool_call_id"))
            )
        else:
            raise FormatError(f"unknown role {role!r}", field=f"{where}.role")
    return events


def _tool_names(tools: Any) -> list[str]:
    names = []
    for t in tools if isinstance(tools, list) else []:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


def record_id(record: dict[str, Any], body_key: str) -> str:
    """`record["id"]` as a string, or a content hash of the body when there is none."""
    rid = record.get("id")
    if isinstance(rid, str | int) and not isinstance(rid, bool):
        return str(rid)
    return content_id(record.get(body_key))


def from_messages(
    record: dict[str, Any], *, path: str | None = None, line: int | None = None
) -> Conversation:
    """Parse an OpenAI messages record (see the module docstring). Raises FormatError naming
    path, line and the offending message (`messages[3].tool_calls[0]`)."""
    with located_errors(path, line):
        if not isinstance(record, dict):
            raise FormatError(f"expected a JSON object, got {type(record).__name__}")
        if "messages" not in record:
            raise FormatError("missing", field="messages")
        meta = record.get("datagen")
        if meta is not None and not isinstance(meta, dict):
            raise FormatError("expected an object", field="datagen")
        conv = conversation_from_events(
            _message_events(record["messages"]),
            id=record_id(record, "messages"),
            meta=meta,
            tools=_tool_names(record.get("tools")),
        )
    return with_source(conv, path)


@contextmanager
def located_errors(path: str | None, line: int | None) -> Iterator[None]:
    """Give every error raised inside the file and line of the record being parsed: FormatErrors
    keep their reason and field; a malformed `datagen` metadata block becomes one."""
    try:
        yield
    except FormatError as exc:
        raise FormatError(exc.reason, path=path, line=line, field=exc.field) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(
            f"malformed datagen metadata: {exc}", path=path, line=line, field="datagen"
        ) from None


def with_source(conv: Conversation, path: str | None) -> Conversation:
    """Record the file a conversation was read from, unless its lineage already names one."""
    if path is not None and not conv.lineage.source:
        conv.lineage.source = str(path)
    return conv
