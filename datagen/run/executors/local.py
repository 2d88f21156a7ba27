"""The executor that runs every stage in this process."""

from __future__ import annotations

from typing import Any

from datagen.stage import Stage, StageContext


class LocalExecutor:
    """This process, rank 0 of 1; a stage's own pools (filter workers, teacher concurrency) run
    inside it."""

    name = "local"

    def run(self, stage: Stage, ctx: StageContext) -> dict[str, Any]:
        """Stream the stage's rows through it (its outputs are its files) and return `ctx.info`."""
        for _ in stage.run(stage.read(ctx), ctx):
            pass
        return ctx.info
