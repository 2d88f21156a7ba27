"""`datagen expand`: the Self-Instruct loop, growing seed prompts into many machine prompts.

Seeds are grouped into cells by (category, language, plugins). Each request shows the teacher
`k_seed` seeds and `k_machine` earlier machine prompts of one cell and asks for a numbered batch of
`batch_size` new ones (template `expand.vN.md`). Every candidate goes through the filters, in order:

    too_short / too_long   length in characters (`min_chars`, `max_chars`)
    blacklist              a word marking something a text model cannot do (image, 视频, ...)
    meta                   the teacher's commentary, not a prompt ("Here are...", "Example 1:")
    bad_start              starts with punctuation or a list marker the parser did not strip
    language               detected language differs from the cell's
    near_dup               nearly duplicates a seed or a kept prompt of any cell (incremental
                           LSH index: ROUGE-L as in Self-Instruct, or MinHash)

A cell stops at its target, after `max_idle_rounds` rounds that added nothing, or when the run
hits `max_requests`. Rounds send up to `parallel` requests at once and use the results in request
order, with examples drawn from an RNG seeded by (seed, cell, request number): a rerun sends the
same requests, which the journal answers for free, and so rebuilds the same pool before going on.

A request that fails for a reason a retry can fix (timeout, 5xx or 429 after the engine's
retries: `datagen.teacher.failures.RETRYABLE`) ends the run after its round: every later request
shows examples from the pool, so going on without that request's prompts would build a pool a
rerun (where the request succeeds) never rebuilds, and the rerun would pay again for every later
request. The stats then carry `retryable_failed` (and `failed_<code>`): rerun to resume.

Writes `out_path` (kept prompts, each with `parents`: the ids of the examples its request showed)
and `<out>.rejected.jsonl` (every rejected candidate with its reason), both atomically at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from datagen.errors import ConfigError, TeacherError
from datagen.generate.common import (
    FATAL_ERRORS,
    PromptRow,
    StageStats,
    as_teacher_config,
    language_name,
    rng_for,
    sidecar,
)
from datagen.generate.config import ExpandConfig
from datagen.generate.parsing import parse_numbered_list
from datagen.generate.prompts import TOOL_LINES, PromptBook
from datagen.io import write_json_atomic, write_jsonl_atomic
from datagen.record import PLUGIN_COMMANDS
from datagen.teacher.failures import RETRYABLE
from datagen.teacher.types import Request, Result

__all__ = ["ExpandConfig", "expand", "aexpand", "Blacklist", "candidate_reason"]

_BAD_START = re.compile(r"^[\s,.;:!?，。；：！？、)）\]】}>\-–—*#]")


class Blacklist:
    """Words that mark a prompt a text-only model cannot do. ASCII entries match whole words,
    case-insensitively; others (CJK) match anywhere."""

    def __init__(self, words: Iterable[str]):
        words = [w.strip() for w in words if w and w.strip()]
        ascii_words = sorted((w for w in words if w.isascii()), key=len, reverse=True)
        other = sorted((w for w in words if not w.isascii()), key=len, reverse=True)
        parts = []
        if ascii_words:
            parts.append(r"\b(?:" + "|".join(re.escape(w) for w in ascii_words) + r")\b")
        if other:
            parts.append("|".join(re.escape(w) for w in other))
        self._re = re.compile("|".join(parts), re.I) if parts else None

    def find(self, text: str) -> str | None:
        """The first blacklisted word in text, or None."""
        if self._re is None:
            return None
        m = self._re.search(text)
        return m.group(0).lower() if m else None


@functools.lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.I | re.M) for p in patterns]


def candidate_reason(
    text: str, config: ExpandConfig, blacklist: Blacklist, language: str | None
) -> tuple[str, str] | None:
    """Why a candidate prompt is rejected before the near-duplicate check, as (reason, detail),
    or None when it passes."""
    n = len(text)
    if n < config.min_chars:
        return "too_short", f"{n} < {config.min_chars} characters"
    if n > config.max_chars:
        return "too_long", f"{n} > {config.max_chars} characters"
    word = blacklist.find(text)
    if word is not None:
        return "blacklist", word
    for pattern in _compiled(tuple(config.reject_patterns)):
        m = pattern.search(text)
        if m:
            return "meta", m.group(0)
    if _BAD_START.match(text):
        return "bad_start", text[:1]
    if config.check_language and language:
        from datagen.text.language import detect_language

        found = detect_language(text)
        if found is not None and found.split("-")[0] != language.split("-")[0]:
            return "language", f"{found} (cell is {language})"
    return None


@dataclass(slots=True)
class Cell:
    """The seeds of one (category, language, plugins) group and the machine prompts kept so far."""

    category: str | None
    language: str | None
    plugins: tuple[str, ...]
    seeds: list[PromptRow] = field(default_factory=list)
    target: int = 0
    machine: list[PromptRow] = field(default_factory=list)
    requests: int = 0
    idle_rounds: int = 0
    stopped: str | None = None  # why the cell stopped: target, idle, max_requests

    @property
    def name(self) -> str:
        base = f"{self.category or 'default'}/{self.language or 'any'}"
        return base + (f"+{','.join(self.plugins)}" if self.plugins else "")

    @property
    def missing(self) -> int:
        return max(0, self.target - len(self.machine))


def make_cells(seeds: Iterable[PromptRow], config: ExpandConfig) -> list[Cell]:
    """Group seeds into cells, in first-seen order, with each cell's target."""
    cells: dict[tuple[Any, ...], Cell] = {}
    for s in seeds:
        plugins = tuple(p for p in PLUGIN_COMMANDS if p in set(s.plugins))
        key = (s.category, s.language, plugins)
        if key not in cells:
            cells[key] = Cell(
                category=s.category,
                language=s.language,
                plugins=plugins,
                target=config.target_for(s.category, s.language),
            )
        cells[key].seeds.append(s)
    return list(cells.values())


