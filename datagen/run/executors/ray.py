"""The Ray executor (`datagen run CONFIG --executor ray [--address auto]`): the same stages, outputs,
funnel and manifest as the local executor, with the work spread over a Ray cluster.

- A `shardable` stage (dialogues) runs once per rank as a Ray task, each with its own
  `ctx.rank`/`world_size`, files (`ctx.shard_path`) and counters (`stats/<stage>/<rank>.json`);
  the driver sums the counters, merges the files and records the stage as one process would.
- Each rank that finishes writes `completions/<stage>/<rank>.json` (the stage's fingerprint and the
  number of shards). A driver killed mid-stage and started again runs only the ranks without one,
  with the same number of shards as before (so no row changes shard).
- Teacher calls from every rank share one limit: a `SharedLimits` actor holds the concurrency and
  the RPM/TPM windows. Each rank journals into its own `journal-shards/journal-<rank>.sqlite`
  (reading the run's journal for calls made before), merged into `journal.sqlite` after the stage,
  or on the next start when the driver died first.
- The check stage scores on actors that ask for a GPU each (`ray_check`), one model load per
  actor; without GPUs in the cluster it runs in the driver, as locally.
- Every other stage runs in the driver, as locally, but with a dedup backend on the cluster
  (`ctx.dedup`, a `RayDedup`): the filter stage's `exact_dedup` and `near_dedup` steps are decided
  there over the whole stream (`datagen.text.neardup_ray`), keeping the rows, `duplicate_of` and
  reasons the local run keeps. The other filter steps' per-row work (the format step, the
  stateless steps, `prepare_batch`) runs on actors (`ctx.chunk_mapper`, `ray_chunks`) while the
  driver decides in input order; a judge still asks the teacher from the driver. The fingerprints
  do not change, so a finished filter stage is skipped whichever executor made it.

Workers import datagen and read and write the run directory, so on a real cluster datagen must be
installed on every node, the run directory must be on a filesystem they share, and the teacher's
key must be in each node's environment (it is never sent through Ray).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.io import write_json_atomic
from datagen.ray_support import cluster_cpus, import_ray
from datagen.run.executors import read_shard_stats, write_shard_stats
from datagen.run.executors.local import LocalExecutor
from datagen.run.manifest import Manifest
from datagen.stage import ChunkMapper, DedupBackend, Stage, StageContext, StageStats, log


def completion_path(run_dir: Path, stage: str, rank: int) -> Path:
    """The marker rank `rank` of a sharded stage writes once its shard is finished."""
    return Path(run_dir) / "completions" / stage / f"{rank:05d}.json"


def _shards_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "completions" / stage / "shards.json"


def _complete(run_dir: Path, stage: str, rank: int, fingerprint: str, world_size: int) -> bool:
    path = completion_path(run_dir, stage, rank)
    try:
        mark = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return mark == {"fingerprint": fingerprint, "world_size": world_size}


def _noop() -> None:
    pass


def _rank_engine(
    teacher: Any,
    *,
    limits: Any,
    worker: str,
    shard: Path,
    base: Path | None,
    journal_path: Any = None,
    progress: bool | None = None,
    desc: str = "",
) -> Any:
    """The engine a rank's teacher stage opens: the shared limits, its own journal shard."""
    from datagen.teacher.journal_merge import ShardJournal
    from datagen.teacher.shared_limits import SharedLimitsEngine

    journal = ShardJournal(shard, base) if base is not None else None
    return SharedLimitsEngine(
        teacher, limits=limits, worker=worker, journal=journal, progress=False, desc=desc
    )


def run_rank(
    stage: Stage, ctx: StageContext, rank: int, world_size: int, fingerprint: str, limits: Any
) -> int:
    """One rank of a sharded stage (the body of its Ray task): run it on this rank's share, write
    its counters, and mark it finished unless some of its calls should be asked again."""
    from datagen.teacher.journal_merge import shard_path

    factory = ctx.engine_factory
    if limits is not None:
        factory = functools.partial(
            _rank_engine,
            limits=limits,
            worker=f"{stage.name}:{rank}",
            shard=shard_path(ctx.run_dir, rank),
            base=ctx.journal,
        )
    shard = dataclasses.replace(
        ctx, rank=rank, world_size=world_size, stats=StageStats(stage.name), info={}, engine_factory=factory
    )
    for _ in stage.run(stage.read(shard), shard):
        pass
    write_shard_stats(shard, stage.name)
    if not shard.stats.retryable_failed and not shard.stats.retry_next_run:
        write_json_atomic(
            completion_path(ctx.run_dir, stage.name, rank),
            {"fingerprint": fingerprint, "world_size": world_size},
        )
    return rank


