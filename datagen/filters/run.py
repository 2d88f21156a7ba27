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
result is the same as a serial run. Inputs under `parallel_min_rows` stay in-process. Given a
`datagen.stage.ChunkMapper` (`mapper=`, what a run on Ray passes), that per-chunk work runs through
it instead of the local pool (`workers` then does not apply): steps built once per worker from the
config, chunks in input order, a bounded number in flight; the main process decides as before.

Given a `datagen.stage.DedupBackend` (`dedup=`, what a run on Ray passes), the dedup steps that come
before any other stateful step are decided by it over the whole stream instead: a first pass
prepares every chunk (spilled to a temporary file) and collects what those steps compare for the
rows that reach them; the backend decides each step in turn, over the rows the earlier ones kept;
a second pass replays the chunks with those verdicts. Kept rows, rejects, `duplicate_of` and the
funnel are the ones the local run writes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import pickle
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from datagen.filters.base import KEEP, BaseFilter, FilterResult, Verdict
from datagen.filters.config import FilterConfig
from datagen.funnel import FORMAT_STEP, KEPT_FILE, REJECTED_FILE, FunnelReport
from datagen.io import atomic_write, dumps
from datagen.procs import pool_context
from datagen.record import Conversation
from datagen.stage import ChunkMapper, DedupBackend, log


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
Prepared = tuple[list[Conversation], list[list[Outcome]]]

_WORKER_STEPS: list[BaseFilter] | None = None
_WORKER_GLOBAL: frozenset[int] = frozenset()


def _init_worker(config: FilterConfig, on_backend: frozenset[int] = frozenset()) -> None:
    global _WORKER_STEPS, _WORKER_GLOBAL
    _WORKER_STEPS = build_steps(config)
    _WORKER_GLOBAL = on_backend


def _prepare_chunk_in_worker(convs: list[Conversation]) -> list[list[Outcome]]:
    assert _WORKER_STEPS is not None
    return prepare_chunk(_WORKER_STEPS, convs, _WORKER_GLOBAL)


WorkerState = tuple[list[BaseFilter], frozenset[int]]


def _mapper_state(config: FilterConfig, on_backend: frozenset[int]) -> WorkerState:
    """What a `ChunkMapper` worker builds once: the steps (lexicons, models) and the backend's steps."""
    return build_steps(config), on_backend


def _prepare_chunk_with(state: WorkerState, convs: list[Conversation]) -> list[list[Outcome]]:
    steps, on_backend = state
    return prepare_chunk(steps, convs, on_backend)


def prepare_chunk(
    steps: list[BaseFilter], convs: list[Conversation], on_backend: Collection[int] = frozenset()
) -> list[list[Outcome]]:
    """Per row, the outcome of each step as far as the row survives the stateless steps: verdicts of
    stateless steps (redactions applied to a copy so later steps see the redacted text) and
    `prepare_batch` payloads of stateful ones (`global_input` for the steps in `on_backend`, which a
    `DedupBackend` decides). Step by step over the chunk, so steps can batch."""
    out: list[list[Outcome]] = [[] for _ in convs]
    cur = list(convs)
    alive = list(range(len(convs)))
    for si, step in enumerate(steps):
        if not alive:
            break
        if step.stateful:
            if si in on_backend:
                payloads = [step.global_input(cur[i]) for i in alive]
            else:
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


def _prepared(
    conversations: Iterable[Conversation],
    steps: list[BaseFilter],
    config: FilterConfig,
    n_workers: int,
    on_backend: frozenset[int],
    mapper: ChunkMapper | None = None,
) -> Generator[Prepared, None, None]:
    """(chunk, outcomes) in input order: in this process for a small input, else through `mapper`,
    else from worker processes, at most 2 x workers chunks ahead."""
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
    if buffered < config.parallel_min_rows or (mapper is None and n_workers <= 1):
        for chunk in all_chunks:
            yield chunk, prepare_chunk(steps, chunk, on_backend)
        return
    if mapper is not None:
        sent: deque[list[Conversation]] = deque()  # the chunks the mapper took, not yet answered

        def feed() -> Iterator[list[Conversation]]:
            for chunk in all_chunks:
                sent.append(chunk)
                yield chunk

        setup = functools.partial(_mapper_state, config, on_backend)
        results = mapper.map_chunks(setup, _prepare_chunk_with, feed(), what="prepared")
        try:
            for outcomes in results:
                yield sent.popleft(), outcomes
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        return
    with ProcessPoolExecutor(
        n_workers, mp_context=pool_context(), initializer=_init_worker, initargs=(config, on_backend)
    ) as pool:
        pending: deque[tuple[list[Conversation], Future]] = deque()
        for chunk in all_chunks:
            pending.append((chunk, pool.submit(_prepare_chunk_in_worker, chunk)))
            while len(pending) > 2 * n_workers:
                chunk, fut = pending.popleft()
                yield chunk, fut.result()
        while pending:
            chunk, fut = pending.popleft()
            yield chunk, fut.result()


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
    steps: list[BaseFilter],
    convs: list[Conversation],
    outcomes: list[list[Outcome]],
    sink: _Sink,
    decided: Collection[int] = frozenset(),
) -> int:
    """Replay the steps over one chunk in order; the steps in `decided` carry their verdicts in
    `outcomes` already (a `DedupBackend` decided them)."""
    alive = list(range(len(convs)))
    for si, step in enumerate(steps):
        if not alive:
            break
        t0 = time.perf_counter()
        if step.stateful and si not in decided:
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


# ---------------------------------------------------------------------------------------------------
# Dedup steps decided by a backend over the whole stream


