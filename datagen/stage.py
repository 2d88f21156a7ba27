"""The Stage contract: what every datagen stage is, whatever executor runs it.

A stage has a `name`, its typed `config`, a `fingerprint`, and `run(rows, ctx)`: a generator that
takes rows in and yields the rows it keeps, writing its outputs under `ctx.run_dir`. `ctx` carries
the run directory, the teacher journal, the executor's `rank`/`world_size` and one `StageStats`
(in / kept / dropped by reason / usage and cost) that adds across shards, so merging shards is
`sum(shards)`. The runner (`datagen.run.runner`) owns everything around `run`: skip by
fingerprint, stale outputs, the lock, the manifest, "retryable failures mean incomplete", the
funnel; an executor (`datagen.run.executors`) decides where `run` happens. Stages import no
executor, and no stage imports a later one (tests/test_layout.py).

Filters keep datatrove's predicate style: `filter(row)` returns `True` or `(False, reason)`.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

_ROW_HEAD = ("step", "in", "kept", "dropped", "tagged")
_SUMMED = (
    "in_",
    "kept",
    "dropped",
    "tagged",
    "redacted",
    "calls",
    "cached_calls",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "paid_cost",
    "retryable_failed",
    "retry_next_run",
    "seconds",
)


@dataclass(slots=True)
class StageStats:
    """Counters of one stage (or one filter step) on one shard; `a + b` adds two shards.

    Funnel: `in_` rows in, `kept` out, `dropped` with `reasons` (reason -> rows; insertion order is
    kept, zero counts too), `tagged`, `redacted`. Cost: teacher `calls`, tokens, `cost` (cached calls
    included) and `paid_cost` (what this session paid). `counts` holds any other counter
    (`requests`, `surplus`, `failed_<code>`, `skipped_done`). `retryable_failed > 0` means the stage
    is incomplete; `retry_next_run` counts rows the next run asks again. `detail` marks a filter
    step, whose funnel row also carries `redacted` and `seconds`, reasons largest first."""

    name: str
    in_: int = 0
    kept: int = 0
    dropped: int = 0
    tagged: int = 0
    redacted: int = 0
    reasons: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    paid_cost: float = 0.0
    retryable_failed: int = 0
    retry_next_run: int = 0
    examples: dict[str, str] = field(default_factory=dict)  # one redacted message per failure reason
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # more funnel-row keys, e.g. {"unscored": 3}
    detail: bool = False

    # ------------------------------------------------------------------ counting
    def drop(self, reason: str, n: int = 1) -> None:
        """Count `n` rows dropped for `reason`."""
        self.reasons[reason] += n
        self.dropped += n

    def inc(self, key: str, n: int = 1) -> None:
        """Add `n` to the free-form counter `key`."""
        self.counts[key] += n

    def fail(self, reason: str, detail: str | None = None) -> None:
        """Count `failed_<reason>` and keep the first message seen for it, redacted, as an example."""
        from datagen.teacher.redact import redact

        self.counts[f"failed_{reason}"] += 1
        if detail and reason not in self.examples:
            self.examples[reason] = redact(detail)[:300]

    def add_result(self, result: Any) -> None:
        """Count one teacher call (`datagen.teacher.types.Result`)."""
        self.calls += 1
        if result.cached:
            self.cached_calls += 1
        else:
            self.paid_cost += result.cost
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost += result.cost

    def by_prefix(self, prefix: str) -> dict[str, int]:
        """`failed_length: 3` -> `{"length": 3}`, sorted by name."""
        return {k[len(prefix) :]: v for k, v in sorted(self.counts.items()) if k.startswith(prefix)}

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Add the time spent inside the block to `seconds`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ shards
    def __add__(self, other: StageStats) -> StageStats:
        if not isinstance(other, StageStats):
            return NotImplemented
        if other.name != self.name:
            raise ValueError(f"cannot add stats of {other.name!r} to {self.name!r}")
        out = StageStats(self.name, detail=self.detail or other.detail)
        for f in _SUMMED:
            setattr(out, f, getattr(self, f) + getattr(other, f))
        for f in ("reasons", "counts"):  # update() keeps zero counts, which Counter.__add__ drops
            getattr(out, f).update(getattr(self, f))
            getattr(out, f).update(getattr(other, f))
        out.examples = {**other.examples, **self.examples}
        out.extra = {k: self.extra.get(k, 0) + other.extra.get(k, 0) for k in {**self.extra, **other.extra}}
        return out

    def __radd__(self, other: Any) -> StageStats:  # sum(shards) starts from 0
        return self if other == 0 else NotImplemented

    # ------------------------------------------------------------------ views
    def funnel_row(self) -> dict[str, Any]:
        """This stage's row of funnel.json (the shape it has always had)."""
        row: dict[str, Any] = dict(
            zip(_ROW_HEAD, (self.name, self.in_, self.kept, self.dropped, self.tagged), strict=True)
        )
        if self.detail:
            row["redacted"] = self.redacted
            row["reasons"] = dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
            row["seconds"] = round(self.seconds, 3)
        else:
            row["reasons"] = dict(self.reasons)
        return row | self.extra

    @classmethod
    def from_funnel_row(cls, row: Mapping[str, Any]) -> StageStats:
        """The inverse of `funnel_row`."""
        known = {*_ROW_HEAD, "redacted", "reasons", "seconds"}
        return cls(
            row["step"],
            row.get("in", 0),
            row.get("kept", 0),
            row.get("dropped", 0),
            row.get("tagged", 0),
            row.get("redacted", 0),
            Counter(row.get("reasons") or {}),
            seconds=row.get("seconds", 0.0),
            detail="seconds" in row,
            extra={k: v for k, v in row.items() if k not in known},
        )

    def info(self) -> dict[str, Any]:
        """The counters a teacher stage records in the manifest and `<out>.stats.json` (this shape
        is pinned by tests/pipeline/test_golden.py)."""
        return {
            "stage": self.name,
            **dict(sorted(self.counts.items())),
            "retryable_failed": self.retryable_failed,
            "retry_next_run": self.retry_next_run,
            "failure_examples": dict(sorted(self.examples.items())),
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
            "paid_cost": round(self.paid_cost, 6),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON: what one shard writes for the executor to sum (`from_dict` reads it)."""
        return {
            "name": self.name,
            **{f: getattr(self, f) for f in _SUMMED},
            "reasons": dict(self.reasons),
            "counts": dict(self.counts),
            "examples": dict(self.examples),
            "extra": dict(self.extra),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageStats:
        """The inverse of `to_dict`."""
        out = cls(
            data["name"],
            reasons=Counter(data.get("reasons") or {}),
            counts=Counter(data.get("counts") or {}),
            examples=dict(data.get("examples") or {}),
            extra=dict(data.get("extra") or {}),
            detail=bool(data.get("detail")),
        )
        for f in _SUMMED:
            if f in data:
                setattr(out, f, data[f])
        return out

    def summary(self, made_key: str = "made", failed_prefix: str = "failed_") -> str:
        """One line: made, failed with reasons, tokens, cost."""
        failed = self.by_prefix(failed_prefix)
        why = ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))
        parts = [f"{self.name}: {self.counts.get(made_key, 0)} {made_key}"]
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


# ---------------------------------------------------------------------- context and stage
def log(msg: str) -> None:
    """The run's log line on stderr (`[datagen] ...`)."""
    print(f"[datagen] {msg}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class StageResult:
    """What a finished (or skipped) stage leaves for the stages after it."""

    name: str
    fingerprint: str
    info: dict[str, Any]
    outputs: dict[str, Path]
    funnel: list[StageStats]
    skipped: bool = False


class DedupBackend(Protocol):
    """Decides a dedup step over a whole stream at once, somewhere other than this process (the Ray
    executor's is `datagen.text.neardup_ray.RayDedup`). Its answers are exactly the local keep-first
    filters' for the same rows in the same order; positions count from 0 in that order. `step` names
    the filter step, for the backend's log line."""

    def near_duplicates(self, texts: Sequence[str], params: Mapping[str, Any], *, step: str) -> Sequence[int]:
        """Per text, the position of the earlier kept text it nearly repeats, or -1 when it is kept,
        as `NearDupIndex(**params)` decides them one by one."""
        ...

    def exact_duplicates(
        self, hashes: Sequence[Sequence[int]], *, step: str
    ) -> tuple[Sequence[int], Sequence[int]]:
        """Per row of 64-bit hashes (one per unit, in the order they are checked): the position of
        the earlier kept row it repeats (-1: kept) and the column that matched (-1: kept)."""
        ...


class ChunkMapper(Protocol):
    """Runs one function over a stream of chunks somewhere other than this process (the Ray
    executor's is `datagen.run.executors.ray_chunks.RayChunkMapper`), for the per-row work of a
    stage that runs in the driver (the filter steps' predicates and `prepare_batch`)."""

    def map_chunks(
        self,
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        chunks: Iterable[Sequence[Any]],
        *,
        what: str,
    ) -> Iterator[Any]:
        """`work(state, chunk)` for each chunk, yielded in input order, with a bounded number of
        chunks in flight (the input is pulled only as results are taken). `state = setup()` is
        built once per worker (steps with their lexicons and models); `setup` and `work` must
        pickle (module-level functions, `functools.partial` of them). `what` names the work in
        the mapper's log line ("prepared"). An error raised by `work` or `setup` is raised here
        as it was raised there."""
        ...


@dataclass(slots=True)
class StageContext:
    """Everything a stage may use besides its rows. Built by the runner, one per stage and shard."""

    run_dir: Path
    config: Any  # the RunConfig; a stage reads its own section through `Stage.config`
    stats: StageStats
    journal: Path | None = None  # the run's teacher journal (journal.sqlite)
    rank: int = 0
    world_size: int = 1
    info: dict[str, Any] = field(default_factory=dict)  # what the manifest records for this stage
    upstream: Mapping[str, StageResult] = field(default_factory=dict)
    funnel: Any = None  # the run's FunnelReport so far (datagen.funnel)
    run_fingerprint: str = ""
    progress: bool = True
    log: Callable[[str], None] = log
    ensure_teacher: Callable[[], None] = lambda: None  # the runner checks the teacher once per run
    #: None: stages open a `TeacherEngine`. A batch-API executor passes its own, called as
    #: `engine_factory(teacher_config, journal_path=..., progress=..., desc=...)`.
    engine_factory: Callable[..., Any] | None = None
    #: None: the filter stage's dedup steps decide in this process. The Ray executor passes its
    #: cluster's, and `exact_dedup` / `near_dedup` then decide the whole stream there, same verdicts.
    dedup: DedupBackend | None = None
    #: None: a driver stage's per-row work runs here (the filter stage: in its worker processes).
    #: The Ray executor passes its cluster's, and the filter steps' per-chunk work runs there.
    chunk_mapper: ChunkMapper | None = None

    def output(self, stage: str, key: str = "main") -> Path:
        """A file an earlier stage declared in `outputs` (never a hard-coded name)."""
        return self.upstream[stage].outputs[key]

    def has(self, stage: str) -> bool:
        """Whether `stage` ran (or was skipped as done) earlier in this run."""
        return stage in self.upstream

    def shard_path(self, path: Path) -> Path:
        """`x/hhh.jsonl` for one shard, `x/hhh.00003.jsonl` for rank 3 of several."""
        return path if self.world_size == 1 else path.with_name(f"{path.stem}.{self.rank:05d}{path.suffix}")


def stage_fingerprint(name: str, base: str, upstream: str, inputs: str = "") -> str:
    """The chain every run directory is keyed by: do not change it (tests/pipeline/test_golden.py)."""
    return hashlib.sha256(f"{name}:{base}:{upstream}:{inputs}".encode()).hexdigest()[:16]


class Stage:
    """Base of a pipeline stage.

    Args:
        run_config: the whole RunConfig (a stage's fingerprint may cover the teacher, tools, seed).

    Subclasses set `name`, `sections` (config sections the fingerprint covers; none means
    `("seed",)`, as it always has), `after` (stages whose fingerprints chain in, in order; one
    that did not run adds nothing) and implement `outputs`, `run` and `funnel`.
    """

    name: str = ""
    sections: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    done_when: tuple[str, ...] | None = None  # output keys that must exist for "done" (None: all)
    needs_teacher: ClassVar[bool] = False
    always_run: ClassVar[bool] = False  # publish: the Hub is the source of truth
    shardable: ClassVar[bool] = False  # may an executor split its rows by rank?

    def __init__(self, run_config: Any):
        self.run_config = run_config

    @property
    def config(self) -> Any:
        """This stage's typed section (ExpandConfig, FilterConfig, CheckSection, ...)."""
        raise NotImplementedError

    def input_identity(self, ctx: StageContext) -> str:
        """Identity of files the config only names or an earlier stage wrote (the seed file, a local
        model, the dialogue files the filters read)."""
        return ""

    def fingerprint(self, upstream: str, ctx: StageContext) -> str:
        """This stage's fingerprint: its config sections, `upstream` (the fingerprints of the stages
        in `after`, joined) and `input_identity`."""
        cfg = self.run_config
        base = cfg.fingerprint(*self.sections) if self.sections else cfg.fingerprint("seed")
        return stage_fingerprint(self.name, base, upstream, self.input_identity(ctx))

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        """The files this stage writes, by key (`main` is what the next stage reads)."""
        return {}

    def fresh(self, ctx: StageContext, previous: Mapping[str, Any]) -> list[Path]:
        """Append-only outputs that belong to one fingerprint: removed when it changes."""
        return []

    def read(self, ctx: StageContext) -> Iterable[Any]:
        """The rows in, from `ctx.output(...)` of the stages in `after`."""
        return ()

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        """Stream `rows` through the stage: write its outputs, fill `ctx.info` (what the manifest
        records) and `ctx.stats`, and yield what it kept (a stage whose only outputs are its files,
        such as one that calls a whole-file function, yields nothing)."""
        raise NotImplementedError

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        """This stage's funnel rows, from what the manifest recorded (so a skipped stage has them too)."""
        return []

    def report(self, info: Mapping[str, Any], ctx: StageContext) -> None:
        """Log what a reader should know about the recorded info, whether the stage ran now or earlier."""

    # ------------------------------------------------------------------ shards (`shardable` stages)
    def record(self, ctx: StageContext) -> None:
        """Fill `ctx.info` from `ctx.stats` and the outputs. `run` calls it for its own shard; an
        executor that ran several calls it again once it summed their stats and merged their files."""

    def merge_shards(self, ctx: StageContext, world_size: int) -> None:
        """Join each output's shard files (`ctx.shard_path` of every rank, JSONL) into the output, in
        rank order. The shard files stay, so a rerun with the same shards resumes from them."""
        from datagen.io import atomic_write

        for path in self.outputs(ctx).values():
            parts = [
                p
                for r in range(world_size)
                if (
                    p := StageContext(
                        ctx.run_dir, ctx.config, ctx.stats, rank=r, world_size=world_size
                    ).shard_path(path)
                ).exists()
            ]
            if not parts:
                continue
            with atomic_write(path, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        for line in fh:
                            out.write(line if line.endswith(b"\n") else line + b"\n")


# ---------------------------------------------------------------------- filters
@dataclass(slots=True)
class Verdict:
    """A step's decision on one row. `evidence` is JSON-able (matched text, scores, checker name);
    `duplicate_of` is the id of the row a dropped duplicate repeats. Filters must not mutate the row."""

    keep: bool
    reason: str | None = None
    evidence: Any = None
    duplicate_of: str | None = None
    #: Fields to set on the row whatever the policy (e.g. `{"language": "zh-Hans"}`): filters run in
    #: worker processes, so they report changes instead of mutating the row.
    updates: dict[str, Any] | None = None

    @classmethod
    def of(cls, result: bool | tuple | Verdict) -> Verdict:
        """Normalise a filter's return value (`True`, `False`, `(False, reason[, evidence])`)."""
        if isinstance(result, Verdict):
            return result
        if isinstance(result, bool):
            return KEEP if result else cls(False, "dropped")
        if isinstance(result, tuple) and result and isinstance(result[0], bool):
            if result[0]:
                return KEEP
            reason = result[1] if len(result) > 1 else "dropped"
            evidence = result[2] if len(result) > 2 else None
            return cls(False, reason, evidence)
        raise TypeError(f"a filter must return bool, (bool, reason[, evidence]) or Verdict, got {result!r}")


KEEP = Verdict(True)

FilterResult = bool | tuple | Verdict


class Filter:
    """A predicate step: `filter(row)` returns `True` or `(False, reason[, evidence])`; calling the
    step streams rows, counts them in `self.stats` and hands rejects to `on_reject`.
    `datagen.filters.base.BaseFilter` adds policies (tag, redact) and stateful prepare/decide."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.step_name = self.name  # the name in the funnel; a config may run one type twice
        self.stats = StageStats(self.name, detail=True)

    def filter(self, row: Any) -> FilterResult:
        """Keep (`True`) or drop (`(False, reason[, evidence])`) one row."""
        raise NotImplementedError

    def verdict(self, row: Any) -> Verdict:
        """This step's verdict on one row."""
        return Verdict.of(self.filter(row))

    def apply(self, row: Any, verdict: Verdict) -> tuple[Any | None, Verdict]:
        """Count the verdict: (row to keep or None, verdict)."""
        self.stats.in_ += 1
        if verdict.keep:
            self.stats.kept += 1
            return row, verdict
        self.stats.drop(verdict.reason or "dropped")
        return None, verdict

    def __call__(
        self, rows: Iterable[Any], on_reject: Callable[[Any, Verdict], None] | None = None
    ) -> Iterator[Any]:
        """Filter a stream in this process (datatrove style); rejected rows go to on_reject."""
        for row in rows:
            with self.stats.timed():
                out, verdict = self.apply(row, self.verdict(row))
            if out is not None:
                yield out
            elif on_reject is not None:
                on_reject(row, verdict)
