"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from datagen.errors import InputError, PublishError
from datagen.record import (
    Conversation,
    Lineage,
    ToolCall,
    ToolResult,
    Turn,
    Usage,
)

#: Configs in the order cards list them; a conversation's config is its `kind`.
CONFIGS = ("hhh", "plugin")
SPLITS = ("train", "validation")


#: Turn.raw keys (MOSS SFT segment names) <-> the `raw` struct's column names.
RAW_FIELDS = {
    "Human": "human",
    "Inner Thoughts": "inner_thoughts",
    "Commands": "commands",
    "Tool Responses": "tool_responses",
    "MOSS": "moss",
}


def score_types(convs: Iterable[Conversation]) -> dict[str, str]:
    """`scores` key -> `float64` (every value a number) or `string` (anything else, stored as JSON),
    over all conversations, keys sorted. Decides the typed `scores` struct of the parquet files."""
    kinds: dict[str, str] = {}
    for conv in convs:
        for key, value in conv.scores.items():
            numeric = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            if not numeric or kinds.get(key) == "string":
                kinds[key] = "string"
            else:
                kinds.setdefault(key, "float64")
    return dict(sorted(kinds.items()))


#: The keys an OpenAI message of `to_messages(metadata=False)` may have, and those of one tool call:
#: the `messages` column is a list of structs with exactly these fields (null where a message has
#: no such key).
MESSAGE_FIELDS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id")
TOOL_CALL_FIELDS = ("id", "type", "function")
FUNCTION_FIELDS = ("name", "arguments")


def dataset_features(scores: dict[str, str] | None = None):
    """The `datasets.Features` of every config: the MOSS record (turns as a nested feature), the
    OpenAI messages (a list of structs, see `MESSAGE_FIELDS`; a tool call's `arguments` is the JSON
    string of the OpenAI wire form) and tool schemas (JSON strings),
    lineage, usage, and a typed `scores` struct (see `score_types`; left out when no row has scores).

    Only plain Arrow types (strings, numbers, bools, lists, structs): `datasets` 3.6 to 5.x and any
    parquet reader load them as they are (the `Json` feature needs `datasets>=4.7`). Free-form parts
    (tool schemas, `lineage.params`, `tags`, `extra`, non-numeric scores) are JSON strings, which also
    give back exactly what was published (0.7 stays 0.7)."""
    from datasets import Features, List, Value

    string = Value("string")
    call = {"name": string, "arg": string}
    result = {
        "name": string,
        "arg": string,
        "ok": Value("bool"),
        "output": string,
        "snippets": List(string),
        "first_index": Value("int32"),
    }
    turn = {
        "human": string,
        "thoughts": string,
        "calls": List(call),
        "results": List(result),
        "assistant": string,
        "flags": List(string),
        "raw": {name: string for name in RAW_FIELDS.values()},
    }
    tool_call = {"id": string, "type": string, "function": {name: string for name in FUNCTION_FIELDS}}
    message = {
        "role": string,
        "content": string,
        "reasoning_content": string,
        "tool_calls": List(tool_call),
        "tool_call_id": string,
    }
    lineage = {
        "teacher_model": string,
        "template_version": string,
        "params": string,
        "seed_id": string,
        "source": string,
        "source_id": string,
        "parents": List(string),
        "run": string,
    }
    usage = {
        "prompt_tokens": Value("int64"),
        "completion_tokens": Value("int64"),
        "cost": Value("float64"),
        "calls": Value("int64"),
    }
    columns: dict[str, Any] = {
        "id": string,
        "category": string,
        "language": string,
        "plugins": List(string),
        "inner_thoughts": Value("bool"),
        "meta_instruction": string,
        "num_turns": Value("int32"),
        "turns": List(turn),
        "messages": List(message),
        "tools": List(string),
        "lineage": lineage,
        "usage": usage,
    }
    if scores:
        columns["scores"] = {k: Value(t) for k, t in scores.items()}
    columns["tags"] = string
    columns["extra"] = string
    return Features(columns)