class RayExecutor:
    """Runs stages on a Ray cluster (see the module docstring).

    Args:
        address: the cluster (`auto`, `host:port`, `ray://...`); None starts a Ray of its own on this
            machine.
        world_size: ranks of a sharded stage (default: the cluster's CPUs when it first runs).
        gpus_per_actor: GPUs each check-scoring actor asks for.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, *, world_size: int | None = None, gpus_per_actor: float = 1.0
    ):
        self.address = address
        self.world_size = world_size
        self.gpus_per_actor = gpus_per_actor
        self._limits: dict[str, Any] = {}
        self.check_nodes: list[str] = []  # where the last check's scoring actors ran
        #: (step, rows, duplicates, shards) of every dedup step decided on the cluster
        self.dedup_decided: list[tuple[str, int, int, int]] = []
        #: (what, rows, chunks, actors) of every driver stage's per-chunk work run on the cluster
        self.chunks_mapped: list[tuple[str, int, int, int]] = []
        import_ray()  # the missing extra fails before any stage runs

    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            # no address: a Ray of our own here, never the last cluster someone started on this machine
            ray.init(address=self.address or "local", log_to_driver=False)
        return ray

    def run(self, stage: Stage, ctx: StageContext) -> dict[str, Any]:
        """Run `stage`: by rank when it is shardable, its scoring on GPU actors for check, else here."""
        self._connect()
        if stage.shardable:
            return self._run_sharded(stage, ctx)
        if stage.name == "check":
            return self._run_check(stage, ctx)
        ctx.dedup = self._dedup(stage.name)
        ctx.chunk_mapper = self._chunk_mapper(stage.name)
        return LocalExecutor().run(stage, ctx)

    def _dedup(self, stage: str) -> DedupBackend:
        from datagen.text.neardup_ray import RayDedup

        return RayDedup(log=lambda msg: log(f"{stage}: {msg}"), decided=self.dedup_decided)

    def _chunk_mapper(self, stage: str) -> ChunkMapper:
        from datagen.run.executors.ray_chunks import RayChunkMapper

        return RayChunkMapper(log=lambda msg: log(f"{stage}: {msg}"), mapped=self.chunks_mapped)

    # ------------------------------------------------------------------ sharded stages
    def _shards(self, ctx: StageContext, stage: str, fingerprint: str) -> int:
        """The number of ranks: what an unfinished run of this fingerprint used, else the default."""
        path = _shards_path(ctx.run_dir, stage)
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = {}
        if before.get("fingerprint") == fingerprint:
            if self.world_size and self.world_size != before["world_size"]:
                log(
                    f"{stage}: keeping the {before['world_size']} shards this stage started with (not "
                    f"{self.world_size}), so that no row changes shard"
                )
            return int(before["world_size"])
        n = self.world_size or cluster_cpus()
        write_json_atomic(path, {"fingerprint": fingerprint, "world_size": n})
        return n

    def _limits_for(self, teacher: Any) -> Any:
        from datagen.teacher.shared_limits import SharedLimits

        key = repr((teacher.base_url, teacher.concurrency, teacher.rpm, teacher.tpm, teacher.rate_window))
        if key not in self._limits:
            self._limits[key] = SharedLimits.create(teacher)
        return self._limits[key]

    def _run_sharded(self, stage: Stage, ctx: StageContext) -> dict[str, Any]:
        ray = import_ray()
        name = stage.name
        fingerprint = Manifest.open(ctx.run_dir).stages.get(name, {}).get("fingerprint", "")
        n = self._shards(ctx, name, fingerprint)
        todo = [r for r in range(n) if not _complete(ctx.run_dir, name, r, fingerprint, n)]
        if len(todo) < n:
            log(f"{name}: {n - len(todo)} of {n} shards finished earlier, not run again")
        limits = None
        if stage.needs_teacher and ctx.engine_factory is None:
            limits = self._limits_for(ctx.config.teacher)
        self._merge_journal(ctx)  # shards a killed driver never merged
        remote_ctx = dataclasses.replace(
            ctx, ensure_teacher=_noop, funnel=None, upstream=dict(ctx.upstream), progress=False
        )
        task = ray.remote(num_cpus=1, max_retries=0)(run_rank)
        refs = {task.remote(stage, remote_ctx, r, n, fingerprint, limits): r for r in todo}
        errors: list[BaseException] = []
        try:
            for ref, rank in refs.items():
                try:
                    ray.get(ref)
                    log(f"{name}: shard {rank + 1} of {n} finished")
                except Exception as exc:  # every rank finishes what it can; then the first error
                    errors.append(exc)
                    if limits is not None:
                        limits.forget(f"{name}:{rank}")
        finally:
            self._merge_journal(ctx)
        if errors:
            raise remote_cause(errors[0])
        ctx.stats = read_shard_stats(ctx.run_dir, name, n)
        stage.merge_shards(ctx, n)
        stage.record(ctx)
        return ctx.info

    @staticmethod
    def _merge_journal(ctx: StageContext) -> None:
        from datagen.teacher.journal_merge import merge_journals, shard_paths

        shards = shard_paths(ctx.run_dir)
        if ctx.journal is not None and shards:
            merge_journals(ctx.journal, shards)

    # ------------------------------------------------------------------ check
    def _run_check(self, stage: Stage, ctx: StageContext) -> dict[str, Any]:
        from datagen.run.executors.ray_check import ActorScorer, cluster_gpus

        cc = stage.config
        gpus = cluster_gpus()
        if not gpus or not cc.model:
            return LocalExecutor().run(stage, ctx)
        scorer = ActorScorer(
            actors=max(1, int(gpus / self.gpus_per_actor)), gpus_per_actor=self.gpus_per_actor
        )
        on_gpus = copy.copy(stage)  # the runner's own stage object keeps no scorer
        on_gpus.scorer = scorer  # type: ignore[attr-defined]
        info = LocalExecutor().run(on_gpus, ctx)
        self.check_nodes = scorer.nodes
        if scorer.scored:
            log(f"check: {scorer.scored} rows scored on {len(scorer.nodes)} GPU actor(s)")
        return info


def remote_cause(exc: BaseException) -> BaseException:
    """The exception a task or actor raised, without Ray's wrapping (a DatagenError stays one
    `Error:` line)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DatagenError):
        return cause
    return exc