def prompt_id(cell: Cell, text: str) -> str:
    """A machine prompt's id: stable across reruns (a hash of its cell and text)."""
    return "exp-" + xxhash.xxh64(f"{cell.name}\n{text}".encode()).hexdigest()


def _numbered(texts: list[str]) -> str:
    out = []
    for i, t in enumerate(texts, start=1):
        lines = t.strip().split("\n")
        out.append(f"{i}. " + "\n   ".join(lines))
    return "\n".join(out)


def build_request(cell: Cell, config: ExpandConfig, book: PromptBook) -> tuple[Request, list[str]]:
    """The cell's next request and the ids of the examples it shows. Its `sample` number (part of
    the journal key, not sent) keeps two requests that happen to show the same examples apart."""
    rng = rng_for(config.seed, "expand", cell.name, cell.requests)
    seeds = rng.sample(cell.seeds, min(config.k_seed, len(cell.seeds)))
    machine = rng.sample(cell.machine, min(config.k_machine, len(cell.machine)))
    examples = seeds + machine
    rng.shuffle(examples)
    t = book.get("expand")
    guidance = book.guidance(cell.category)
    if cell.plugins and guidance.name == "guidance/default":
        guidance = book.guidance("tool")
    lang = language_name(cell.language)
    plugins_note = ""
    if cell.plugins:
        plugins_note = (
            "The assistant can use these tools:\n"
            + "\n".join(TOOL_LINES[PLUGIN_COMMANDS[p]] for p in cell.plugins)
            + "\n"
        )
    values = dict(
        n=config.batch_size,
        language_name=lang,
        category=cell.category or "general",
        guidance=guidance.render("expand", language_name=lang) if guidance.has("expand") else "",
        examples=_numbered([e.text for e in examples]),
        plugins_note=plugins_note,
    )
    messages = [
        {"role": "system", "content": t.render("system", **values)},
        {"role": "user", "content": t.render("user", **values)},
    ]
    request = Request(
        messages=messages,
        template_version=t.id,
        require_complete=False,
        params={"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens},
        tag=(cell.name, cell.requests),
        sample=cell.requests,
    )
    return request, [e.id for e in examples]


async def aexpand(
    seeds: Iterable[Any],
    config: ExpandConfig,
    teacher: Any,
    out_path: str | Path,
    journal_path: str | Path | None,
    *,
    progress: bool | None = None,
    engine_factory: Callable[..., Any] | None = None,
) -> StageStats:
    """The async body of `expand` (for callers inside an event loop). `engine_factory` replaces
    `TeacherEngine` (same arguments), e.g. with a batch-API engine."""
    from datagen.teacher.engine import TeacherEngine
    from datagen.text.neardup import NearDupIndex

    teacher = as_teacher_config(teacher)
    out_path = Path(out_path)
    stats = StageStats("expand")
    book = PromptBook(
        config.templates_dir, {"expand": config.template_version} if config.template_version else {}
    )
    rows = [PromptRow.of(s) for s in seeds]
    stats.inc("seeds", len(rows))
    cells = [c for c in make_cells(rows, config) if c.target > 0]
    index = NearDupIndex("prompt", config.near_dup_threshold, method=config.near_dup_method)
    for s in rows:
        index.add(s.id, s.text)
    blacklists = {False: Blacklist(config.blacklist), True: Blacklist(config.plugin_blacklist)}
    needed = sum(math.ceil(c.target / config.batch_size) for c in cells)
    cap = config.max_requests if config.max_requests is not None else max(4 * needed, 8)
    lineage_params = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "batch_size": config.batch_size,
        "seed": config.seed,
    }
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    sent = 0
    make_engine = engine_factory or TeacherEngine
    async with make_engine(teacher, journal_path=journal_path, progress=progress, desc="expand") as engine:
        engine.expect(needed)
        while True:
            active = [c for c in cells if c.stopped is None]
            if not active:
                break
            if sent >= cap:
                for c in active:
                    c.stopped = "max_requests"
                break
            batch = _plan_round(active, config, cap - sent)
            built = []
            for cell in batch:
                req, parents = build_request(cell, config, book)
                cell.requests += 1
                built.append((cell, req, parents))
            sent += len(built)
            results: list[Result] = await asyncio.gather(*(engine.complete(r) for _, r, _ in built))
            before = {id(c): len(c.machine) for c in active}
            retry_later = 0
            for (cell, req, parents), result in zip(built, results, strict=True):
                stats.add_result(result)
                stats.inc("requests")
                if not result.ok:
                    stats.fail(result.error or "unknown", result.detail)
                    if result.error in FATAL_ERRORS:
                        raise TeacherError(
                            f"the teacher refused the expansion request ({result.error}: "
                            f"{result.detail}); fix the teacher settings and rerun to resume"
                        )
                    if result.error in RETRYABLE:
                        retry_later += 1
                    continue
                items = parse_numbered_list(result.text or "", truncated=result.finish_reason == "length")
                if not items:
                    stats.fail("unparseable", f"no numbered list in the reply: {(result.text or '')[:150]!r}")
                for text in items:
                    stats.inc("candidates")
                    if cell.missing == 0:
                        stats.inc("surplus")
                        continue
                    verdict = candidate_reason(text, config, blacklists[bool(cell.plugins)], cell.language)
                    pid = prompt_id(cell, text)
                    if verdict is None:
                        dup = index.check_and_add(pid, text)
                        if dup is not None:
                            verdict = ("near_dup", dup)
                    if verdict is not None:
                        stats.inc(f"rejected_{verdict[0]}")
                        rejected.append(
                            {
                                "text": text,
                                "reason": verdict[0],
                                "detail": verdict[1],
                                "cell": cell.name,
                                "request": req.tag[1],
                            }
                        )
                        continue
                    row = PromptRow(
                        id=pid,
                        text=text,
                        language=cell.language,
                        category=cell.category,
                        plugins=list(cell.plugins),
                        parents=list(parents),
                    )
                    cell.machine.append(row)
                    kept.append(_row_dict(row, teacher.model, book.get("expand").id, lineage_params))
            for c in active:
                if c.missing == 0:
                    c.stopped = "target"
                elif len(c.machine) == before[id(c)] and c in batch:
                    c.idle_rounds += 1
                    if c.idle_rounds >= config.max_idle_rounds:
                        c.stopped = "idle"
                elif c in batch:
                    c.idle_rounds = 0
            if retry_later:
                # Stop here, so that a rerun rebuilds this very pool (the journal answers every
                # request made so far) before the failed request is asked again.
                stats.retryable_failed += retry_later
                for c in cells:
                    if c.stopped is None:
                        c.stopped = "retryable_failure"
                break
    write_jsonl_atomic(out_path, kept)
    write_jsonl_atomic(sidecar(out_path, "rejected.jsonl"), rejected)
    stats.inc("count", len(kept))
    for c in cells:
        if c.stopped != "target":
            stats.inc(f"cells_short_{c.stopped}")
    stats.counts["cells"] = len(cells)
    info = stats.info()
    info["per_cell"] = {
        c.name: {"target": c.target, "kept": len(c.machine), "requests": c.requests, "stopped": c.stopped}
        for c in cells
    }
    write_json_atomic(sidecar(out_path, "stats.json"), info, sort_keys=True)
    return stats


