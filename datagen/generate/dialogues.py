"""`datagen generate`: HHH and plugin dialogues from prompts, many at once, resumable.

    from datagen.generate.dialogues import generate_dialogues
    stats = generate_dialogues(prompts, "hhh", DialogueConfig(turns=[4]), TeacherConfig(...),
                               "out/hhh.jsonl", "out/hhh.journal.sqlite")
    print(stats.summary())

Output: finished dialogues are appended to `out_path` (one `Conversation` per line, flushed), so a
killed run loses nothing finished. A rerun skips ids already there (conversation ids are
`<kind>-<prompt id>`, so never duplicated), and the journal answers every call the killed run had
finished, so unfinished dialogues continue mid-dialogue without paying again.

Beside the output: `<out>.failed.jsonl` (one row per failed dialogue: id, reason, detail, turn,
whether asking again can help, run fingerprint) and `<out>.stats.json`. What a rerun tries again:

    failed on the API (timeouts, 5xx after retries), tool backend down   always; these make the
                                                 stats' `retryable_failed` (the stage is incomplete)
    refused by the server (400/422)              always (`retry_next_run`): the server or the
                                                 config may have been fixed, and a 400 costs nothing
    reply stayed unusable (length, empty, ...)   when the config, templates, teacher model or
                                                 params changed, when nothing has been made yet
                                                 (the failures were the setup's, not the prompts'),
                                                 or with `retry_failed=True`

Finished calls of a dialogue tried again come from the journal. Dialogues never tried go before
those that failed before, and when the first `GIVE_UP_AFTER` dialogues to end all failed for good
the stage starts no more (the rest count as `retryable_failed`): a setup that fails every call
does not pay for every prompt. Each run compacts the failure ledger when it starts and ends: the
latest row per dialogue, none for dialogues finished since.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, TeacherError
from datagen.generate.common import (
    PERMANENT_ERRORS,
    RERUN_FIXES,
    PromptRow,
    StageStats,
    as_teacher_config,
    existing_ids,
    sidecar,
)
from datagen.generate.config import DialogueConfig
from datagen.generate.maker import DialogueFailed, DialogueMaker, ToolRunner
from datagen.generate.prompts import PromptBook
from datagen.io import AppendWriter, iter_json_lines, write_json_atomic, write_jsonl_atomic
from datagen.teacher.redact import redact

#: When this many dialogues have ended, all failed for good and none made, the stage starts no more.
GIVE_UP_AFTER = 16


def _dialogue_config(
    kind: str,
    config: DialogueConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any] | None,
    run_seed: int | None,
) -> DialogueConfig:
    if config is not None and options:
        raise ConfigError("give either config or options, not both")
    if isinstance(config, DialogueConfig):
        if config.kind != kind:
            raise ConfigError(
                f"config is for {config.kind!r} dialogues, asked for {kind!r}", field="dialogues.kind"
            )
        if run_seed is not None and config.seed == 0:
            config = dataclasses.replace(config, seed=run_seed)
        return config
    data = dict(config or options or {})
    if run_seed is not None and "seed" not in data:
        data["seed"] = run_seed
    return DialogueConfig.from_dict(
        data, kind=kind, where=f"dialogues.{kind}.options" if options else "dialogues"
    )


def _failed_before(path: Path) -> dict[str, dict[str, Any]]:
    """The failure ledger's latest row per dialogue id."""
    if not path.exists():
        return {}
    return {str(obj["id"]): obj for _, obj in iter_json_lines(path) if isinstance(obj, dict) and "id" in obj}


def _given_up(failed: dict[str, dict[str, Any]], run_id: str) -> set[str]:
    # Only unusable replies under the same run fingerprint: with another config, template or model
    # the teacher may well answer, and a refused request (400) is retried on every run.
    return {
        cid
        for cid, obj in failed.items()
        if obj.get("permanent") and obj.get("run") == run_id and obj.get("reason") not in PERMANENT_ERRORS
    }


def compact_failures(path: str | Path, done: set[str]) -> int:
    """Rewrite a `<out>.failed.jsonl` ledger keeping only the latest row of each dialogue id and
    none of the ids now finished (in `done`), so the file does not grow with every rerun. Rows
    without an id are kept. Returns the number of rows dropped (0: the file is left untouched)."""
    path = Path(path)
    if not path.exists():
        return 0
    latest: dict[str, tuple[int, Any]] = {}
    other: list[tuple[int, Any]] = []
    total = 0
    for order, (_, obj) in enumerate(iter_json_lines(path)):
        total += 1
        if isinstance(obj, dict) and "id" in obj:
            latest[str(obj["id"])] = (order, obj)
        else:
            other.append((order, obj))
    keep = sorted([v for k, v in latest.items() if k not in done] + other, key=lambda v: v[0])
    if len(keep) == total:
        return 0
    write_jsonl_atomic(path, (obj for _, obj in keep))
    return total - len(keep)


