"""MOSS 003 text and SFT records <-> `Conversation`.

A turn is five segments, each `<|Role|>: ` + text + end tag + `\\n`::

    ("Human", "<|Human|>: hi<eoh>\\n"), ("Inner Thoughts", "<|Inner Thoughts|>: None<eot>\\n"),
    ("Commands", "<|Commands|>: None<eoc>\\n"), ("Tool Responses", "<|Results|>: None<eor>\\n"),
    ("MOSS", "<|MOSS|>: hello<eom>\\n")

How byte-exact round trips work: parsing keeps a segment's original string in `Turn.raw[key]`
only when the canonical rendering of the parsed fields differs from it (e.g. `Search("a"), None`,
an unquoted Calculate value). When rendering, a raw segment is used only if parsing it again
gives exactly the turn's current fields; once a field is edited the raw string no longer matches
and the canonical form is written. `raw[key] == ""` means the segment was absent in the input
(only `parse_text` produces that, for prompts without the thoughts/commands/results triple); the
three absent segments come back together or not at all. Raw strings are only checked against the
fields, so the check costs a parse of the (rare) non-canonical segments at render time.

The meta instruction follows the same rule: `Conversation.meta_instruction` stays None when the
text equals `build_meta_instruction(plugins, inner_thoughts)` (saving ~1.3 kB per JSONL row) and
holds the exact text otherwise (e.g. the trailing space after `disabled.`); `meta_instruction_for`
drops a kept text once `plugins` or `inner_thoughts` no longer match it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from datagen.errors import FormatError
from datagen.formats.commands import (
    parse_commands,
    parse_results,
    render_commands,
    render_results,
    salvage_commands,
    salvage_results,
)
from datagen.formats.issues import Issue
from datagen.formats.meta import (
    MetaInfo,
    build_meta_instruction,
    meta_instruction_for,
    parse_meta_instruction,
)
from datagen.record import COMMAND_PLUGINS, Conversation, ToolCall, ToolResult, Turn

#: SFT key -> (role tag, end tag), in turn order. The Tool Responses key carries the Results tag.
SEGMENTS: dict[str, tuple[str, str]] = {
    "Human": ("<|Human|>:", "<eoh>"),
    "Inner Thoughts": ("<|Inner Thoughts|>:", "<eot>"),
    "Commands": ("<|Commands|>:", "<eoc>"),
    "Tool Responses": ("<|Results|>:", "<eor>"),
    "MOSS": ("<|MOSS|>:", "<eom>"),
}
SFT_KEYS: tuple[str, ...] = tuple(SEGMENTS)
END_TAGS: tuple[str, ...] = tuple(end for _, end in SEGMENTS.values())
_TAG_KEY = {tag: key for key, (tag, _) in SEGMENTS.items()}
#: Any MOSS tag: text containing one cannot be rendered and parsed back.
TAG_RE = re.compile(r"<eo[htcrm]>|<\|(?:Human|Inner Thoughts|Commands|Results|MOSS)\|>:")
_ROLE_RE = re.compile(r"<\|(?:Human|Inner Thoughts|Commands|Results|MOSS)\|>:")
_SFT_ORDER = ("conversation_id", "meta_instruction", "num_turns", "chat", "category")


# -- segments ------------------------------------------------------------------------------------


def segment_body(key: str, segment: str, *, issues: list[Issue] | None = None) -> str:
    """The text of a Human / Inner Thoughts / Commands / MOSS segment (tag, one space and the end
    tag removed). Raises FormatError (field = key) on a wrong tag or a missing end tag."""
    tag, end = SEGMENTS[key]
    if not isinstance(segment, str):
        raise FormatError(f"expected a string, got {type(segment).__name__}", field=key)
    if not segment.startswith(tag):
        m = _ROLE_RE.match(segment)
        if m and m.group() != tag:
            raise FormatError(f"expected {tag!r}, found {m.group()!r} (segments out of order?)", field=key)
        raise FormatError(f"does not start with {tag!r}: {segment[:30]!r}", field=key)
    body = segment[len(tag) :]
    if body.endswith(end + "\n"):
        body = body[: -len(end) - 1]
    else:
        stripped = body.rstrip()
        if not stripped.endswith(end):
            found = [t for t in END_TAGS if stripped.endswith(t)]
            hint = f", found {found[0]}" if found else ""
            raise FormatError(f"missing end tag {end}{hint}", field=key)
        if issues is not None:
            issues.append(Issue(f"{end} not followed by exactly one newline", key, noise=True))
        body = stripped[: -len(end)]
    if body.startswith(" "):
        body = body[1:]
    elif issues is not None:
        issues.append(Issue(f"no space after {tag}", key, noise=True))
    return body


def _render_segment(key: str, text: str) -> str:
    tag, end = SEGMENTS[key]
    return f"{tag} {text}{end}\n"


def canonical_segments(turn: Turn, plugin_style: bool) -> list[tuple[str, str]]:
    """The five (SFT key, segment) pairs of `turn` in canonical form, ignoring `turn.raw`."""
    return [
        ("Human", _render_segment("Human", turn.human)),
        (
            "Inner Thoughts",
            _render_segment("Inner Thoughts", "None" if turn.thoughts is None else turn.thoughts),
        ),
        ("Commands", _render_segment("Commands", render_commands(turn.calls))),
        ("Tool Responses", render_results(turn.results, plugin_style)),
        ("MOSS", _render_segment("MOSS", turn.assistant)),
    ]


def _loose_body(segment: str) -> str:
    """The text of a segment that `segment_body` refuses: a leading role tag (any), one space, and
    a trailing end tag (any) with the newline after it are removed when present."""
    m = _ROLE_RE.match(segment)
    body = segment[m.end() :] if m else segment
    body = body.removesuffix("\n")
    for end in END_TAGS:
        if body.rstrip().endswith(end):
            body = body.rstrip()[: -len(end)]
            break
    return body[1:] if body.startswith(" ") else body


def _read_segment(key: str, segment: str, calls: list[ToolCall], *, loose: bool) -> Any:
    """The field(s) a segment gives: strictly by the grammar (raises FormatError), or `loose`ly,
    recovering what it can from a segment outside the grammar (never raises)."""
    if key == "Tool Responses":
        return salvage_results(segment, calls) if loose else parse_results(segment, calls)
    body = _loose_body(segment) if loose else segment_body(key, segment)
    if key == "Commands":
        return salvage_commands(body) if loose else parse_commands(body)
    if key == "Inner Thoughts":
        return None if body == "None" else body
    return body


def _field(key: str, turn: Turn) -> Any:
    if key == "Human":
        return turn.human
    if key == "Inner Thoughts":
        return turn.thoughts
    if key == "Commands":
        return turn.calls
    if key == "Tool Responses":
        return turn.results
    return turn.assistant


def _raw_matches(key: str, raw: str, turn: Turn) -> bool:
    """True when parsing `raw` gives back exactly the turn's current field(s) for `key`: by the
    grammar, or, for a segment recorded in `turn.problems` (and the results of malformed commands),
    the way the reader recovered it."""
    if raw == "":
        return {
            "Inner Thoughts": turn.thoughts is None,
            "Commands": not turn.calls,
            "Tool Responses": not turn.results,
        }.get(key, False)
    want = _field(key, turn)
    try:
        if _read_segment(key, raw, turn.calls, loose=False) == want:
            return True
    except FormatError:
        pass
    loose = key in turn.problems or (key == "Tool Responses" and "Commands" in turn.problems)
    return loose and _read_segment(key, raw, turn.calls, loose=True) == want


def turn_segments(turn: Turn, conv: Conversation) -> list[tuple[str, str]]:
    """The five (SFT key, segment string) pairs of `turn` in order, as they are written to disk and
    tokenised: Human, Inner Thoughts, Commands, Tool Responses, MOSS. Uses `turn.raw` where it
    still matches the fields (see the module docstring). A segment absent in the parsed input
    comes back as an empty string."""
    segs = canonical_segments(turn, bool(conv.plugins))
    if turn.raw:
        use = {k for k, raw in turn.raw.items() if _raw_matches(k, raw, turn)}
        absent = {k for k, raw in turn.raw.items() if raw == ""}
        if absent - use:  # absent thoughts/commands/results come back all together or not at all
            use -= absent
        segs = [(k, turn.raw[k] if k in use else s) for k, s in segs]
    return segs


def render_turn(turn: Turn, conv: Conversation) -> str:
    """One turn as MOSS text."""
    return "".join(s for _, s in turn_segments(turn, conv))


def render_text(conv: Conversation) -> str:
    """The whole dialogue as MOSS text: meta instruction, then every turn."""
    return meta_instruction_for(conv) + "".join(render_turn(t, conv) for t in conv.turns)


# -- parsing turns -------------------------------------------------------------------------------


def _fail(
    issues: list[Issue] | None, reason: str, *, turn: int | None = None, field: str | None = None
) -> None:
    if issues is None:
        where = [p for p in (f"turn {turn}" if turn is not None else None, field) if p]
        raise FormatError(reason, field=": ".join(where) or None)
    issues.append(Issue(reason, field, turn))


_NONE_THOUGHTS = "<|Inner Thoughts|>: None<eot>\n"
_NONE_COMMANDS = "<|Commands|>: None<eoc>\n"
_NONE_RESULTS = ("<|Results|>: None<eor>\n", "<|Results|>:\nNone\n<eor>\n")  # [plugin_style]


def parse_turn(
    segments: dict[str, str],
    *,
    plugin_style: bool,
    issues: list[Issue] | None = None,
    turn_no: int | None = None,
) -> Turn:
    """Build a Turn from its (SFT key -> segment) strings; absent keys mean absent segments.

    Segments that differ from their canonical rendering are kept in `Turn.raw`. Turns with a
    failed tool get the flag `tool_failed`. A segment outside the grammar does not stop the turn:
    it is kept verbatim in `Turn.raw`, why it did not parse goes to `Turn.problems` (and to
    `issues`, as an error with `recovered=True`), and its fields hold what could be recovered
    (`salvage_commands`, `salvage_results`). Deviations that parse are reported in `issues` as
    noise.
    """
    local: list[Issue] = []
    problems: dict[str, str] = {}
    # keys whose input may differ from the canonical rendering; a Human/Thoughts/MOSS segment that
    # parsed without noise is canonical by construction, so only these are rendered and compared
    check: list[str] = []

    def read(key: str, calls: list[ToolCall]) -> Any:
        seg = segments.get(key, "")
        n = len(local)
        try:
            if key == "Tool Responses":
                value = parse_results(seg, calls, issues=local)
            elif key == "Commands":
                value = parse_commands(segment_body(key, seg, issues=local), issues=local)
            else:
                value = segment_body(key, seg, issues=local)
                if key == "Inner Thoughts" and value == "None":
                    value = None
        except FormatError as exc:
            problems[key] = exc.reason
        if key in problems or (key == "Tool Responses" and "Commands" in problems):
            del local[n:]  # noise of a segment read loosely says nothing
            return _read_segment(key, seg, calls, loose=True)
        if len(local) > n:
            check.append(key)
        return value

    human = read("Human", [])
    it = segments.get("Inner Thoughts", "")
    thoughts = None
    if it != _NONE_THOUGHTS:  # the None forms are most turns: skip parsing them
        if it != "":
            thoughts = read("Inner Thoughts", [])
        if it == "" or thoughts is None:
            check.append("Inner Thoughts")
    cmd = segments.get("Commands", "")
    calls: list[ToolCall] = []
    if cmd != _NONE_COMMANDS:
        if cmd != "":
            calls = read("Commands", [])
        check.append("Commands")
    res = segments.get("Tool Responses", "")
    results: list[ToolResult] = []
    if res != _NONE_RESULTS[plugin_style]:
        if res != "" and res != _NONE_RESULTS[not plugin_style]:
            results = read("Tool Responses", calls)
        check.append("Tool Responses")
    assistant = read("MOSS", [])
    turn = Turn(human=human, assistant=assistant, thoughts=thoughts, calls=calls, results=results)
    if any(not r.ok for r in results):
        turn.flags.append("tool_failed")
    if check:
        canon = dict(canonical_segments(turn, plugin_style))
        for key in dict.fromkeys(check):
            seg = segments.get(key, "")
            if seg != canon[key]:
                turn.raw[key] = seg
    if problems:
        turn.problems = {k: problems[k] for k in SFT_KEYS if k in problems}
        for key in turn.problems:
            turn.raw[key] = segments.get(key, "")
        turn.raw = {k: turn.raw[k] for k in SFT_KEYS if k in turn.raw}
    if issues is not None:
        issues.extend(i.at(turn=turn_no) for i in local)
        issues.extend(Issue(r, k, turn_no, recovered=True) for k, r in turn.problems.items())
    return turn


# -- SFT records ---------------------------------------------------------------------------------


def _plugins_for(info: MetaInfo | None, turns: Iterable[Turn]) -> tuple[list[str], bool, bool]:
    """(plugins, inner_thoughts, meta_is_canonical) from a parsed meta instruction, falling back to
    the commands and thoughts actually used when the text has no capability lines."""
    if info is not None:
        if info.has_capabilities:
            return list(info.plugins), info.inner_thoughts, info.canonical
    turns = list(turns)
    used = {COMMAND_PLUGINS[c.name] for t in turns for c in t.calls if c.name in COMMAND_PLUGINS}
    plugins = [p for p in ("search", "calculator", "solver", "text2image") if p in used]
    return plugins, any(t.thoughts is not None for t in turns), False


def sft_to_conversation(record: Any, *, issues: list[Issue] | None = None) -> Conversation | None:
    """Parse an SFT record. With `issues=None` the first problem of the record's structure (keys,
    types, turn count) raises FormatError; with a list, every problem is appended and None is
    returned when the structure is broken. A segment outside the MOSS grammar never stops the
    record: it is kept verbatim and recorded (`parse_turn`; an Issue with `recovered=True`)."""
    n_before = len(issues) if issues is not None else 0

    def fatal() -> bool:  # segment problems (recovered) leave the record readable
        return issues is not None and any(not i.noise and not i.recovered for i in issues[n_before:])

    if not isinstance(record, dict):
        _fail(issues, f"expected a JSON object, got {_json_type(record)}")
        return None
    for key in ("conversation_id", "meta_instruction", "num_turns", "chat"):
        if key not in record:
            _fail(issues, "missing", field=key)
    if fatal():
        return None
    cid = record.get("conversation_id")
    if cid is not None and (isinstance(cid, bool) or not isinstance(cid, int | str)):
        _fail(issues, f"expected a string or integer, got {_json_type(cid)}", field="conversation_id")
    meta = record.get("meta_instruction")
    info: MetaInfo | None = None
    if meta is not None and not isinstance(meta, str):
        _fail(issues, f"expected a string, got {_json_type(meta)}", field="meta_instruction")
        meta = None
    elif meta is not None:
        info = parse_meta_instruction(meta)  # once per record: hashing a fresh 1 kB string is not free
    if info is not None and issues is not None:
        issues.extend(Issue(p, "meta_instruction") for p in info.problems)
        issues.extend(Issue(p, "meta_instruction", noise=True) for p in info.notes)
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        _fail(issues, f"expected a string, got {_json_type(category)}", field="category")
    chat = record.get("chat")
    if chat is not None and not isinstance(chat, dict):
        _fail(issues, f"expected an object of turn_N keys, got {_json_type(chat)}", field="chat")
        chat = None
    chat = chat or {}
    num_turns = record.get("num_turns")
    if num_turns is not None:
        if isinstance(num_turns, bool) or not isinstance(num_turns, int):
            _fail(issues, f"expected an integer, got {_json_type(num_turns)}", field="num_turns")
        elif num_turns != len(chat):
            _fail(issues, f"is {num_turns} but chat has {len(chat)} turns", field="num_turns")
    if "chat" in record and not chat and isinstance(record.get("chat"), dict):
        _fail(issues, "has no turns", field="chat")
    expected = [f"turn_{i}" for i in range(1, len(chat) + 1)]
    if list(chat) != expected:
        if sorted(chat) == sorted(expected):
            _fail(issues, "turn keys are out of order", field="chat")
        else:
            bad = [k for k in chat if k not in expected][:3]
            _fail(issues, f"unexpected key(s) {bad}; expected turn_1..turn_{len(chat)}", field="chat")
    plugin_style = bool(info and info.plugins)
    turns: list[Turn] = []
    for n, (key, segs) in enumerate(chat.items(), start=1):
        if not isinstance(segs, dict):
            _fail(issues, f"expected an object, got {_json_type(segs)}", turn=n, field=key)
            continue
        keys = list(segs)
        missing = [k for k in SFT_KEYS if k not in segs]
        extra = [k for k in keys if k not in SEGMENTS]
        if missing or extra:
            if missing:
                _fail(issues, f"missing key(s) {missing}", turn=n)
            if extra:
                _fail(issues, f"unknown key(s) {extra}", turn=n)
            continue
        if keys != list(SFT_KEYS):
            _fail(issues, f"keys out of order: {keys}", turn=n)
            continue
        bad_type = [k for k in SFT_KEYS if not isinstance(segs[k], str)]
        if bad_type:
            _fail(
                issues, f"expected a string, got {_json_type(segs[bad_type[0]])}", turn=n, field=bad_type[0]
            )
            continue
        turns.append(parse_turn(segs, plugin_style=plugin_style, issues=issues, turn_no=n))
    if fatal():
        return None
    plugins, inner_thoughts, canonical = _plugins_for(info, turns)
    conv = Conversation(
        id=str(cid),
        turns=turns,
        category=category,
        plugins=plugins,
        inner_thoughts=inner_thoughts,
        meta_instruction=None if canonical else meta,
    )
    keep_source_id(conv, cid)
    unknown = {k: v for k, v in record.items() if k not in _SFT_ORDER}
    if "category" in record and category is None:
        unknown = {"category": None, **unknown}
    if unknown:  # any JSON at all: kept as one string so that every row has the same column types
        conv.extra["sft_fields_json"] = json.dumps(unknown, ensure_ascii=False)
    order = list(record)
    if order != [k for k in _SFT_ORDER if k in record] + [k for k in unknown if k != "category"]:
        conv.extra["sft_key_order"] = order
    return conv


#: `Conversation.extra` keys that keep the source's `conversation_id` (always a string, so that every
#: row of a JSONL file has the same types, as Arrow-based readers such as `datasets` require) and
#: its JSON type when that was not a string (`int` or `null`), for byte-exact SFT output.
SOURCE_ID, SOURCE_ID_TYPE = "conversation_id", "conversation_id_type"


def keep_source_id(conv: Conversation, cid: Any) -> None:
    """Record the source's `conversation_id` in `conv.extra` (see `SOURCE_ID`) when `to_sft`
    could not rebuild it from `conv.id`."""
    conv.extra.pop(SOURCE_ID, None)
    conv.extra.pop(SOURCE_ID_TYPE, None)
    if isinstance(cid, int) and not isinstance(cid, bool):
        conv.extra[SOURCE_ID] = str(cid)
        conv.extra[SOURCE_ID_TYPE] = "int"
    elif cid is None:
        conv.extra[SOURCE_ID_TYPE] = "null"
    elif str(cid) != conv.id:
        conv.extra[SOURCE_ID] = str(cid)


def source_id(conv: Conversation) -> int | str | None:
    """The `conversation_id` `to_sft` writes: the source's, with its type, when recorded (rows
    written before ids were kept as strings may hold an integer), else `conv.id`."""
    orig = conv.extra.get(SOURCE_ID)
    kind = conv.extra.get(SOURCE_ID_TYPE)
    if orig is None and kind == "null":
        return None
    if isinstance(orig, int) and not isinstance(orig, bool):
        return orig
    if isinstance(orig, str):
        if kind == "int" and re.fullmatch(r"-?[1-9][0-9]*|0", orig):
            return int(orig)
        return orig
    return conv.id


def from_sft(
    record: dict[str, Any], *, path: str | None = None, line: int | None = None, id: str | None = None
) -> Conversation:
    """Parse one MOSS SFT record (`conversation_id`, `meta_instruction`, `num_turns`, `chat`,
    optional `category`). Raises FormatError naming path, line and field on a malformed record.

    `conv.id` is `id` when given, else `str(conversation_id)`. The original `conversation_id` is
    kept in `conv.extra` (as a string, its type beside it: see `SOURCE_ID`) whenever it is not a
    string or differs from `conv.id`, and `to_sft` writes it back as it was.
    (`read_conversations` passes the file name as `id` for one-record files: upstream numbers
    conversations per folder, so `conversation_id` repeats across categories.) Unknown top-level
    keys are kept as one JSON string in `conv.extra["sft_fields_json"]`.

    Segments outside the MOSS grammar do not raise: they are kept verbatim, with why, in
    `Turn.raw` and `Turn.problems` (see `parse_turn`), so every record with MOSS's keys is read
    and written back byte for byte; `datagen validate` reports them.
    """
    try:
        conv = sft_to_conversation(record)
    except FormatError as exc:
        raise FormatError(exc.reason, path=path, line=line, field=exc.field) from None
    assert conv is not None
    cid = record["conversation_id"]
    if id is not None:
        conv.id = str(id)
    keep_source_id(conv, cid)
    if path is not None:
        conv.lineage.source = str(path)
        conv.lineage.source_id = str(cid)
    return conv


def _sft_fields(conv: Conversation) -> dict[str, Any]:
    text = conv.extra.get("sft_fields_json")
    if text is None:
        return dict(conv.extra.get("sft_fields") or {})  # rows written before the JSON string
    try:
        fields = json.loads(text)
    except (TypeError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        raise FormatError("expected a JSON object in a string", field="extra.sft_fields_json")
    return fields


def to_sft(conv: Conversation) -> dict[str, Any]:
    """The MOSS SFT record of `conv` (key order as released; `category` only when set).
    `conversation_id` is the source's (see `source_id`) when known, else `conv.id`."""
    rec: dict[str, Any] = {
        "conversation_id": source_id(conv),
        "meta_instruction": meta_instruction_for(conv),
        "num_turns": len(conv.turns),
        "chat": {f"turn_{i}": dict(turn_segments(t, conv)) for i, t in enumerate(conv.turns, start=1)},
    }
    if conv.category is not None:
        rec["category"] = conv.category
    for k, v in _sft_fields(conv).items():
        if k not in rec:
            rec[k] = v
    order = conv.extra.get("sft_key_order")
    if order:
        rec = {k: rec[k] for k in [*order, *rec] if k in rec}
    return rec