def _only(value: dict[str, Any], fields: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise PublishError(
            f"{what} has key(s) {unknown} the dataset schema lacks (known: {', '.join(fields)}); "
            "a datagen bug, please report it"
        )


def message_row(message: dict[str, Any], where: str = "message") -> dict[str, Any]:
    """One OpenAI message as a `messages` struct: every field of `MESSAGE_FIELDS`, null where absent.
    Raises PublishError on a key the schema lacks (it would be lost)."""
    _only(message, MESSAGE_FIELDS, where)
    row = {k: message.get(k) for k in MESSAGE_FIELDS}
    calls = message.get("tool_calls")
    if calls is not None:
        row["tool_calls"] = []
        for i, call in enumerate(calls):
            _only(call, TOOL_CALL_FIELDS, f"{where} tool call {i}")
            function = call.get("function") or {}
            _only(function, FUNCTION_FIELDS, f"{where} tool call {i} function")
            row["tool_calls"].append(
                {
                    "id": call.get("id"),
                    "type": call.get("type"),
                    "function": {k: function.get(k) for k in FUNCTION_FIELDS},
                }
            )
    return row


def row_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI messages of a published row, as `to_messages(conv, metadata=False,
    tool_arguments="string")` made them: null fields left out, except `content` (null on an
    assistant message that only calls tools)."""

    def clean(value: Any, keep: tuple[str, ...] = ()) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None or k in keep}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(m, keep=("content",)) for m in row.get("messages") or []]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _formats():
    """The format modules publishing needs (imported late: `datagen --help` stays fast)."""
    from datagen.formats import messages, moss

    return moss, messages


def conversation_to_row(conv: Conversation, scores: dict[str, str] | None = None) -> dict[str, Any]:
    """One parquet row (python values, JSON columns already encoded): the MOSS record with its meta
    instruction made explicit, the same dialogue as OpenAI messages, lineage, usage, scores, tags.
    `scores` is the `score_types` mapping the features were built with."""
    _, messages = _formats()
    from datagen.formats.meta import meta_instruction_for

    unknown_raw = [k for t in conv.turns for k in t.raw if k not in RAW_FIELDS]
    if unknown_raw:
        raise InputError(f"conversation {conv.id!r}: unknown raw segment key(s) {sorted(set(unknown_raw))}")
    lin = conv.lineage
    # arguments as the OpenAI JSON string: an object's keys differ by tool, which no Arrow type holds
    chat = messages.to_messages(conv, metadata=False, tool_arguments="string")
    row: dict[str, Any] = {
        "id": conv.id,
        "category": conv.category,
        "language": conv.language,
        "plugins": list(conv.plugins),
        "inner_thoughts": conv.inner_thoughts,
        "meta_instruction": meta_instruction_for(conv),
        "num_turns": len(conv.turns),
        "turns": [
            {
                "human": t.human,
                "thoughts": t.thoughts,
                "calls": [{"name": c.name, "arg": c.arg} for c in t.calls],
                "results": [
                    {
                        "name": r.name,
                        "arg": r.arg,
                        "ok": r.ok,
                        "output": r.output,
                        "snippets": list(r.snippets),
                        "first_index": r.first_index,
                    }
                    for r in t.results
                ],
                "assistant": t.assistant,
                "flags": list(t.flags),
                "raw": {col: t.raw.get(key) for key, col in RAW_FIELDS.items()},
            }
            for t in conv.turns
        ],
        "messages": [
            message_row(m, f"conversation {conv.id!r} message {i}") for i, m in enumerate(chat["messages"])
        ],
        "tools": [_json(t) for t in chat.get("tools") or []],
        "lineage": {
            "teacher_model": lin.teacher_model,
            "template_version": lin.template_version,
            "params": _json(lin.params) if lin.params else None,
            "seed_id": lin.seed_id,
            "source": lin.source,
            "source_id": lin.source_id,
            "parents": list(lin.parents),
            "run": lin.run,
        },
        "usage": conv.usage.to_dict(),
    }
    missing = set(conv.scores) - set(scores or {})
    if missing:
        raise InputError(
            f"conversation {conv.id!r}: scores {sorted(missing)} are not among the dataset's score "
            "columns (pass every conversation to `score_types`)"
        )
    if scores:
        row["scores"] = {
            k: (None if (v := conv.scores.get(k)) is None else float(v) if t == "float64" else _json(v))
            for k, t in scores.items()
        }
    row["tags"] = _json(conv.tags) if conv.tags else None
    row["extra"] = _json(conv.extra) if conv.extra else None
    return row


def row_to_conversation(row: dict[str, Any]) -> Conversation:
    """The Conversation a published row holds (as `datasets` or pyarrow returns it): renders to the
    same MOSS text as the conversation it was built from. Raises KeyError/TypeError/ValueError on a
    malformed row."""
    turns = []
    for t in row["turns"]:
        raw = t.get("raw") or {}
        turns.append(
            Turn(
                human=t["human"],
                assistant=t["assistant"],
                thoughts=t["thoughts"],
                calls=[ToolCall(name=c["name"], arg=c["arg"]) for c in t.get("calls") or []],
                results=[
                    ToolResult(
                        name=r["name"],
                        arg=r["arg"],
                        ok=bool(r["ok"]),
                        output=r["output"] or "",
                        snippets=list(r.get("snippets") or []),
                        first_index=int(r.get("first_index") or 1),
                    )
                    for r in t.get("results") or []
                ],
                flags=list(t.get("flags") or []),
                raw={key: raw[col] for key, col in RAW_FIELDS.items() if raw.get(col) is not None},
            )
        )
    lin = dict(row.get("lineage") or {})
    lin["params"] = _loads(lin.get("params")) or {}
    usage = row.get("usage") or {}
    scores = {}
    for k, v in (row.get("scores") or {}).items():
        if v is not None:
            scores[k] = _loads(v) if isinstance(v, str) else v
    return Conversation(
        id=str(row["id"]),
        turns=turns,
        category=row.get("category"),
        language=row.get("language"),
        plugins=list(row.get("plugins") or []),
        inner_thoughts=bool(row.get("inner_thoughts")),
        meta_instruction=row.get("meta_instruction"),
        lineage=Lineage.from_dict({k: v for k, v in lin.items() if v is not None}),
        usage=Usage.from_dict({k: v for k, v in usage.items() if v is not None}),
        scores=scores,
        tags=_loads(row.get("tags")) or {},
        extra=_loads(row.get("extra")) or {},
    )
