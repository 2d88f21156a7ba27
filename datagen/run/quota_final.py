"""The `final` stage of a run in waves: each cell's accepted rows, in wave order, up to its target
(`final.jsonl`), the rest as a reserve for a raised target (`reserve.jsonl`), the funnel summed
over the waves with a `quota` step (`funnel.json`, `funnel.md`, `funnel.png`), and the judge's
report over every wave (`judge.json`, `judge.md`: score distributions per cell, score/length
correlation, agreement). A reviewer's decisions (`review.jsonl`) apply to the waves' rows first
(`datagen.run.quota_review`): the funnel then has a `review` step, edits become the preference pairs
of `review/pairs.jsonl`, and a rejected row's place goes to the next row of its cell."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.funnel import funnel_table
from datagen.io import write_json_atomic, write_jsonl_atomic
from datagen.paths import file_identity
from datagen.stage import Stage, StageContext, StageStats

QUOTA_STEP = "quota"


class QuotaFinalStage(Stage):
    """Cap each cell at its target across the waves of a `QuotaRun`."""

    name = "final"
    done_when = ("main", "funnel", "plot")

    def __init__(self, run_config: Any, run: Any):
        super().__init__(run_config)
        self.quota_run = run

    @property
    def config(self) -> Any:
        return self.run_config.quota

    def input_identity(self, ctx: StageContext) -> str:
        from datagen.run.quota_review import WaveReview

        waves = [file_identity(str(ctx.run_dir / w.dir / "final.jsonl")) for w in self.quota_run.waves]
        review = WaveReview(ctx.run_dir).identity()
        return json.dumps(
            [self.run_config.quota.targets, waves, *([review] if review else [])], sort_keys=True
        )

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        d = ctx.run_dir
        return {
            "main": d / "final.jsonl",
            "funnel": d / "funnel.json",
            "plot": d / "funnel.png",
            "table": d / "funnel.md",
            "reserve": d / "reserve.jsonl",
            "judge": d / "judge.json",
        }

    def _wave_rows(self, ctx: StageContext, review: Any) -> Iterator[tuple[str | None, Any]]:
        from datagen.run.waves import row_prompt

        for wave in self.quota_run.waves:
            owner = {pid: cell for cell, ids in wave.prompts.items() for pid in ids}
            for conv in review.rows(ctx.run_dir / wave.dir):
                yield owner.get(row_prompt(conv)), conv

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.review.apply import write_pairs
        from datagen.run.plot import plot_run
        from datagen.run.quota_review import WaveReview

        out = self.outputs(ctx)
        review = WaveReview(ctx.run_dir)
        targets = self.run_config.quota.targets
        taken: Counter[str] = Counter()
        reserve: list[Any] = []
        losses: list[float] = []

        def capped() -> Iterator[Any]:
            for cell, conv in self._wave_rows(ctx, review):
                if cell is None or taken[cell] >= targets.get(cell, 0):
                    reserve.append(conv.to_dict())
                    continue
                taken[cell] += 1
                if conv.scores.get("moss_loss") is not None:
                    losses.append(float(conv.scores["moss_loss"]))
                yield conv

        count = write_jsonl_atomic(out["main"], capped())
        write_jsonl_atomic(out["reserve"], reserve)
        if review.active:
            write_pairs(review.stats.pairs, ctx.run_dir / "review" / "pairs.jsonl")
        funnel = self._funnel(ctx, count, len(reserve), review.stats.to_step() if review.active else None)
        judge = self._judge_report(ctx)
        table = funnel_table(funnel) + "\n"
        if judge is not None:
            from datagen.filters.judge_report import add_to_funnel

            table = add_to_funnel(judge, funnel, table)
        write_json_atomic(out["funnel"], funnel)
        out["table"].write_text(table, encoding="utf-8")
        plot_run(funnel, losses, out["plot"])
        ctx.info.update(
            {
                "count": count,
                "reserve": len(reserve),
                "waves": len(self.quota_run.waves),
                "by_cell": {c: taken.get(c, 0) for c in targets},
                "targets": dict(targets),
            }
        )
        if review.active:
            ctx.info["review"] = review.stats.to_step()
            ctx.info["flagged"] = [f.to_dict() for f in review.stats.flagged]
        yield from ()

    def _funnel(
        self, ctx: StageContext, count: int, reserve: int, review: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The waves' funnels summed step by step (in first-seen order), then the `review` step
        (when a reviewer decided anything), then the quota step."""
        steps: dict[str, StageStats] = {}
        for wave in self.quota_run.waves:
            path = ctx.run_dir / wave.dir / "funnel.json"
            if not path.exists():
                continue
            for row in json.loads(path.read_text(encoding="utf-8")).get("steps", []):
                if row.get("step") == "expand":
                    continue  # a wave expands nothing: its prompts come from the run's pool
                if row.get("step") == "seeds":
                    row = {**row, "step": "prompts"}  # the prompts the waves asked dialogues for
                st = StageStats.from_funnel_row(row)
                steps[st.name] = steps[st.name] + st if st.name in steps else st
        seeds = ctx.funnel.steps[0] if ctx.funnel is not None and ctx.funnel.steps else None
        rows = [s.funnel_row() for s in steps.values()]
        if review is not None:
            rows.append(review)
        rows.append(
            StageStats(
                QUOTA_STEP,
                count + reserve,
                count,
                reserve,
                reasons=Counter({"over_target": reserve} if reserve else {}),
            ).funnel_row()
        )
        return {
            "input": seeds.in_ if seeds is not None else (rows[0]["in"] if rows else count),
            "kept": count,
            "steps": ([seeds.funnel_row()] if seeds is not None else []) + rows,
        }

    def _judge_report(self, ctx: StageContext) -> dict[str, Any] | None:
        from datagen.filters.judge_report import judge_report, write_judge_report
        from datagen.funnel import KEPT_FILE, REJECTED_FILE

        def rows(name: str) -> Iterator[dict[str, Any]]:
            for wave in self.quota_run.waves:
                path = ctx.run_dir / wave.dir / "filtered" / name
                if path.exists():
                    yield from (json.loads(line) for line in path.open(encoding="utf-8") if line.strip())

        from datagen.record import Conversation

        kept = (Conversation.from_dict(d) for d in rows(KEPT_FILE))
        rejected = ((Conversation.from_dict(d), d.get("rejected") or {}) for d in rows(REJECTED_FILE))
        report = judge_report(kept, rejected)
        if not report["judged"]:
            return None
        write_judge_report(report, ctx.run_dir)
        return report

    def report(self, info: Mapping[str, Any], ctx: StageContext) -> None:
        for flagged in info.get("flagged", []):
            ctx.log(f"review: {flagged['id']}: {flagged['why']}; not applied")

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        path = self.outputs(ctx)["funnel"]
        if not path.exists():
            return []
        steps = json.loads(path.read_text(encoding="utf-8")).get("steps", [])
        # the seeds row is already the runner's (its stage ran, or was skipped, before this one)
        return [StageStats.from_funnel_row(r) for r in steps if r.get("step") != "seeds"]
