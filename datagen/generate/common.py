"""Shared pieces of the generation stages: prompt rows, seeded RNGs, stats, language names,
teacher-failure classes."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.io import iter_json_lines
from datagen.record import Usage
from datagen.stage import StageStats  # noqa: F401 (the counters every stage keeps; imported from here too)
from datagen.teacher.failures import RETRYABLE
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
    "zh": "Chinese (简体中文)",
    "zh-Hans": "Simplified Chinese (简体中文)",
    "zh-Hant": "Traditional Chinese (繁體中文)",
    "en": "English",
    "ja": "Japanese (日本語)",
    "ko": "Korean (한국어)",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "ru": "Russian",
    "pt": "Portuguese",
    "it": "Italian",
    "ar": "Arabic",
    "vi": "Vietnamese",
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
        return cls(
            id=str(get("id")),
            text=str(get("text")),
            language=get("language"),
            category=get("category"),
            plugins=list(get("plugins") or []),
            parents=list(parents),
            source=get("source"),
            source_id=get("source_id"),
            seed_id=seed_id,
        )


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Read prompts: a seed file or an expanded-prompt file (`datagen.seeds.record.read_seeds`,
    which names file, line and field of a bad row)."""
    from datagen.seeds.record import read_seeds

    return [PromptRow.of(s) for s in read_seeds(path)]


def usage_of(result: Result) -> Usage:
    """The tokens and cost of one call (what it cost when it was made, cached or not)."""
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost=result.cost,
        calls=1,
    )


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


def as_teacher_config(teacher: Any):
    """A `TeacherConfig` from one, from its dict, or the defaults for None."""
    from datagen.teacher.config import TeacherConfig

    if teacher is None:
        return TeacherConfig()
    if isinstance(teacher, Mapping):
        return TeacherConfig.from_dict(dict(teacher))
    return teacher


def failure_cause(
    counts: dict[str, Any], examples: dict[str, str] | None = None, prefix: str = "failed_"
) -> str:
    """The failures of a stage in a few words, largest first, with an example message of the
    largest: `bad_request 2, length 1; e.g. HTTP 400: Unsupported parameter: 'top_p'`."""
    failed = sorted(
        (
            (k[len(prefix) :], v)
            for k, v in counts.items()
            if k.startswith(prefix) and isinstance(v, int) and v
        ),
        key=lambda kv: (-kv[1], kv[0]),
    )
    if not failed:
        return ""
    text = ", ".join(f"{k} {v}" for k, v in failed)
    example = (examples or {}).get(failed[0][0])
    return f"{text}; e.g. {example}" if example else text
