"""Run the configured filter steps over a stream of conversations and write the funnel.

    report = run_filters(read_conversations(path), FilterConfig.default(), Path("out/filtered"))

writes `kept.jsonl` (Conversation rows, as `datagen convert` reads), `rejected.jsonl` (the same rows
plus `"rejected": {"step", "reason", "evidence", "duplicate_of"?}`), `funnel.json` and `funnel.md`.

Before the configured steps, the built-in `format` step rejects rows that are not well-formed MOSS
003 (`datagen.formats.validate.format_defect`: `malformed_commands`, `missing_result`, ...). The
readers keep such rows (released MOSS data has them) rather than stopping the run; this is where
they leave the stream, each with its reason. The funnel lists the step only when it rejected rows.

Large inputs use worker processes: each worker runs the stateless steps' predicates and the stateful
steps' `prepare` (MinHash signatures, hashes, keyword scans) on a chunk of rows; the main process
replays the steps in order, feeding the stateful ones (dedup indexes, judges) in input order, so the
result is the same as a serial run. Inputs under `parallel_min_rows` stay in-process.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

from datagen.filters.base import BaseFilter, FilterResult, Verdict
from datagen.filters.config import FilterConfig
from datagen.funnel import FORMAT_STEP, KEPT_FILE, REJECTED_FILE, FunnelReport
from datagen.io import atomic_write, dumps
from datagen.procs import pool_context
from datagen.record import Conversation


class FormatStep(BaseFilter):
    """The built-in first step: drop rows that are not well-formed MOSS 003 (a segment that did not
    parse, a command MOSS does not have, a call without its result, ...), each with the reason
    `datagen.formats.validate.format_defect` gives. Not configurable: later steps assume calls
    and results that fit together."""

    name = FORMAT_STEP

    def filter(self, conv: Conversation) -> FilterResult:
        from datagen.formats.validate import format_defect

        found = format_defect(conv)
        return True if found is None else (False, *found)


def build_steps(config: FilterConfig) -> list[BaseFilter]:
    """The steps a run applies, in order: the built-in `format` step, then the configured ones."""
    return [FormatStep(), *config.build_steps()]


# ---------------------------------------------------------------------------------------------------
# Work split between workers (prepare) and the main process (decide)

Outcome = tuple[str, Any]  # ("v", Verdict) for a stateless step, ("p", payload) for a stateful one

_WORKER_STEPS: list[BaseFilter] | None = None


def _init_worker(config: FilterConfig) -> None:
    global _WORKER_STEPS
    _WORKER_STEPS = build_steps(config)


def _prepare_chunk_in_worker(convs: list[Conversation]) -> list[list[Outcome]]:
    assert _WORKER_STEPS is not None
    return prepare_chunk(_WORKER_STEPS, convs)


def prepare_chunk(steps: list[BaseFilter], convs: list[Conversation]) -> list[list[Outcome]]:
    """Per row, the outcome of each step as far as the row survives the stateless steps: verdicts of
    stateless steps (redactions applied to a copy so later steps see the redacted text) and
    `prepare_batch` payloads of stateful ones. Step by step over the chunk, so steps can batch."""
    out: list[list[Outcome]] = [[] for _ in convs]
    cur = list(convs)
    alive = list(range(len(convs)))
    for step in steps:
        if not alive:
            break
        if step.stateful:
            payloads = step.prepare_batch([cur[i] for i in alive])
            for i, p in zip(alive, payloads, strict=True):
                out[i].append(("p", p))
            continue
        survivors = []
        for i in alive:
            v = Verdict.of(step.filter(cur[i]))
            out[i].append(("v", v))
            if v.keep or step.policy == "tag":
                survivors.append(i)
            elif step.policy == "redact":
                red = step.redact(Conversation.from_dict(cur[i].to_dict()), v)
                if red is not None:
                    cur[i] = red
                    survivors.append(i)
            # else dropped here: later steps never see it
        alive = survivors
    return out


def _chunks(rows: Iterable[Conversation], size: int) -> Iterator[list[Conversation]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class _Sink:
    """kept.jsonl and rejected.jsonl, each written to a temporary file that replaces it when the
    run ends without error (`io.atomic_write`)."""

    def __init__(self, kept: IO[str], rejected: IO[str]):
        self.kept, self.rejected = kept, rejected

    def keep(self, conv: Conversation) -> None:
        self.kept.write(dumps(conv.to_dict()) + "\n")

    def reject(self, conv: Conversation, step: str, v: Verdict) -> None:
        d = conv.to_dict()
        rej: dict[str, Any] = {"step": step, "reason": v.reason or "dropped", "evidence": v.evidence}
        if v.duplicate_of is not None:
            rej["duplicate_of"] = v.duplicate_of
        d["rejected"] = rej
        self.rejected.write(dumps(d) + "\n")


def _decide_chunk(
    steps: list[BaseFilter], convs: list[Conversation], outcomes: list[list[Outcome]], sink: _Sink
) -> int:
    alive = list(range(len(convs)))
    for si, step in enumerate(steps):
        if not alive:
            break
        t0 = time.perf_counter()
        if step.stateful:
            verdicts = step.decide_batch([(convs[i], outcomes[i][si][1]) for i in alive])
        else:
            verdicts = [outcomes[i][si][1] for i in alive]
        survivors = []
        for i, v in zip(alive, verdicts, strict=True):
            kept, v = step.apply(convs[i], v)
            if kept is None:
                sink.reject(convs[i], step.step_name, v)
            else:
                convs[i] = kept
                survivors.append(i)
        alive = survivors
        step.stats.seconds += time.perf_counter() - t0
    for i in alive:
        sink.keep(convs[i])
    return len(alive)


def run_filters(
    conversations: Iterable[Conversation],
    config: FilterConfig | None = None,
    out_dir: str | Path = "filtered",
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FunnelReport:
    """Filter conversations through config's enabled steps; write kept.jsonl, rejected.jsonl,
    funnel.json and funnel.md into out_dir and return the funnel.

    Args:
        conversations: any iterable (streamed; only `chunk_size` x a few rows are in memory).
        config: steps and run settings (default: `FilterConfig.default()`).
        out_dir: output folder (created). Outputs are replaced atomically at the end.
        workers: overrides `config.workers` (1 = in-process).
        progress: called with the number of rows done after each chunk.
    """
    config = config or FilterConfig.default()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = build_steps(config)
    n_workers = workers or config.workers or os.cpu_count() or 1
    report = FunnelReport()
    done = 0
    with atomic_write(out_dir / KEPT_FILE) as kept, atomic_write(out_dir / REJECTED_FILE) as rejected:
        sink = _Sink(kept, rejected)
        chunks = _chunks(conversations, config.chunk_size)
        # Buffer up to parallel_min_rows rows: a small input never pays for worker start-up.
        head: list[list[Conversation]] = []
        buffered = 0
        for chunk in chunks:
            head.append(chunk)
            buffered += len(chunk)
            if buffered >= config.parallel_min_rows:
                break
        all_chunks = itertools.chain(head, chunks)
        if n_workers <= 1 or buffered < config.parallel_min_rows:
            for chunk in all_chunks:
                report.input += len(chunk)
                report.kept += _decide_chunk(steps, chunk, prepare_chunk(steps, chunk), sink)
                done += len(chunk)
                if progress:
                    progress(done)
        else:
            ctx = pool_context()
            with ProcessPoolExecutor(
                n_workers, mp_context=ctx, initializer=_init_worker, initargs=(config,)
            ) as pool:
                pending: list[tuple[list[Conversation], Future]] = []
                for chunk in all_chunks:
                    pending.append((chunk, pool.submit(_prepare_chunk_in_worker, chunk)))
                    while len(pending) > 2 * n_workers:
                        done += _finish(pending.pop(0), steps, sink, report, progress, done)
                while pending:
                    done += _finish(pending.pop(0), steps, sink, report, progress, done)
    report.steps = [s.stats for s in steps if s.step_name != FORMAT_STEP or s.stats.dropped]
    report.write(out_dir)
    return report


def _finish(
    item: tuple[list[Conversation], Future],
    steps: list[BaseFilter],
    sink: _Sink,
    report: FunnelReport,
    progress: Callable[[int], None] | None,
    done: int,
) -> int:
    chunk, fut = item
    report.input += len(chunk)
    report.kept += _decide_chunk(steps, chunk, fut.result(), sink)
    if progress:
        progress(done + len(chunk))
    return len(chunk)