def dumps_sft_file(record: dict[str, Any]) -> str:
    """An SFT record as upstream's one-file-per-conversation JSON (4-space indent, UTF-8 kept,
    no trailing newline): reproduces `SFT_data/conversations/**.json` byte for byte."""
    return json.dumps(record, ensure_ascii=False, indent=4)


def dumps_sft_line(record: dict[str, Any]) -> str:
    """An SFT record as one JSONL line (without the newline)."""
    return json.dumps(record, ensure_ascii=False)


# -- MOSS text -----------------------------------------------------------------------------------


def split_segments(text: str, start: int = 0) -> list[tuple[str, str, int]]:
    """Cut MOSS text (from `start`) into (SFT key, segment, offset) triples. A segment runs from its
    role tag to its end tag plus the newline after it. Raises FormatError on text between segments
    or a missing end tag."""
    out: list[tuple[str, str, int]] = []
    pos = start
    n = len(text)
    while pos < n:
        m = _ROLE_RE.match(text, pos)
        if not m:
            raise FormatError(f"expected a role tag at offset {pos}: {text[pos : pos + 30]!r}")
        key = _TAG_KEY[m.group()]
        end = SEGMENTS[key][1]
        stop = text.find(end, m.end())
        if stop < 0:
            raise FormatError(f"missing end tag {end} after offset {pos}", field=key)
        stop += len(end)
        if text.startswith("\n", stop):
            stop += 1
        out.append((key, text[pos:stop], pos))
        pos = stop
    return out


