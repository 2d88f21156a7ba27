"""Judge rubrics: versioned template files, the messages sent to the judge, and the strict reader
of its replies.

A rubric is `rubrics/NAME.vN.md` (or a file of the same name in a user's folder, which wins), in
the prompt templates' format (`datagen.generate.templates`): a `settings` section naming its
`criteria`, which `dialogues` it grades (`all` or `plugin`) and which `turns` (`all`, or `tool`:
turns that made calls), then `system`, `user` and `retry` sections.

The judge answers with one JSON object:

    {"turns": [{"turn": 1, "helpful": {"score": 4, "reason": "..."}, ...}, ...],
     "dialogue": {"helpful": {"score": 4, "reason": "..."}, ...}}

`parse_judgment` reads it strictly: the whole reply is that object (a single Markdown code fence
around it is tolerated), every asked turn appears once, every criterion has an integer score from
1 to 5 and a non-empty reason. Anything else is a `JudgeReplyError` whose message is the reason
sent back to the judge; nothing is ever guessed from prose.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError
from datagen.generate.templates import Template, parse_template
from datagen.record import Conversation

#: Shipped rubrics.
RUBRICS_DIR = Path(__file__).resolve().parent / "rubrics"
#: The rubrics a judge step uses when its config names none.
DEFAULT_RUBRICS = ("hhh", "grounded")
SCORE_RANGE = (1, 5)
#: Longest reason accepted (one sentence; a longer text means the judge ignored the format).
MAX_REASON_CHARS = 400

_FILE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)\.v(?P<version>\d+)\.md$")
_ID = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)(?:\.v(?P<version>\d+))?$")
_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(?P<body>.*)\n```$", re.S | re.I)
_CRITERION = re.compile(r"^[a-z][a-z0-9_]*$")
#: The longest reason a grammar lets a judge write: the rubrics' "at most 25 words" with room to
#: spare (the reader accepts up to MAX_REASON_CHARS from any judge).
GRAMMAR_REASON_CHARS = 200
#: A reason for grammar-constrained decoding: no leading space, no quote, backslash or control
#: character (llama.cpp 0.3's JSON string rule lets raw newlines through, which is not JSON).
_REASON_PATTERN = r'^[^ "\\\x00-\x1f][^"\\\x00-\x1f]{0,' + str(GRAMMAR_REASON_CHARS - 1) + "}$"


class JudgeReplyError(ValueError):
    """A judge reply that is not the asked JSON; the message says why (it is sent back once)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """One score with its one-sentence reason."""

    score: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Judgment:
    """What a judge said about one dialogue under one rubric: `dialogue` marks per criterion and
    `turns` (1-based turn number -> criterion -> Mark) for the graded turns."""

    rubric: str
    model: str
    dialogue: dict[str, Mark]
    turns: dict[int, dict[str, Mark]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dialogue": {c: m.to_dict() for c, m in self.dialogue.items()},
            "turns": [
                {"turn": n, **{c: m.to_dict() for c, m in marks.items()}}
                for n, marks in sorted(self.turns.items())
            ],
        }


