"""The `final` stage of `datagen run`: the conversations that made it (`final.jsonl`) and the run's
funnel (`funnel.json`, `funnel.md`, `funnel.png`; with a judge step, its score distributions per
cell too)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.io import iter_conversations, write_json_atomic, write_jsonl_atomic
from datagen.stage import Stage, StageContext, StageStats


class FinalStage(Stage):
    """Copy the rows of the stage before it (`after`) to `final.jsonl` in one streaming pass, and
    write the whole run's funnel with the loss plot."""

    name = "final"
    done_when = ("main", "funnel", "plot")

    def __init__(self, run_config: Any, *, after: str):
        super().__init__(run_config)
        self.after = (after,)

    @property
    def config(self) -> Any:
        return None  # nothing to set: it copies what the stages before it kept

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        d = ctx.run_dir
        return {
            "main": d / "final.jsonl",
            "funnel": d / "funnel.json",
            "plot": d / "funnel.png",
            "table": d / "funnel.md",
        }

    def read(self, ctx: StageContext) -> Iterable[Any]:
        return iter_conversations(ctx.output(self.after[0]))

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.funnel import funnel_table
        from datagen.run.plot import plot_run

        out = self.outputs(ctx)
        # One streaming pass: copy the rows, keep only what the report needs.
        by_kind: Counter[str] = Counter()
        losses: list[float] = []

        def counted():
            for conv in rows:
                by_kind[conv.kind] += 1
                if conv.scores.get("moss_loss") is not None:
                    losses.append(float(conv.scores["moss_loss"]))
                yield conv

        write_jsonl_atomic(out["main"], counted())
        count = sum(by_kind.values())
        steps = ctx.funnel.steps if ctx.funnel is not None else []
        funnel = {
            "input": steps[0].in_ if steps else count,
            "kept": count,
            "steps": [s.funnel_row() for s in steps],
        }
        table = funnel_table(funnel) + "\n"
        judge = self._judge_report(ctx)
        if judge is not None:  # as a run in waves does (run/quota_final.py)
            from datagen.filters.judge_report import add_to_funnel

            table = add_to_funnel(judge, funnel, table)
        write_json_atomic(out["funnel"], funnel)
        out["table"].write_text(table, encoding="utf-8")
        dropped: list[float] = []
        cutoff = None
        if ctx.has("check") and ctx.output("check", "rejected").exists():
            dropped = [
                float(c.scores["moss_loss"])
                for c in iter_conversations(ctx.output("check", "rejected"))
                if c.scores.get("moss_loss") is not None
            ]
            report = json.loads(ctx.output("check", "report").read_text(encoding="utf-8"))
            cutoff = report.get("cutoff")
        plot_run(funnel, losses, out["plot"], cutoff=cutoff, dropped_losses=dropped)
        ctx.info.update({"count": count, "by_kind": dict(by_kind)})
        yield from ()

    def _judge_report(self, ctx: StageContext) -> dict[str, Any] | None:
        """The filter stage's judge report when the run's filters have a judge step now (a report an
        earlier config left beside the filtered rows is not this run's) and it judged rows."""
        from datagen.filters.judge_report import JUDGE_JSON

        filters = getattr(self.run_config, "filters", None)
        if not ctx.has("filter") or not any(
            s.enabled and s.step_type == "judge" for s in getattr(filters, "steps", None) or []
        ):
            return None
        path = ctx.output("filter").parent / JUDGE_JSON
        if not path.exists():
            return None
        report = json.loads(path.read_text(encoding="utf-8"))
        return report if report.get("judged") else None

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        return []