def global_steps(steps: list[BaseFilter]) -> frozenset[int]:
    """Positions of the dedup steps a `DedupBackend` may decide: those before any other stateful
    step, whose verdicts only this process gives, in stream order (a judge, say)."""
    out = set()
    for si, step in enumerate(steps):
        if step.global_dedup:
            out.add(si)
        elif step.stateful:
            later = [s.step_name for s in steps[si + 1 :] if s.global_dedup]
            if later:
                log(f"filter: {', '.join(later)} decided here, not by the cluster: after {step.step_name}")
            break
    return frozenset(out)


def _decide_on_backend(
    prepared: Iterator[Prepared],
    steps: list[BaseFilter],
    on_backend: frozenset[int],
    backend: DedupBackend,
    spill_dir: Path,
) -> Generator[Prepared, None, None]:
    """Pass 1 spills every prepared chunk and collects, for each backend step, the rows the stateless
    steps let reach it (input position, `global_input`). The backend decides the steps in order,
    each over the rows the earlier ones did not drop. Pass 2 yields the chunks again with those
    steps' verdicts in place of their payloads."""
    order = sorted(on_backend)
    reach: dict[int, tuple[list[int], list[Any]]] = {si: ([], []) for si in order}
    n = chunks = 0
    with tempfile.TemporaryFile(dir=spill_dir, prefix=".dedup-") as spill:
        for chunk, outcomes in prepared:
            for i, out in enumerate(outcomes):
                for si in order:
                    if len(out) <= si:  # a stateless step dropped the row before this one
                        break
                    reach[si][0].append(n + i)
                    reach[si][1].append(out[si][1])
                    out[si] = ("p", None)
            pickle.dump((chunk, outcomes), spill, protocol=pickle.HIGHEST_PROTOCOL)
            n += len(chunk)
            chunks += 1

        # per step: (positions of the duplicates, sorted; the positions they repeat; matched column)
        hits: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        removed = np.empty(0, np.int64)
        for si in order:
            step = steps[si]
            pos = np.asarray(reach[si][0], np.int64)
            inputs = reach.pop(si)[1]
            if removed.size:
                live = ~np.isin(pos, removed)
                pos, inputs = pos[live], [x for x, k in zip(inputs, live.tolist(), strict=True) if k]
            t0 = time.perf_counter()
            dup, col = step.decide_global(backend, inputs) if inputs else ([], None)
            step.stats.seconds += time.perf_counter() - t0
            dup = np.asarray(dup, np.int64)
            hit = np.flatnonzero(dup >= 0)
            hits[si] = (pos[hit], pos[dup[hit]], None if col is None else np.asarray(col, np.int64)[hit])
            if step.policy == "drop":  # a tagged duplicate stays in the stream
                removed = np.union1d(removed, pos[hit])
        del removed

        # the ids of the rows repeated: each comes before its duplicates, so pass 2 meets it first
        targets = np.unique(np.concatenate([h[1] for h in hits.values()]))
        ids: dict[int, str] = {}
        spill.seek(0)
        start = 0
        for _ in range(chunks):
            chunk, outcomes = pickle.load(spill)
            end = start + len(chunk)
            a, b = np.searchsorted(targets, [start, end])
            ids.update((g, chunk[g - start].id) for g in targets[a:b].tolist())
            for si, (dups, firsts, cols) in hits.items():
                for out in outcomes:
                    if len(out) > si:
                        out[si] = ("v", KEEP)
                a, b = np.searchsorted(dups, [start, end])
                for j in range(a, b):
                    column = None if cols is None else int(cols[j])
                    verdict = steps[si].global_verdict(ids[int(firsts[j])], column)
                    outcomes[int(dups[j]) - start][si] = ("v", verdict)
            yield chunk, outcomes
            start = end


# ---------------------------------------------------------------------------------------------------


def run_filters(
    conversations: Iterable[Conversation],
    config: FilterConfig | None = None,
    out_dir: str | Path = "filtered",
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    dedup: DedupBackend | None = None,
    mapper: ChunkMapper | None = None,
) -> FunnelReport:
    """Filter conversations through config's enabled steps; write kept.jsonl, rejected.jsonl,
    funnel.json and funnel.md into out_dir and return the funnel.

    Args:
        conversations: any iterable (streamed; only `chunk_size` x a few rows are in memory).
        config: steps and run settings (default: `FilterConfig.default()`).
        out_dir: output folder (created). Outputs are replaced atomically at the end.
        workers: overrides `config.workers` (1 = in-process).
        progress: called with the number of rows done after each chunk.
        dedup: decides the dedup steps over the whole stream (see the module docstring); None:
            this process decides them as it streams.
        mapper: runs the per-chunk work of a large input (format and stateless steps,
            `prepare_batch`) instead of local worker processes; None: the local pool.
    """
    config = config or FilterConfig.default()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = build_steps(config)
    n_workers = workers or config.workers or os.cpu_count() or 1
    on_backend = global_steps(steps) if dedup is not None else frozenset()
    report = FunnelReport()
    done = 0
    with atomic_write(out_dir / KEPT_FILE) as kept, atomic_write(out_dir / REJECTED_FILE) as rejected:
        sink = _Sink(kept, rejected)
        prepared = _prepared(conversations, steps, config, n_workers, on_backend, mapper)
        if on_backend:
            assert dedup is not None
            prepared = _decide_on_backend(prepared, steps, on_backend, dedup, out_dir)
        # closed on an error too: the workers (the mapper's actors) go now, not when collected
        with contextlib.closing(prepared):
            for chunk, outcomes in prepared:
                report.input += len(chunk)
                report.kept += _decide_chunk(steps, chunk, outcomes, sink, on_backend)
                done += len(chunk)
                if progress:
                    progress(done)
    report.steps = [s.stats for s in steps if s.step_name != FORMAT_STEP or s.stats.dropped]
    report.write(out_dir)
    return report
