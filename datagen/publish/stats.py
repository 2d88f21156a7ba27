"""Part of the former datagen/card.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import json
import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field

from datagen.record import Conversation

#: The Hub's size buckets, smallest first: (upper bound exclusive, label).
SIZE_CATEGORIES: list[tuple[float, str]] = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (math.inf, "n>1T"),
]


def size_category(n: int) -> str:
    """The Hub `size_categories` label for n rows (e.g. 1234 -> `1K<n<10K`)."""
    for bound, label in SIZE_CATEGORIES:
        if n < bound:
            return label
    return SIZE_CATEGORIES[-1][1]


def base_language(code: str | None) -> str | None:
    """`zh-cn` / `zh_TW` -> `zh`; `en` -> `en`; None or `unknown` -> None (the Hub wants ISO 639-1)."""
    if not code:
        return None
    base = re.split(r"[-_]", code.strip().lower())[0]
    return base if re.fullmatch(r"[a-z]{2,3}", base) and base not in ("und", "unk") else None


@dataclass(slots=True)
class Summary:
    """Order statistics of a list of numbers."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: array | list[float]) -> Summary | None:
        finite = sorted(v for v in values if math.isfinite(v))
        if not finite:
            return None

        def q(p: float) -> float:
            return finite[min(len(finite) - 1, int(p * (len(finite) - 1) + 0.5))]

        return cls(
            count=len(finite),
            mean=sum(finite) / len(finite),
            min=finite[0],
            p50=q(0.5),
            p90=q(0.9),
            p99=q(0.99),
            max=finite[-1],
        )


@dataclass(slots=True)
class DatasetStats:
    """Counts and distributions over the published rows, filled by `add` while shards are written."""

    rows: int = 0
    splits: dict[str, Counter] = field(default_factory=dict)  # config -> split -> rows
    categories: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    plugins: Counter = field(default_factory=Counter)  # plugin -> conversations that enable it
    tool_calls: Counter = field(default_factory=Counter)  # MOSS command -> calls
    failed_calls: int = 0
    inner_thoughts: int = 0
    turns: Counter = field(default_factory=Counter)  # number of turns -> conversations
    dialogue_chars: array = field(default_factory=lambda: array("q"))
    reply_chars: array = field(default_factory=lambda: array("q"))
    teacher_models: Counter = field(default_factory=Counter)
    template_versions: Counter = field(default_factory=Counter)
    sampling: Counter = field(default_factory=Counter)  # JSON of lineage params -> conversations
    scores: dict[str, array] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, conv: Conversation, config: str, split: str) -> None:
        self.rows += 1
        self.splits.setdefault(config, Counter())[split] += 1
        self.categories[conv.category or "(none)"] += 1
        self.languages[conv.language or "(unknown)"] += 1
        for p in conv.plugins or ["(none)"]:
            self.plugins[p] += 1
        self.inner_thoughts += bool(conv.inner_thoughts)
        self.turns[len(conv.turns)] += 1
        self.dialogue_chars.append(sum(len(t) for t in conv.texts()))
        for t in conv.turns:
            self.reply_chars.append(len(t.assistant))
            for c in t.calls:
                self.tool_calls[c.name] += 1
            self.failed_calls += sum(1 for r in t.results if not r.ok)
        lin = conv.lineage
        self.teacher_models[lin.teacher_model or "(unknown)"] += 1
        self.template_versions[lin.template_version or "(unknown)"] += 1
        if lin.params:
            self.sampling[json.dumps(lin.params, sort_keys=True, default=str)] += 1
        for key, value in conv.scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.scores.setdefault(key, array("d")).append(float(value))
        self.prompt_tokens += conv.usage.prompt_tokens
        self.completion_tokens += conv.usage.completion_tokens
        self.cost += conv.usage.cost