def _plan_round(active: list[Cell], config: ExpandConfig, budget: int) -> list[Cell]:
    # Share the round's slots fairly: round-robin over the cells, each taking no more requests than
    # it still needs.
    slots = min(config.parallel, budget)
    want = {id(c): math.ceil(c.missing / config.batch_size) for c in active}
    plan: list[Cell] = []
    while len(plan) < slots and any(want.values()):
        for c in active:
            if len(plan) >= slots:
                break
            if want[id(c)] > 0:
                plan.append(c)
                want[id(c)] -= 1
    return plan


def _row_dict(row: PromptRow, model: str, template: str, params: Mapping[str, Any]) -> dict[str, Any]:
    # A Seed row (so `read_seeds` reads expanded prompts back); parents and lineage live in `extra`.
    from datagen.seeds.record import Seed

    lineage = {"teacher_model": model, "template_version": template, "params": dict(params)}
    return Seed(
        id=row.id,
        text=row.text,
        language=row.language,
        category=row.category,
        plugins=list(row.plugins),
        source="expand",
        extra={"parents": list(row.parents), "lineage": lineage},
    ).to_dict()


def expand(
    seeds: Iterable[Any],
    config: ExpandConfig | Mapping[str, Any] | None = None,
    teacher: Any = None,
    out_path: str | Path | None = None,
    journal_path: str | Path | None = None,
    *,
    run_seed: int | None = None,
    progress: bool | None = None,
    engine_factory: Callable[..., Any] | None = None,
) -> StageStats:
    """Run the Self-Instruct loop over `seeds` and write the kept machine prompts to `out_path`.

    Args:
        seeds: `Seed` objects, `PromptRow`s or dicts (id, text, language, category, plugins).
        config: an ExpandConfig or its dict (None: defaults).
        teacher: a `TeacherConfig` or its dict.
        out_path: where the kept prompts go (rejected ones go to `<out>.rejected.jsonl`, counters
            to `<out>.stats.json`).
        journal_path: the teacher journal (default `<out>.journal.sqlite`); keep it to resume.
        run_seed: the run's seed, used when the config dict sets none.
        engine_factory: called instead of `TeacherEngine` with the same arguments (a batch-API
            engine); None: `TeacherEngine`.

    Returns StageStats: `count` kept, `candidates`, `rejected_<reason>`, `requests`, tokens, cost,
    and `retryable_failed` when a request failed for a reason a retry can fix: the run stopped
    after that round and is incomplete; rerun with the same arguments to resume (see the module
    docstring).
    """
    if out_path is None:
        raise ConfigError("expand needs out_path")
    if not isinstance(config, ExpandConfig):
        data = dict(config or {})
        if run_seed is not None and "seed" not in data:
            data["seed"] = run_seed
        config = ExpandConfig.from_dict(data)
    elif run_seed is not None and config.seed == 0:
        config = dataclasses.replace(config, seed=run_seed)
    if journal_path is None:
        journal_path = sidecar(out_path, "journal.sqlite")
    return asyncio.run(
        aexpand(
            seeds, config, teacher, out_path, journal_path, progress=progress, engine_factory=engine_factory
        )
    )


def print_summary(stats: StageStats) -> None:
    """The one-line summary on stderr."""
    c = stats.counts
    rejected = ", ".join(
        f"{k} {v}" for k, v in sorted(stats.by_prefix("rejected_").items(), key=lambda kv: -kv[1])
    )
    print(
        f"expand: {c.get('count', 0)} prompts kept of {c.get('candidates', 0)} candidates"
        f"{f' (rejected: {rejected})' if rejected else ''}; {c.get('requests', 0)} requests "
        f"({stats.cached_calls} from the journal); {stats.prompt_tokens + stats.completion_tokens} tokens; "
        f"${stats.cost:.4f} (paid now ${stats.paid_cost:.4f})",
        file=sys.stderr,
    )
    if stats.retryable_failed:
        failed = ", ".join(f"{k} {v}" for k, v in stats.by_prefix("failed_").items() if k in RETRYABLE)
        print(
            f"expand: stopped early: {stats.retryable_failed} requests failed ({failed}); rerun the same "
            "command to resume (finished requests come from the journal, unpaid)",
            file=sys.stderr,
        )
