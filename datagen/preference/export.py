"""Preference pairs as files: TRL's conversational format and MOSS text.

`pairs.jsonl`, one pair per line, TRL's conversational preference format with an explicit prompt
(loads with `datasets.load_dataset("json", ...)` and goes to `trl.DPOTrainer` as it is):

    {"id": "plugin-7#0:teacher@0.7>contrastive:ignore_results",
     "prompt":   [{"role": "system", "content": <meta instruction>}, {"role": "user", ...}, ...],
     "chosen":   [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}],
     "tools": "<JSON list of the enabled tools' function schemas>" | null,
     "margin": 3.5,
     "datagen": {"source_id", "turn", "kind", "language", "category", "origin": "judge" | "review",
                 "chosen_source", "rejected_source", "contrastive", "judge": {...} | null, ...}}

The prompt is everything the two sides share: on most pairs the dialogue up to the answer
(commands and tool results included), on `wrong_command` pairs the dialogue up to the user's
message, the completion then holding the commands, their results and the answer. Tool-call
`arguments` are JSON strings (OpenAI's wire form, one Arrow type whatever the tool) and `tools` is
one JSON string, which TRL decodes itself.

`pairs.moss.jsonl`: the same pairs as MOSS 003 text (`prompt`, `chosen`, `rejected`), rendered by
datagen's MOSS renderer; the prompt ends where the two sides' segments part. This is also TRL's
standard (text) preference format.

Pairs a reviewer made by editing an answer (`review/pairs.jsonl`) are read with `review_row`,
which brings them to the same schema (`origin: "review"`, no margin).
"""

from __future__ import annotations

import json
from typing import Any

from datagen.errors import InputError
from datagen.formats.messages import from_messages, to_messages, tool_schemas
from datagen.formats.moss import meta_instruction_for, parse_text, turn_segments
from datagen.record import Conversation, Turn

#: Top-level keys of an exported pair, in order.
PAIR_KEYS = ("id", "prompt", "chosen", "rejected", "tools", "margin", "datagen")


def tools_json(plugins: list[str]) -> str | None:
    """The enabled tools' OpenAI function schemas as one JSON string (None without tools)."""
    return json.dumps(tool_schemas(plugins), ensure_ascii=False) if plugins else None


def _with_turn(conv: Conversation, index: int, turn: Turn) -> Conversation:
    out = Conversation.from_dict(conv.to_dict())
    out.turns = out.turns[:index] + [Turn.from_dict(turn.to_dict())]
    return out


def _common(a: list[Any], b: list[Any]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def split_messages(chosen: Conversation, rejected: Conversation) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) messages of two versions of a dialogue that differ in the last
    turn: the prompt is their common head, which ends at the user's message at the latest."""
    mc = to_messages(chosen, metadata=False, tool_arguments="string")["messages"]
    mr = to_messages(rejected, metadata=False, tool_arguments="string")["messages"]
    n = min(_common(mc, mr), len(mc) - 1, len(mr) - 1)
    return mc[:n], mc[n:], mr[n:]


