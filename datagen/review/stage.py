"""The `review` stage of `datagen run`: people's decisions from `datagen review` (`review.jsonl`),
applied last, after the filters and the check: a reviewer's accept outranks any threshold."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.paths import file_identity
from datagen.stage import Stage, StageContext, StageStats


class ReviewStage(Stage):
    """`review_stage` over the rows of the stage before it (`after`: check, else filter).
    `review/` also holds the page's index, so it is never cleaned as stale."""

    name = "review"

    def __init__(self, run_config: Any, *, after: str):
        super().__init__(run_config)
        self.after = (after,)

    @property
    def config(self) -> Any:
        return None  # the decisions are a file, not a config section

    def input_identity(self, ctx: StageContext) -> str:
        return file_identity(str(ctx.run_dir / "review.jsonl"))

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        return {"main": ctx.run_dir / "review" / "kept.jsonl"}

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.review.apply import review_stage

        ctx.info.update(review_stage(ctx.run_dir, ctx.output(self.after[0]), self.outputs(ctx)["main"]))
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        return [StageStats.from_funnel_row(info["funnel_step"])]

    def report(self, info: Mapping[str, Any], ctx: StageContext) -> None:
        for flagged in info.get("flagged", []):
            ctx.log(f"review: {flagged['id']}: {flagged['why']}; not applied")
