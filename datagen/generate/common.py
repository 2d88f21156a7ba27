"""Shared pieces of the generation stages: prompt rows, seeded RNGs, stats, language names,
teacher-failure classes."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.io import iter_json_lines
from datagen.record import Usage
from datagen.teacher.failures import RETRYABLE
from datagen.teacher.redact import redact
from datagen.teacher.types import Result

#: Teacher error codes that mean the reply itself was unusable: asked again with the reason, and
#: a permanent failure if it stays so.
CONTENT_ERRORS = frozenset({"length", "content_filter", "empty_text"})
#: Teacher error codes that stop every call (bad key, no quota, wrong model): the stage stops.
FATAL_ERRORS = frozenset({"insufficient_quota", "auth", "not_found"})
#: Teacher error codes that asking the same request again cannot fix (a 400/422: a prompt past the
#: context, a parameter the server refuses): the dialogue fails for good in this run. The server
#: may be fixed meanwhile, and a 400 costs nothing, so the next run tries it again
#: (`StageStats.retry_next_run`), while finished calls still come from the journal.
PERMANENT_ERRORS = frozenset({"bad_request"})
#: Dialogue failure reasons that a rerun of the same command can fix: the engine's transient codes
#: (after its own retries) and a tool backend down. Only these make a stage incomplete
#: (`StageStats.retryable_failed`); anything else (`bad_request`, `unknown`, content failures) is
#: reported but does not block the run.
RERUN_FIXES = RETRYABLE | {"tool_unavailable"}

_LANGUAGE_NAMES = {
    "zh": "Chinese (简体中文)", "zh-Hans": "Simplified Chinese (简体中文)", "zh-Hant": "Traditional Chinese (繁體中文)",
    "en": "English", "ja": "Japanese (日本語)", "ko": "Korean (한국어)", "fr": "French", "de": "German",
    "es": "Spanish", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "ar": "Arabic", "vi": "Vietnamese",
}


def language_name(code: str | None) -> str:
    """A readable name for a language code, for prompts (`zh` -> `Chinese (简体中文)`)."""
    if not code:
        return "the user's language"
    return _LANGUAGE_NAMES.get(code, _LANGUAGE_NAMES.get(code.split("-")[0], code))


def rng_for(seed: int, *parts: object) -> random.Random:
    """An RNG that depends only on the run seed and the given parts (e.g. a dialogue id), never on
    time, process or global state: a rerun makes the same draws, so it asks the same requests and
    the journal answers them."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, parts)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(slots=True)