def trl_row(
    conv: Conversation,
    index: int,
    chosen: Turn,
    rejected: Turn,
    *,
    pair_id: str,
    margin: float | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One pair of `conv`'s turn `index` in TRL's conversational format (see the module
    docstring); `meta` joins the `datagen` key."""
    prompt, yes, no = split_messages(_with_turn(conv, index, chosen), _with_turn(conv, index, rejected))
    info = {
        "source_id": conv.id,
        "turn": index,
        "kind": conv.kind,
        "language": conv.language,
        "category": conv.category,
        **meta,
    }
    return {
        "id": pair_id,
        "prompt": prompt,
        "chosen": yes,
        "rejected": no,
        "tools": tools_json(conv.plugins),
        "margin": margin,
        "datagen": info,
    }


def conversations_of(
    row: dict[str, Any], *, path: str | None = None, line: int | None = None
) -> tuple[Conversation, Conversation]:
    """The two dialogues a pair stands for (prompt + chosen, prompt + rejected), from TRL's
    conversational form or from MOSS text. Raises InputError naming path, line and field."""
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            raise InputError("missing", path=path, line=line, field=key)
    prompt = row["prompt"]
    if isinstance(prompt, str):
        for key in ("chosen", "rejected"):
            if not isinstance(row[key], str):
                raise InputError("a text prompt needs a text completion", path=path, line=line, field=key)
        return (
            parse_text(prompt + row["chosen"], id=str(row.get("id", "0"))),
            parse_text(prompt + row["rejected"], id=str(row.get("id", "0"))),
        )
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            raise InputError("not a JSON list of tool schemas", path=path, line=line, field="tools") from None
    out = []
    for key in ("chosen", "rejected"):
        if not isinstance(prompt, list) or not isinstance(row[key], list):
            raise InputError(
                "must be a list of chat messages",
                path=path,
                line=line,
                field=key if isinstance(prompt, list) else "prompt",
            )
        record = {"id": str(row.get("id", "0")), "messages": [*prompt, *row[key]]}
        if tools:
            record["tools"] = tools
        out.append(from_messages(record, path=path, line=line))
    return out[0], out[1]


def moss_texts(chosen: Conversation, rejected: Conversation) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) as MOSS text: the segments both share, then each side's rest."""

    def segments(conv: Conversation) -> list[str]:
        return [meta_instruction_for(conv)] + [s for t in conv.turns for _, s in turn_segments(t, conv)]

    sc, sr = segments(chosen), segments(rejected)
    n = min(_common(sc, sr), len(sc) - 1, len(sr) - 1)
    return "".join(sc[:n]), "".join(sc[n:]), "".join(sr[n:])


def moss_row(row: dict[str, Any]) -> dict[str, Any]:
    """A pair as MOSS text (TRL's standard text form): id, prompt, chosen, rejected, margin."""
    prompt, yes, no = moss_texts(*conversations_of(row))
    info = row.get("datagen") or {}
    return {
        "id": row["id"],
        "prompt": prompt,
        "chosen": yes,
        "rejected": no,
        "margin": row.get("margin"),
        "source_id": info.get("source_id"),
        "turn": info.get("turn"),
    }


def _string_arguments(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed = []
    for call in calls:
        function = dict(call.get("function") or {})
        if not isinstance(function.get("arguments"), str):
            function["arguments"] = json.dumps(function.get("arguments"), ensure_ascii=False)
        fixed.append({**call, "function": function})
    return {**message, "tool_calls": fixed}


def review_row(pair: dict[str, Any], *, path: str | None = None, line: int | None = None) -> dict[str, Any]:
    """A reviewer's pair (`review/pairs.jsonl`: edited answer chosen, original rejected) in the
    exported schema: tool-call arguments and `tools` as JSON strings, `origin: "review"`."""
    if not isinstance(pair, dict):
        raise InputError("a pair must be a JSON object", path=path, line=line)
    conv, _ = conversations_of(pair, path=path, line=line)
    info = dict(pair.get("datagen") or {})
    source = str(info.get("source_id", pair.get("id", "")))
    tools = pair.get("tools")
    meta = {
        "source_id": source,
        "turn": info.get("turn"),
        "kind": conv.kind,
        "language": conv.language,
        "category": conv.category,
        "origin": "review",
        "chosen_source": "review_edit",
        "rejected_source": "original",
        "contrastive": None,
        "judge": None,
        "who": info.get("who"),
        "when": info.get("when"),
    }
    return {
        "id": str(pair.get("id", source)),
        "prompt": [_string_arguments(m) for m in pair["prompt"]],
        "chosen": [_string_arguments(m) for m in pair["chosen"]],
        "rejected": [_string_arguments(m) for m in pair["rejected"]],
        "tools": tools if isinstance(tools, str) or tools is None else json.dumps(tools, ensure_ascii=False),
        "margin": None,
        "datagen": meta,
    }
