"""The one record type every stage reads and writes: a `Conversation` of `Turn`s.

A Conversation is stored as one JSON object per line (see `to_dict` / `from_dict`). Formats
(MOSS text, MOSS SFT JSON, OpenAI messages, ShareGPT) convert to and from it at the edges; stages
in between only ever see this type.

Plugin names used throughout datagen (and their MOSS API names):

    search      -> Search(query)
    calculator  -> Calculate(expression)
    solver      -> Solve(equation)
    text2image  -> Text2Image(description)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: datagen plugin name -> MOSS command name, in the order MOSS's meta instruction lists them.
PLUGIN_COMMANDS: dict[str, str] = {
    "search": "Search",
    "calculator": "Calculate",
    "solver": "Solve",
    "text2image": "Text2Image",
}
#: MOSS command name -> datagen plugin name.
COMMAND_PLUGINS: dict[str, str] = {v: k for k, v in PLUGIN_COMMANDS.items()}

RECORD_VERSION = 1


@dataclass(slots=True)
class ToolCall:
    """One parsed command, e.g. `Calculate("23*47+12")` -> name="Calculate", arg="23*47+12"."""

    name: str
    arg: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arg": self.arg}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(name=d["name"], arg=d["arg"])


@dataclass(slots=True)
class ToolResult:
    """What one call returned.

    `ok` is False when the tool failed (MOSS writes `No result.`). `output` is the tool's text
    (Calculate's value, Solve's `x = 1` lines, Text2Image's message); Search results are the
    numbered `snippets` instead, and `first_index` is the `<|N|>` number of the first snippet
    (numbering continues across the searches of one turn).
    """

    name: str
    arg: str
    ok: bool = True
    output: str = ""
    snippets: list[str] = field(default_factory=list)
    first_index: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # tool-specific data, e.g. an image URL

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "arg": self.arg, "ok": self.ok, "output": self.output}
        if self.snippets:
            d["snippets"] = list(self.snippets)
            d["first_index"] = self.first_index
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolResult:
        return cls(
            name=d["name"],
            arg=d["arg"],
            ok=d.get("ok", True),
            output=d.get("output", ""),
            snippets=list(d.get("snippets", [])),
            first_index=d.get("first_index", 1),
            extra=dict(d.get("extra") or {}),
        )


@dataclass(slots=True)
class Turn:
    """One exchange: the human message, the assistant's inner thoughts and commands, the tool
    results, and the assistant's answer.

    `thoughts` is None when the turn has none (MOSS writes `None`). `calls` is empty for a turn
    without commands. `flags` carries markers later stages act on (e.g. `tool_failed`).
    `raw` keeps verbatim MOSS segment strings (keys: Human, Inner Thoughts, Commands,
    Tool Responses, MOSS) only where a parsed file differs from the canonical rendering, so that
    parse -> render reproduces released files byte for byte. Renderers use a raw segment only while
    it still matches the structured fields; editing a field makes the canonical form win.

    `problems` names the segments (same keys) that did not follow the MOSS 003 grammar, each with
    why: such a segment is kept verbatim in `raw`, and the fields hold what could be recovered
    from it (e.g. the calls of a numbered command list). Readers never fail on them; `validate`
    reports them and `filter`/`check` reject the conversation (`malformed_commands`, ...).
    """

    human: str
    assistant: str = ""
    thoughts: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"human": self.human, "assistant": self.assistant, "thoughts": self.thoughts}
        if self.calls:
            d["calls"] = [c.to_dict() for c in self.calls]
        if self.results:
            d["results"] = [r.to_dict() for r in self.results]
        if self.flags:
            d["flags"] = list(self.flags)
        if self.raw:
            d["raw"] = dict(self.raw)
        if self.problems:
            d["problems"] = dict(self.problems)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        return cls(
            human=d["human"],
            assistant=d.get("assistant", ""),
            thoughts=d.get("thoughts"),
            calls=[ToolCall.from_dict(c) for c in d.get("calls", [])],
            results=[ToolResult.from_dict(r) for r in d.get("results", [])],
            flags=list(d.get("flags", [])),
            raw=dict(d.get("raw", {})),
            problems=dict(d.get("problems") or {}),
        )


@dataclass(slots=True)
class Lineage:
    """Where a conversation came from: enough to reproduce or audit it."""

    seed_id: str | None = None
    source: str | None = None  # file or dataset the seed was imported from
    source_id: str | None = None  # the id the row had in its source
    teacher_model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters
    template_version: str | None = None
    parents: list[str] = field(default_factory=list)  # expansion: ids of the example prompts
    run: str | None = None  # run fingerprint
    review: dict[str, Any] = field(default_factory=dict)  # a reviewer's edit: who, when, what changed

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: its recursive copy was the largest cost of writing a row
        out: dict[str, Any] = {}
        for k in _LINEAGE_FIELDS:
            v = getattr(self, k)
            if v not in (None, [], {}):
                out[k] = copy.deepcopy(v) if isinstance(v, (dict, list)) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lineage:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_LINEAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Lineage))


@dataclass(slots=True)
class Usage:
    """Tokens and cost spent making a conversation (summed over its teacher calls)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        self.calls += other.calls

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "calls": self.calls,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Usage:
        return cls(**{k: d[k] for k in ("prompt_tokens", "completion_tokens", "cost", "calls") if k in d})


@dataclass(slots=True)
class Conversation:
    """A multi-turn dialogue and everything datagen knows about it.

    `plugins` lists enabled datagen plugin names (see `PLUGIN_COMMANDS`). `meta_instruction` is the
    exact text when it is not the standard one; when None, renderers build it from `plugins` and
    `inner_thoughts`. `scores` holds numbers later stages add (e.g. `moss_loss`); `tags` holds
    filter verdicts kept on the row (step name -> reason); `extra` keeps unknown source fields.
    Parsers keep `meta_instruction` only when it differs from the standard text for `plugins` and
    `inner_thoughts`; always read it through `datagen.formats.meta_instruction_for(conv)`.
    """

    id: str
    turns: list[Turn] = field(default_factory=list)
    category: str | None = None
    language: str | None = None
    plugins: list[str] = field(default_factory=list)
    inner_thoughts: bool = False
    meta_instruction: str | None = None
    lineage: Lineage = field(default_factory=Lineage)
    usage: Usage = field(default_factory=Usage)
    scores: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """`plugin` when any plugin is enabled, else `hhh`."""
        return "plugin" if self.plugins else "hhh"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "language": self.language,
            "plugins": list(self.plugins),
            "inner_thoughts": self.inner_thoughts,
            "meta_instruction": self.meta_instruction,
            "turns": [t.to_dict() for t in self.turns],
            "lineage": self.lineage.to_dict(),
            "usage": self.usage.to_dict(),
        }
        if self.scores:
            d["scores"] = dict(self.scores)
        if self.tags:
            d["tags"] = dict(self.tags)
        if self.extra:
            d["extra"] = dict(self.extra)
        d["record_version"] = RECORD_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        """Build from `to_dict` output. Raises KeyError/TypeError/ValueError on a malformed dict;
        `datagen.formats` wraps those into errors naming file, line and field."""
        if not isinstance(d, dict):
            raise TypeError(f"a conversation must be a JSON object, got {type(d).__name__}")
        turns = d["turns"]
        if not isinstance(turns, list):
            raise TypeError("turns must be a list")
        return cls(
            id=str(d["id"]),
            turns=[Turn.from_dict(t) for t in turns],
            category=d.get("category"),
            language=d.get("language"),
            plugins=list(d.get("plugins") or []),
            inner_thoughts=bool(d.get("inner_thoughts", False)),
            meta_instruction=d.get("meta_instruction"),
            lineage=Lineage.from_dict(d.get("lineage") or {}),
            usage=Usage.from_dict(d.get("usage") or {}),
            scores=dict(d.get("scores") or {}),
            tags=dict(d.get("tags") or {}),
            extra=dict(d.get("extra") or {}),
        )

    def texts(self) -> list[str]:
        """Every human and assistant message, in order (for filters that look at all the text)."""
        out: list[str] = []
        for t in self.turns:
            out.append(t.human)
            out.append(t.assistant)
        return out
