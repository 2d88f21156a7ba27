"""The `filter` stage of `datagen run`: the configured filter steps over every dialogue the run made
(`filtered/kept.jsonl`, `rejected.jsonl`, `funnel.json`, `funnel.md`)."""

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

    @property
    def config(self) -> Any:
        return self.run_config.filters

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
        from datagen.filters.run import run_filters

        report = run_filters(rows, self.config, self.outputs(ctx)["main"].parent)
        ctx.info.update({"count": report.kept, "in": report.input})
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        from datagen.funnel import FunnelReport

        return FunnelReport.read(self.outputs(ctx)["funnel"]).steps