def _build_tools(kind: str, prompts: list[PromptRow], config: DialogueConfig, tools: Any, tools_config: Any):
    if kind != "plugin":
        return None
    if tools is None:
        from datagen.tools.base import build_tools

        tools = build_tools(tools_config) if tools_config else {}
    tools = dict(tools)
    needed = set(config.plugins)
    for p in prompts:
        needed.update(p.plugins)
    missing = sorted(needed - set(tools))
    if missing:  # plugins the config did not set up get their defaults
        from datagen.tools.base import build_tools

        tools.update(build_tools(missing))
    return tools


def run_fingerprint(
    config: DialogueConfig,
    teacher_model: str,
    book: PromptBook,
    teacher_params: Mapping[str, Any] | None = None,
) -> str:
    """A short hash naming what produced a dialogue: config, teacher model, templates' text and the
    teacher's default params (a 400 is often a parameter the server refuses: fixing it must retry
    the dialogues that failed for good with it)."""
    templates = ["hhh_assistant", "hhh_user", "plugin_commands", "plugin_answer"]
    data: dict[str, Any] = {
        "config": config.to_dict(),
        "model": teacher_model,
        "templates": {n: book.get(n).digest for n in templates},
    }
    if teacher_params:
        data["teacher_params"] = dict(teacher_params)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


async def agenerate_dialogues(
    prompts: Iterable[Any],
    kind: str,
    config: DialogueConfig,
    teacher: Any,
    out_path: str | Path,
    journal_path: str | Path | None,
    *,
    tools: Any = None,
    tools_config: Any = None,
    failed_path: str | Path | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    engine_factory: Callable[..., Any] | None = None,
) -> StageStats:
    """The async body of `generate_dialogues` (for callers already inside an event loop)."""
    from datagen.teacher.engine import TeacherEngine

    teacher = as_teacher_config(teacher)
    out_path = Path(out_path)
    failed_path = Path(failed_path) if failed_path is not None else sidecar(out_path, "failed.jsonl")
    stats = StageStats(f"{kind} dialogues")
    book = PromptBook(config.templates_dir, dict(config.template_versions))

    rows = [PromptRow.of(p) for p in prompts]
    if world_size > 1:
        rows = [p for i, p in enumerate(rows) if i % world_size == rank]
    stats.inc("prompts", len(rows))
    run_id = run_fingerprint(config, teacher.model, book, teacher.params)
    done = existing_ids(out_path)
    if world_size == 1:  # shards may share the ledger: only an unsharded run may rewrite it
        compact_failures(failed_path, done)
    failed_before = _failed_before(failed_path)
    # Nothing made yet: the failures say the setup was broken (a refused parameter, a server
    # answering nothing), not that these prompts are hopeless. Try them again.
    given_up = set() if retry_failed or not done else _given_up(failed_before, run_id)
    seen: set[str] = set()
    todo: list[PromptRow] = []
    for p in rows:
        cid = f"{kind}-{p.id}"
        if cid in seen:
            stats.inc("skipped_duplicate_prompt_id")
            continue
        seen.add(cid)
        if cid in done:
            stats.inc("skipped_done")
        elif cid in given_up:
            stats.inc("skipped_failed_before")
        else:
            todo.append(p)
    todo.sort(key=lambda p: f"{kind}-{p.id}" in failed_before)  # never tried first (a stable sort)

    tool_map = _build_tools(kind, todo, config, tools, tools_config)
    runner = ToolRunner(tool_map) if tool_map is not None else None
    maker: DialogueMaker | None = None
    made: set[str] = set()
    try:
        make_engine = engine_factory or TeacherEngine
        async with make_engine(
            teacher, journal_path=journal_path, progress=progress, desc=f"{kind} dialogues"
        ) as engine:
            maker = DialogueMaker(
                engine=engine,
                config=config,
                book=book,
                stats=stats,
                teacher_model=teacher.model,
                teacher_params=dict(teacher.params),
                tools=runner,
                run_id=run_id,
            )
            calls_per_turn = 3 if kind == "plugin" else 2
            engine.expect(
                int(
                    sum(
                        calls_per_turn * config.turn_distribution(p.category, p.language).mean - 1
                        for p in todo
                    )
                )
            )
            with AppendWriter(out_path) as writer, AppendWriter(failed_path) as failed_writer:
                # In batch mode every unfinished dialogue takes part in each round: the fewest rounds.
                default = len(todo) if getattr(teacher, "mode", "online") == "batch" else teacher.concurrency
                await _run_all(maker, todo, writer, failed_writer, stats, config.concurrency or default, made)
    finally:
        if runner is not None:
            runner.close()
    if world_size == 1:  # and once more, so the ledger names no dialogue this run finished
        compact_failures(failed_path, done | made)
    write_json_atomic(sidecar(out_path, "stats.json"), stats.info(), sort_keys=True)
    if maker is not None and maker.fatal is not None:
        raise TeacherError(
            f"the teacher refused every call ({maker.fatal.reason}: {maker.fatal.detail}); "
            f"fix the teacher settings and rerun the same command to resume"
        )
    return stats


