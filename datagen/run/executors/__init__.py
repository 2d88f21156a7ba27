"""Executors: where a stage's `run(rows, ctx)` happens.

The runner (`datagen.run.runner`) owns everything around a stage (fingerprints, the manifest, the
lock, the funnel); an executor only runs it and returns what the manifest records for it
(`ctx.info`). `LocalExecutor` runs every stage in this process (a stage's own pools, such as the
filter workers and the teacher's concurrency, run inside it). Others sit beside it without touching
a stage:

- a batch-API executor sets `ctx.engine_factory`, so the teacher stages submit batches instead of
  live calls;
- a Ray executor runs a `Stage.shardable` stage once per rank, each with its own
  `dataclasses.replace(ctx, rank=r, world_size=n, stats=StageStats(stage.name), info={})`; each rank
  writes its counters with `write_shard_stats`; then, in the driver, `ctx.stats =
  read_shard_stats(...)`, `stage.merge_shards(ctx, n)` and `stage.record(ctx)` give the stage's
  outputs and info as one process would have. A stage that is not shardable runs once, as here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from datagen.io import write_json_atomic
from datagen.run.executors.local import LocalExecutor
from datagen.stage import Stage, StageContext, StageStats

__all__ = ["Executor", "LocalExecutor", "read_shard_stats", "shard_stats_path", "write_shard_stats"]


class Executor(Protocol):
    """Runs one stage with the context the runner built; returns `ctx.info` (or the merged info of
    its shards)."""

    name: str

    def run(self, stage: Stage, ctx: StageContext) -> dict[str, Any]: ...


def shard_stats_path(run_dir: Path, stage: str, rank: int) -> Path:
    """Where rank `rank` of a sharded stage leaves its counters: `stats/{stage}/{rank:05d}.json`."""
    return Path(run_dir) / "stats" / stage / f"{rank:05d}.json"


def write_shard_stats(ctx: StageContext, stage: str) -> Path:
    """Write this shard's `ctx.stats` (all of it, `StageStats.to_dict`) for the driver to sum."""
    path = shard_stats_path(ctx.run_dir, stage, ctx.rank)
    write_json_atomic(path, ctx.stats.to_dict())
    return path


def read_shard_stats(run_dir: Path, stage: str, world_size: int) -> StageStats:
    """The sum of every rank's counters (a missing rank is an error: its shard did not finish)."""
    shards = []
    for rank in range(world_size):
        path = shard_stats_path(run_dir, stage, rank)
        shards.append(StageStats.from_dict(json.loads(path.read_text(encoding="utf-8"))))
    return sum(shards)
