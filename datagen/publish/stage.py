"""The last stages of `datagen run`: `dataset` (the Hub-ready folder, parquet and card, checked) and
`publish` (the upload, run every time: the Hub is the source of truth)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.generate.stage import count_lines
from datagen.stage import Stage, StageContext


class DatasetStage(Stage):
    """`build_dataset_folder` from the run directory, then `check_dataset_folder`."""

    name = "dataset"
    sections = ("dataset", "publish")
    after = ("final",)

    def __init__(self, run_config: Any, *, preference: bool = False):
        super().__init__(run_config)
        self.preference = preference
        if preference:  # new pairs rebuild the folder, which then carries the `preference` config
            self.after = ("final", "preference")

    @property
    def config(self) -> Any:
        return self.run_config.dataset

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        return {"main": ctx.run_dir / "dataset" / "README.md"}

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.publish.build import build_dataset_folder
        from datagen.publish.verify import check_dataset_folder

        final = ctx.output("final")
        folder = self.outputs(ctx)["main"].parent
        if not count_lines(final):
            steps = [s.funnel_row() for s in ctx.funnel.steps] if ctx.funnel is not None else []
            raise DatagenError(
                f"{final} is empty, so there is no dataset to build: "
                f"{_lost_at(steps)}; see {ctx.output('final', 'table')}"
            )
        pc = self.run_config.publish
        # Said outright, not guessed from the folder: pairs a run made before its `preference:`
        # section was removed would otherwise go out with dialogues they may no longer match.
        built = build_dataset_folder(
            ctx.run_dir,
            folder,
            license=pc.license,
            pretty_name=pc.pretty_name,
            repo_id=pc.repo_id,
            preference=self.preference,
        )
        problems = check_dataset_folder(folder)
        if problems:
            raise DatagenError(
                f"the dataset folder {folder} failed its checks: {problems[0]}"
                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        ctx.info.update({"count": getattr(built, "rows", None) or count_lines(final)})
        yield from ()


class PublishStage(Stage):
    """Upload the dataset folder to `publish.repo_id`."""

    name = "publish"
    sections = ("publish",)
    after = ("dataset",)
    always_run = True

    @property
    def config(self) -> Any:
        return self.run_config.publish

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.publish.hub import publish

        pc = self.config
        url = publish(
            ctx.output("dataset").parent,
            pc.repo_id,
            private=pc.private,
            commit_message=f"datagen run {self.run_config.name} ({ctx.run_fingerprint})",
        )
        ctx.info.update({"url": url})
        yield from ()


def _lost_at(steps: list[Mapping[str, Any]]) -> str:
    """Where a run's rows ran out: the first funnel step that kept none of what it got, and why."""
    for step in steps:
        if step.get("in") and not step.get("kept"):
            reasons = sorted((step.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:3]
            why = ", ".join(f"{r} {n}" for r, n in reasons)
            return f"step {step.get('step')} kept none of its {step['in']} rows" + (
                f" ({why})" if why else ""
            )
    return "no step had rows to keep (are there seed prompts for the enabled dialogue kinds?)"