async def _run_all(
    maker: DialogueMaker,
    todo: list[PromptRow],
    writer: AppendWriter,
    failed_writer: AppendWriter,
    stats: StageStats,
    concurrency: int,
    made: set[str],
) -> None:
    pending: set[asyncio.Task[Any]] = set()
    it = iter(todo)
    exhausted = False
    started = 0
    failed_for_good = 0
    try:
        while True:
            if (
                not exhausted
                and not made
                and not stats.counts["skipped_done"]
                and failed_for_good >= GIVE_UP_AFTER
            ):
                # Every dialogue so far failed for good: the setup is broken. Start no more; the
                # caller reports the cause, and a rerun starts with the ones never tried.
                exhausted = True
                stats.inc("not_started", len(todo) - started)
                stats.retryable_failed += len(todo) - started
            while not exhausted and maker.fatal is None and len(pending) < concurrency:
                prompt = next(it, None)
                if prompt is None:
                    exhausted = True
                    break
                started += 1
                pending.add(asyncio.ensure_future(_one(maker, prompt)))
            if not pending:
                return
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                conv, failure = task.result()
                if conv is not None:
                    writer.write(conv)
                    made.add(conv.id)
                    stats.inc("made")
                    stats.inc("turns", len(conv.turns))
                    stats.inc("tool_failed_turns", sum(1 for t in conv.turns if "tool_failed" in t.flags))
                else:
                    f = failure.failure
                    detail = redact(f.detail)[:500]
                    failed_writer.write(
                        {
                            "id": failure.conv.id,
                            "prompt_id": failure.conv.extra.get("generation", {}).get("prompt_id"),
                            "reason": f.reason,
                            "role": f.role,
                            "detail": detail,
                            "turn": failure.turn,
                            "permanent": f.permanent,
                            "run": maker.run_id,
                            "usage": failure.conv.usage.to_dict(),
                        }
                    )
                    stats.fail(f.reason, f"{f.role}: {detail}" if f.role else detail)
                    if not f.permanent and f.reason in RERUN_FIXES:
                        # a transient API failure or a tool backend down: the stage is incomplete
                        stats.retryable_failed += 1
                    elif f.reason in PERMANENT_ERRORS:
                        stats.retry_next_run += 1
                    if f.permanent:
                        failed_for_good += 1
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _one(maker: DialogueMaker, prompt: PromptRow):
    try:
        return await maker.make(prompt), None
    except DialogueFailed as exc:
        return None, exc


def generate_dialogues(
    prompts: Iterable[Any],
    kind: str = "hhh",
    config: DialogueConfig | Mapping[str, Any] | None = None,
    teacher: Any = None,
    out_path: str | Path | None = None,
    journal_path: str | Path | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    tools: Mapping[str, Any] | None = None,
    tools_config: Any = None,
    run_seed: int | None = None,
    failed_path: str | Path | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    engine_factory: Callable[..., Any] | None = None,
) -> StageStats:
    """Generate `kind` (`hhh` or `plugin`) dialogues, one per prompt, appending them to `out_path`.

    Args:
        prompts: seeds or expanded prompts (`Seed` objects, `PromptRow`s or dicts with id, text,
            language, category, plugins).
        kind: `hhh` or `plugin`.
        config: a DialogueConfig, or a dict of its fields (`options` is the same, as the pipeline
            passes it); `run_seed` fills in `seed` when the dict has none.
        teacher: a `TeacherConfig` (or its dict).
        out_path: the dialogues JSONL (appended; ids already there are skipped).
        journal_path: the teacher journal (default `<out>.journal.sqlite`); keep it to resume.
        tools, tools_config: plugin tools (`{plugin: Tool}`), or the config to build them with
            `datagen.tools.build_tools`; plugins without a configured tool get the defaults.
        retry_failed: also retry dialogues that failed for good on an earlier run.
        rank, world_size: make only every `world_size`-th prompt starting at `rank` (sharding).
        engine_factory: called instead of `TeacherEngine` with the same arguments (a batch-API
            engine); None: `TeacherEngine`.

    Returns the run's StageStats (`made`, `failed_<reason>`, `skipped_done`, tokens, cost, and
    `retryable_failed`: the dialogues that failed for reasons a rerun retries, such as an API
    failure after the engine's retries or a tool backend down; see `common.RERUN_FIXES`).
    Raises TeacherError when the teacher refuses every call (bad key, no quota, unknown model).
    """
    if out_path is None:
        raise ConfigError("generate_dialogues needs out_path")
    cfg = _dialogue_config(kind, config, options, run_seed)
    if journal_path is None:
        journal_path = sidecar(out_path, "journal.sqlite")
    return asyncio.run(
        agenerate_dialogues(
            prompts,
            kind,
            cfg,
            teacher,
            out_path,
            journal_path,
            tools=tools,
            tools_config=tools_config,
            failed_path=failed_path,
            retry_failed=retry_failed,
            progress=progress,
            rank=rank,
            world_size=world_size,
            engine_factory=engine_factory,
        )
    )


def print_summary(stats: StageStats) -> None:
    """The one-line summary on stderr."""
    print(stats.summary(), file=sys.stderr)