def parse_text(
    text: str,
    *,
    id: str = "0",
    category: str | None = None,
    language: str | None = None,
    issues: list[Issue] | None = None,
) -> Conversation:
    """Parse MOSS text (meta instruction + turns) into a Conversation; `render_text` gives the
    text back byte for byte. Turns may leave out the Inner Thoughts / Commands / Results segments
    (as plain-chat prompts do); those come back absent. Raises FormatError on text that is not
    MOSS 003."""
    first = text.find("<|Human|>:")
    if first < 0:
        raise FormatError("no `<|Human|>:` segment")
    meta = text[:first]
    plugin_style = False
    info = parse_meta_instruction(meta)
    if info.has_capabilities:
        plugin_style = bool(info.plugins)
    groups: list[dict[str, str]] = []
    for key, seg, offset in split_segments(text, first):
        if key == "Human":
            groups.append({key: seg})
            continue
        if not groups:
            raise FormatError(f"{SEGMENTS[key][0]} before the first Human segment (offset {offset})")
        cur = groups[-1]
        if key in cur or SFT_KEYS.index(key) < max(SFT_KEYS.index(k) for k in cur):
            raise FormatError(f"{SEGMENTS[key][0]} out of order in turn {len(groups)} (offset {offset})")
        cur[key] = seg
    turns = []
    for n, segs in enumerate(groups, start=1):
        if "MOSS" not in segs:
            raise FormatError("no <|MOSS|> segment", field=f"turn {n}")
        turns.append(parse_turn(segs, plugin_style=plugin_style, issues=issues, turn_no=n))
    plugins, inner_thoughts, canonical = _plugins_for(info if info.has_capabilities else None, turns)
    if not info.has_capabilities and meta:
        canonical = False
    conv = Conversation(
        id=id,
        turns=turns,
        category=category,
        language=language,
        plugins=plugins,
        inner_thoughts=inner_thoughts,
    )
    if not canonical or meta != build_meta_instruction(plugins, inner_thoughts):
        conv.meta_instruction = meta
    return conv


def _json_type(v: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "an integer",
        float: "a number",
    }.get(type(v), type(v).__name__)