class PromptRow:
    """The fields of a prompt (a seed, or an expanded prompt) the generation stages use."""

    id: str
    text: str
    language: str | None = None
    category: str | None = None
    plugins: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    source: str | None = None
    source_id: str | None = None
    seed_id: str | None = None

    @classmethod
    def of(cls, p: Any) -> PromptRow:
        """From a `datagen.seeds.record.Seed`, a PromptRow, or a dict with the same fields."""
        if isinstance(p, PromptRow):
            return p
        get = p.get if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
        extra = get("extra") or {}
        extra = extra if isinstance(extra, dict) else {}
        lineage = get("lineage") or extra.get("lineage") or {}
        lineage = lineage if isinstance(lineage, dict) else {}
        parents = get("parents") or extra.get("parents") or lineage.get("parents") or []
        seed_id = get("seed_id") or lineage.get("seed_id")
        return cls(id=str(get("id")), text=str(get("text")), language=get("language"), category=get("category"),
                   plugins=list(get("plugins") or []), parents=list(parents), source=get("source"),
                   source_id=get("source_id"), seed_id=seed_id)


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Read prompts: a seed file or an expanded-prompt file (`datagen.seeds.record.read_seeds`,
    which names file, line and field of a bad row)."""
    from datagen.seeds.record import read_seeds

    return [PromptRow.of(s) for s in read_seeds(path)]


def usage_of(result: Result) -> Usage:
    """The tokens and cost of one call (what it cost when it was made, cached or not)."""
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 cost=result.cost, calls=1)


def existing_ids(path: str | Path) -> set[str]:
    """Ids already written to a JSONL output (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return set()
    return {str(obj["id"]) for _, obj in iter_json_lines(p) if isinstance(obj, dict) and "id" in obj}


def sidecar(out_path: str | Path, suffix: str) -> Path:
    """`dialogues/hhh.jsonl` + `failed.jsonl` -> `dialogues/hhh.failed.jsonl`."""
    p = Path(out_path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(f"{stem}.{suffix}")


@dataclass(slots=True)
class StageStats:
    """Counters of one stage run. `counts` holds made/failed/skipped and `failed_<reason>` or
    `rejected_<reason>` counters; tokens and cost are summed over the rows made (cached calls
    included) and `paid_*` over the calls this run actually paid for.

    `retryable_failed` counts this run's failures that a rerun would try again (API failures after
    the engine's retries, a tool backend down, an expansion stopped early): when it is above 0 the
    stage is incomplete, and a runner should ask for a rerun rather than go on. `retry_next_run`
    counts failures the next run tries again though this one went on without them (requests the
    server refused: fixing the server or the config may make them pass). `examples` keeps one
    (redacted) detail per failure reason, so a report can say what went wrong, not only how often."""

    stage: str
    counts: Counter = field(default_factory=Counter)
    retryable_failed: int = 0
    retry_next_run: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    paid_cost: float = 0.0

    def add_result(self, result: Result) -> None:
        self.calls += 1
        if result.cached:
            self.cached_calls += 1
        else:
            self.paid_cost += result.cost
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost += result.cost

    def inc(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def fail(self, reason: str, detail: str | None = None) -> None:
        """Count a failure (`failed_<reason>`) and keep the first detail seen for it as an example."""
        self.counts[f"failed_{reason}"] += 1
        if detail and reason not in self.examples:
            self.examples[reason] = redact(detail)[:300]

    def reasons(self, prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in sorted(self.counts.items()) if k.startswith(prefix)}

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **dict(sorted(self.counts.items())),
                "retryable_failed": self.retryable_failed, "retry_next_run": self.retry_next_run,
                "failure_examples": dict(sorted(self.examples.items())), "calls": self.calls,
                "cached_calls": self.cached_calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": round(self.cost, 6),
                "paid_cost": round(self.paid_cost, 6)}

    def summary(self, made_key: str = "made", failed_prefix: str = "failed_") -> str:
        """One line: made, failed with reasons, tokens, cost."""
        failed = self.reasons(failed_prefix)
        why = ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))
        parts = [f"{self.stage}: {self.counts.get(made_key, 0)} {made_key}"]
        if self.counts.get("skipped_done"):
            parts.append(f"{self.counts['skipped_done']} already done")
        n_failed = sum(failed.values())
        parts.append(f"{n_failed} failed" + (f" ({why})" if why else ""))
        if self.retryable_failed:
            parts.append(f"{self.retryable_failed} to retry: rerun the same command")
        elif self.retry_next_run:
            parts.append(f"{self.retry_next_run} refused by the server, tried again on the next run")
        parts.append(f"{self.calls} calls ({self.cached_calls} from the journal)")
        parts.append(f"{self.prompt_tokens + self.completion_tokens} tokens")
        parts.append(f"${self.cost:.4f} (paid now ${self.paid_cost:.4f})")
        return "; ".join(parts)


def failure_cause(counts: dict[str, Any], examples: dict[str, str] | None = None, prefix: str = "failed_") -> str:
    """The failures of a stage in a few words, largest first, with an example message of the
    largest: `bad_request 2, length 1; e.g. HTTP 400: Unsupported parameter: 'top_p'`."""
    failed = sorted(((k[len(prefix):], v) for k, v in counts.items()
                     if k.startswith(prefix) and isinstance(v, int) and v), key=lambda kv: (-kv[1], kv[0]))
    if not failed:
        return ""
    text = ", ".join(f"{k} {v}" for k, v in failed)
    example = (examples or {}).get(failed[0][0])
    return f"{text}; e.g. {example}" if example else text


def write_json(path: str | Path, data: Any) -> None:
    """Write a small JSON file atomically (stats beside an output)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(p)

