"""Dataset statistics: counts by category, language, plugin, turns, and lengths (`datagen stats`).

`DatasetStats.add(conv)` takes one conversation at a time (memory: one 4-byte length per
conversation), `merge` adds shards together, `to_dict` is the `--json` output, `format_table`
the readable one. Lengths are characters of the rendered turns (the MOSS text after the meta
instruction, i.e. what fine-tuning sees besides that fixed prefix).
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datagen.formats.moss import render_turn
from datagen.record import Conversation
from datagen.text.script import HAN_BMP

# Han, and the Yijing hexagram symbols between Extension A and the Unified block (U+4DC0-4DFF),
# which this count has always taken for Han.
_CJK_RE = re.compile(f"[{HAN_BMP}\u4dc0-\u4dff]")
_LATIN_RE = re.compile(r"[A-Za-z]")


def guess_language(conv: Conversation) -> str:
    """`zh`, `en` or `other` from the script of the first human message and answer (a cheap
    stand-in used only where a conversation has no `language`)."""
    if not conv.turns:
        return "other"
    text = (conv.turns[0].human + conv.turns[0].assistant)[:2000]
    cjk = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    if cjk and cjk * 3 >= latin:
        return "zh"
    if latin:
        return "en"
    return "other"


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass(slots=True)
class DatasetStats:
    """Counters over conversations; `unreadable` counts records that could not be parsed."""

    conversations: int = 0
    turns: int = 0
    unreadable: int = 0
    category: Counter = field(default_factory=Counter)
    language: Counter = field(default_factory=Counter)
    kind: Counter = field(default_factory=Counter)
    plugin: Counter = field(default_factory=Counter)
    calls: Counter = field(default_factory=Counter)
    failed_calls: Counter = field(default_factory=Counter)
    num_turns: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    guessed_language: int = 0
    chars: array = field(default_factory=lambda: array("I"))

    def add(self, conv: Conversation) -> None:
        """Count one conversation."""
        self.conversations += 1
        self.turns += len(conv.turns)
        self.category[conv.category or "(none)"] += 1
        lang = conv.language
        if not lang:
            lang = guess_language(conv)
            self.guessed_language += 1
        self.language[lang] += 1
        self.kind[conv.kind] += 1
        for p in conv.plugins or ["(none)"]:
            self.plugin[p] += 1
        self.num_turns[len(conv.turns)] += 1
        n = 0
        for t in conv.turns:
            n += len(render_turn(t, conv))
            for c in t.calls:
                self.calls[c.name] += 1
            for r in t.results:
                if not r.ok:
                    self.failed_calls[r.name] += 1
            for f in t.flags:
                self.flags[f] += 1
        self.chars.append(min(n, 0xFFFFFFFF))

    def merge(self, other: DatasetStats) -> None:
        """Add another shard's counts into this one."""
        self.conversations += other.conversations
        self.turns += other.turns
        self.unreadable += other.unreadable
        self.guessed_language += other.guessed_language
        for name in ("category", "language", "kind", "plugin", "calls", "failed_calls", "num_turns", "flags"):
            getattr(self, name).update(getattr(other, name))
        self.chars.extend(other.chars)

    def length_summary(self) -> dict[str, float | int]:
        """min / mean / p50 / p90 / p99 / max characters per conversation."""
        values = sorted(self.chars)
        if not values:
            return {"min": 0, "mean": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
        return {
            "min": values[0],
            "mean": round(sum(values) / len(values), 1),
            "p50": _percentile(values, 0.5),
            "p90": _percentile(values, 0.9),
            "p99": _percentile(values, 0.99),
            "max": values[-1],
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready counts (the `--json` output)."""
        return {
            "conversations": self.conversations,
            "turns": self.turns,
            "unreadable": self.unreadable,
            "category": dict(self.category.most_common()),
            "language": dict(self.language.most_common()),
            "language_guessed": self.guessed_language,
            "kind": dict(self.kind.most_common()),
            "plugin": dict(self.plugin.most_common()),
            "calls": dict(self.calls.most_common()),
            "failed_calls": dict(self.failed_calls.most_common()),
            "num_turns": {str(k): v for k, v in sorted(self.num_turns.items())},
            "flags": dict(self.flags.most_common()),
            "chars": self.length_summary(),
        }

    def format_table(self) -> str:
        """A readable report: one block per breakdown, counts with percentages."""
        lines = [f"conversations  {self.conversations:>10}", f"turns          {self.turns:>10}"]
        if self.unreadable:
            lines.append(f"unreadable     {self.unreadable:>10}  (run `datagen validate` for details)")

        def block(title: str, counter: Counter, total: int, sort_keys: bool = False) -> None:
            if not counter:
                return
            lines.append("")
            lines.append(title)
            items = sorted(counter.items()) if sort_keys else counter.most_common()
            width = max(len(str(k)) for k, _ in items)
            for k, v in items:
                pct = f"{100 * v / total:6.1f}%" if total else ""
                lines.append(f"  {str(k):<{width}}  {v:>10}  {pct}")

        n = self.conversations
        block("category", self.category, n)
        lang_title = "language" + (
            f" ({self.guessed_language} guessed from the script)" if self.guessed_language else ""
        )
        block(lang_title, self.language, n)
        block("kind", self.kind, n)
        block("plugin enabled", self.plugin, n)
        block("turns per conversation", self.num_turns, n, sort_keys=True)
        total_calls = sum(self.calls.values())
        block("commands", self.calls, total_calls)
        if self.failed_calls:
            block("failed commands (No result.)", self.failed_calls, total_calls)
        block("flags (turns)", self.flags, self.turns)
        ls = self.length_summary()
        lines.append("")
        lines.append("characters per conversation (turns, without the meta instruction)")
        lines.append("  " + "  ".join(f"{k} {v}" for k, v in ls.items()))
        return "\n".join(lines)
