"""The `filter` stage of `datagen run`: the configured filter steps over every dialogue the run made
(`filtered/kept.jsonl`, `rejected.jsonl`, `funnel.json`, `funnel.md`). When the executor gives a
dedup backend (`ctx.dedup`: a run on Ray), the dedup steps are decided by it, with the same verdicts;
the fingerprint does not depend on it, so a run made one way is done for the other. Likewise a
chunk mapper (`ctx.chunk_mapper`) runs the steps' per-row work on the cluster, same outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.paths import file_identity
from datagen.stage import Stage, StageContext, StageStats


class FilterStage(Stage):
    """`run_filters` over the dialogues of the stages in `after` that ran (a disabled kind adds
    nothing)."""

    name = "filter"
    sections = ("filters",)
    after = ("dialogues.hhh", "dialogues.plugin")
    done_when = ("main", "funnel")

    def __init__(self, run_config: Any):
        super().__init__(run_config)
        if self._judges():  # the judge asks the run's teacher: its settings are the judge's too
            self.sections = ("filters", "teacher")

    @property
    def config(self) -> Any:
        return self.run_config.filters

    def _judges(self) -> list[str]:
        """Names of the enabled judge steps."""
        steps = getattr(self.config, "steps", None) or []
        return [s.name for s in steps if s.enabled and s.step_type == "judge"]

    def _inputs(self, ctx: StageContext) -> list[Path]:
        return [ctx.output(a) for a in self.after if ctx.has(a)]

    def input_identity(self, ctx: StageContext) -> str:
        # The dialogue files too: a rerun that finishes dialogues the server refused before adds
        # rows under the same settings, and the filters must see them.
        return "|".join(file_identity(str(p)) for p in self._inputs(ctx))

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        out = ctx.run_dir / "filtered"
        return {"main": out / "kept.jsonl", "funnel": out / "funnel.json", "rejected": out / "rejected.jsonl"}

    def read(self, ctx: StageContext) -> Iterable[Any]:
        from datagen.io import iter_conversations

        for p in self._inputs(ctx):
            if p.exists():
                yield from iter_conversations(p)

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.filters.judge import run_defaults
        from datagen.filters.run import run_filters

        out_dir = self.outputs(ctx)["main"].parent
        # A judge step with no teacher of its own asks the run's, through the run's journal and
        # engine (a batch-mode run judges in batch rounds).
        with run_defaults(
            self.run_config.teacher, str(ctx.journal), ctx.engine_factory, progress=ctx.progress
        ):
            report = run_filters(rows, self.config, out_dir, dedup=ctx.dedup, mapper=ctx.chunk_mapper)
        ctx.info.update({"count": report.kept, "in": report.input})
        judges = self._judges()
        if judges:
            from datagen.filters.judge_report import judge_report_from_dir, write_judge_report

            for name in judges:
                write_judge_report(judge_report_from_dir(out_dir, step=name), out_dir)
            # rows dropped because the judge could not be reached: a rerun asks again
            unavailable = sum(s.reasons.get("judge_unavailable", 0) for s in report.steps if s.name in judges)
            if unavailable:
                ctx.info["retryable_failed"] = unavailable
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        from datagen.funnel import FunnelReport

        return FunnelReport.read(self.outputs(ctx)["funnel"]).steps