@dataclass(frozen=True, slots=True)
class Rubric:
    """A loaded rubric: its template, criteria and scope."""

    template: Template
    criteria: tuple[str, ...]
    dialogues: str  # all | plugin
    turns: str  # all | tool

    @property
    def id(self) -> str:
        return self.template.id

    def graded_turns(self, conv: Conversation) -> list[int]:
        """1-based numbers of the turns this rubric grades in conv (empty: it does not apply)."""
        if self.dialogues == "plugin" and not conv.plugins:
            return []
        return [i for i, t in enumerate(conv.turns, start=1) if self.turns == "all" or t.calls]

    def skeleton(self, turns: list[int]) -> str:
        """The JSON object the judge fills in, with `null` scores and empty reasons."""
        blank = {c: {"score": None, "reason": ""} for c in self.criteria}
        rows = ",\n".join(f"  {json.dumps({'turn': n, **blank})}" for n in turns)
        return f'{{"turns": [\n{rows}\n ],\n "dialogue": {json.dumps(blank)}}}'

    def schema(self, turns: list[int], *, grammar: bool = False) -> dict[str, Any]:
        """The JSON schema of a reply grading `turns`: exactly the criteria, integer scores from the
        scale, a reason string, one entry per asked turn numbered as asked. It keeps to what strict
        structured outputs accept (OpenAI refuses string lengths, patterns and tuples there).

        `grammar` is for servers that compile the schema into a grammar (llama.cpp): the turns come
        as a tuple in the asked order, so none is graded twice or left out, and each reason is one
        line of at most `GRAMMAR_REASON_CHARS`, without quotes or control characters, so a small
        model can neither ramble to the token limit nor break the JSON with a raw newline. The
        reader checks every reply all the same."""
        lo, hi = SCORE_RANGE
        reason: dict[str, Any] = {"type": "string"}
        if grammar:
            reason["pattern"] = _REASON_PATTERN
        mark = _object({"score": {"type": "integer", "enum": list(range(lo, hi + 1))}, "reason": reason})
        marks = dict.fromkeys(self.criteria, mark)
        graded: dict[str, Any] = {"type": "array", "minItems": len(turns), "maxItems": len(turns)}
        if grammar:
            graded["prefixItems"] = [
                _object({"turn": {"type": "integer", "const": n}, **marks}) for n in turns
            ]
        else:
            graded["items"] = _object({"turn": {"type": "integer", "enum": list(turns)}, **marks})
        return _object({"turns": graded, "dialogue": _object(marks)})

    def messages(self, conv: Conversation, turns: list[int]) -> list[dict[str, str]]:
        """The chat messages asking the judge to grade `turns` of conv."""
        from datagen.formats.meta import meta_instruction_for
        from datagen.formats.moss import render_turn

        transcript = "\n".join(
            f"[Turn {i}]\n{render_turn(t, conv).rstrip()}" for i, t in enumerate(conv.turns, start=1)
        )
        user = self.template.render(
            "user",
            meta_instruction=meta_instruction_for(conv).rstrip(),
            transcript=transcript,
            turns=", ".join(map(str, turns)),
            skeleton=self.skeleton(turns),
        )
        return [
            {"role": "system", "content": self.template.render("system")},
            {"role": "user", "content": user},
        ]

    def retry_messages(self, first: list[dict[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
        """The first messages, the unusable reply, and the note saying what was wrong with it."""
        return [
            *first,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": self.template.render("retry", reason=reason)},
        ]


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed object with every property required (what strict structured outputs demand)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _settings(template: Template) -> tuple[tuple[str, ...], str, str]:
    if not template.has("settings"):
        raise ConfigError("rubric has no `settings` section (criteria, dialogues, turns)", path=template.path)
    values: dict[str, str] = {}
    for line in template.sections["settings"].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.split("#", 1)[0].strip()
    criteria = tuple(c.strip() for c in values.get("criteria", "").split(",") if c.strip())
    bad = [c for c in criteria if not _CRITERION.match(c)]
    if not criteria or bad:
        raise ConfigError(
            f"settings: criteria must be lower_case names, got {values.get('criteria')!r}",
            path=template.path,
            line=template.line_of("settings"),
        )
    dialogues, turns = values.get("dialogues", "all"), values.get("turns", "all")
    if dialogues not in ("all", "plugin") or turns not in ("all", "tool"):
        raise ConfigError(
            f"settings: dialogues must be all|plugin and turns all|tool, got {dialogues!r}, {turns!r}",
            path=template.path,
            line=template.line_of("settings"),
        )
    for section in ("system", "user", "retry"):
        if not template.has(section):
            raise ConfigError(f"rubric has no `{section}` section", path=template.path)
    return criteria, dialogues, turns


def load_rubric(spec: str, directory: str | Path | None = None) -> Rubric:
    """Load a rubric by `NAME` (highest version) or `NAME.vN`: `directory` first, then the shipped
    folder."""
    m = _ID.match(spec or "")
    if not m:
        raise ConfigError(f"a rubric is NAME or NAME.vN, got {spec!r}", field="rubrics")
    version = int(m.group("version")) if m.group("version") else None
    return _load(m.group("name"), version, str(directory) if directory is not None else None)


@functools.lru_cache(maxsize=64)
def _load(name: str, version: int | None, directory: str | None) -> Rubric:
    folders = [Path(directory)] if directory is not None else []
    if directory is not None and not folders[0].is_dir():
        raise ConfigError("rubrics folder not found", path=directory)
    folders.append(RUBRICS_DIR)
    for folder in folders:
        found = {}
        for p in folder.glob(f"{name}.v*.md"):
            fm = _FILE.match(p.name)
            if fm and fm.group("name") == name:
                found[int(fm.group("version"))] = p
        pick = version if version is not None else max(found, default=None)
        if pick in found:
            path = found[pick]
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError("rubric is not UTF-8", path=str(path)) from None
            template = parse_template(text, name=name, version=pick, path=str(path))
            return Rubric(template, *_settings(template))
    pinned = f" version {version}" if version is not None else ""
    raise ConfigError(
        f"no rubric {name!r}{pinned} (looked in {', '.join(map(str, folders))})", field="rubrics"
    )


def _mark(value: Any, where: str) -> Mark:
    if not isinstance(value, dict):
        raise JudgeReplyError(f"{where} must be an object with score and reason")
    score, reason = value.get("score"), value.get("reason")
    lo, hi = SCORE_RANGE
    if isinstance(score, bool) or not isinstance(score, int) or not lo <= score <= hi:
        raise JudgeReplyError(f"{where}.score must be an integer from {lo} to {hi}, got {json.dumps(score)}")
    if not isinstance(reason, str) or not reason.strip():
        raise JudgeReplyError(f"{where}.reason must be a non-empty sentence")
    if len(reason) > MAX_REASON_CHARS:
        raise JudgeReplyError(f"{where}.reason is {len(reason)} characters; write one short sentence")
    return Mark(score, reason.strip())


def parse_judgment(text: str, rubric: Rubric, turns: list[int], *, model: str = "") -> Judgment:
    """Read a judge reply strictly (see the module docstring); JudgeReplyError says what is wrong."""
    body = (text or "").strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group("body").strip()
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise JudgeReplyError(f"the reply is not one JSON object ({exc})") from None
    if not isinstance(obj, dict):
        raise JudgeReplyError("the reply is not one JSON object")
    items, whole = obj.get("turns"), obj.get("dialogue")
    if not isinstance(items, list):
        raise JudgeReplyError("`turns` must be a list with one object per graded turn")
    if not isinstance(whole, dict):
        raise JudgeReplyError("`dialogue` must be an object with a mark per criterion")
    graded: dict[int, dict[str, Mark]] = {}
    for item in items:
        n = item.get("turn") if isinstance(item, dict) else None
        if isinstance(n, bool) or not isinstance(n, int) or n not in turns:
            raise JudgeReplyError(f"each turns[] entry needs `turn`, one of {turns}; got {json.dumps(n)}")
        if n in graded:
            raise JudgeReplyError(f"turn {n} is graded twice")
        graded[n] = {c: _mark(item.get(c), f"turn {n}: {c}") for c in rubric.criteria}
    missing = [n for n in turns if n not in graded]
    if missing:
        raise JudgeReplyError(f"turn(s) {', '.join(map(str, missing))} not graded")
    dialogue = {c: _mark(whole.get(c), f"dialogue: {c}") for c in rubric.criteria}
    return Judgment(rubric.id, model, dialogue, graded)
