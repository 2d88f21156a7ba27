"""The `check` stage of `datagen run`: score the filtered rows with a local model and split them by
a loss threshold (`checked/scored.jsonl`, `kept.jsonl`, `rejected.jsonl`, `report.json`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datagen.paths import file_identity
from datagen.stage import Stage, StageContext, StageStats, stage_fingerprint

if TYPE_CHECKING:
    from datagen.check.scoring import Scorer

#: What the scores depend on: the model, the context and the rows. The threshold only splits them.
SCORE_SECTIONS = ("check.model", "check.max_length", "check.max_rows", "check.tokenization")


class CheckStage(Stage):
    """`run_check` over the rows the filters kept. A changed threshold re-splits the scores already
    made instead of scoring again: the scores have their own fingerprint."""

    name = "check"
    sections = ("check",)
    after = ("filter",)
    done_when = ("main",)

    def __init__(self, run_config: Any, *, scorer: Scorer | None = None):
        super().__init__(run_config)
        self.score_fingerprint = ""
        #: None: the model loads in this process. An executor may score elsewhere (`ray_check`).
        self.scorer = scorer

    @property
    def config(self) -> Any:
        return self.run_config.check

    def input_identity(self, ctx: StageContext) -> str:
        return file_identity(self.config.model)

    def fingerprint(self, upstream: str, ctx: StageContext) -> str:
        cfg = self.run_config
        self.score_fingerprint = stage_fingerprint(
            "check.scores", cfg.fingerprint(*SCORE_SECTIONS), upstream, self.input_identity(ctx)
        )
        return stage_fingerprint(self.name, cfg.fingerprint(*self.sections), self.score_fingerprint)

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        out = ctx.run_dir / "checked"
        return {
            "main": out / "kept.jsonl",
            "scored": out / "scored.jsonl",
            "rejected": out / "rejected.jsonl",
            "report": out / "report.json",
        }

    def fresh(self, ctx: StageContext, previous: Mapping[str, Any]) -> list[Path]:
        if previous.get("score_fingerprint") == self.score_fingerprint:
            return []
        return [self.outputs(ctx)["main"].parent]

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.check.files import run_check

        cc = self.config
        ctx.info.update(
            {"score_fingerprint": self.score_fingerprint}
            | run_check(
                ctx.output("filter"),
                self.outputs(ctx)["main"].parent,
                model=cc.model,
                batch_size=cc.batch_size,
                max_length=cc.max_length,
                max_loss=cc.max_loss,
                percentile=cc.percentile,
                max_rows=cc.max_rows,
                progress=ctx.progress,
                tokenization=cc.tokenization,
                scorer=self.scorer,
            )
        )
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        row = info.get("funnel_step") or {
            "step": "moss_check",
            "in": info.get("in", 0),
            "kept": info.get("count", 0),
            "dropped": 0,
            "tagged": 0,
            "reasons": {},
        }
        return [StageStats.from_funnel_row(row)]
