"""Executors: where a stage's `run(rows, ctx)` happens.

The runner (`datagen.run.runner`) owns everything around a stage (fingerprints, the manifest, the
lock, the funnel); an executor only runs it and returns what the manifest records for it
(`ctx.info`). `LocalExecutor` runs every stage in this process (a stage's own pools, such as the
filter workers and the teacher's concurrency, run inside it). Others sit beside it without touching
a stage:

- a batch-API executor sets `ctx.engine_factory`, so the teacher stages submit batches instead of
  live calls;
- a Ray executor runs a `Stage.shardable` stage once per rank, each with its own
  `dataclasses.replace(ctx, rank=r, world_size=n, stats=StageStats(stage.name), info={})`, writes
  each rank's `StageStats.to_dict()` to `stats/{stage}/{rank:05d}.json`, sums them
  (`sum(StageStats.from_dict(...) for ...)`) and merges the shard outputs (`ctx.shard_path`).
"""

from __future__ import annotations

from typing import Any, Protocol

from datagen.run.executors.local import LocalExecutor
from datagen.stage import Stage, StageContext

__all__ = ["Executor", "LocalExecutor"]


class Executor(Protocol):
    """Runs one stage with the context the runner built; returns `ctx.info` (or the merged info of
    its shards)."""

    name: str

    def run(self, stage: Stage, ctx: StageContext) -> dict[str, Any]: ...
