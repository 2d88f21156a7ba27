"""The `preference` stage of `datagen run`: preference pairs from the conversations that made it
(`final.jsonl`), written under `preference/` for the dataset's `preference` config and `datagen dpo`.

It adds no funnel row: the funnel counts dialogues, and pairs are not dialogues. What it judged and
dropped, by reason, is in the manifest (`funnel_step`) and `preference/stats.json`, which the card
reads. Its calls go through the run's journal, so a rerun pays only for what changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.paths import file_identity
from datagen.preference.config import PreferenceConfig
from datagen.preference.run import OUTPUTS
from datagen.stage import Stage, StageContext, StageStats


class PreferenceStage(Stage):
    """`make_preference` over `final.jsonl`, with the run's teacher, tools and journal."""

    name = "preference"
    sections = ("preference", "teacher", "tools", "seed")
    after = ("final",)
    needs_teacher = True
    done_when = ("main", "stats")

    @property
    def config(self) -> PreferenceConfig:
        section = getattr(self.run_config, "preference", None)
        config = section if isinstance(section, PreferenceConfig) else PreferenceConfig.from_dict(section)
        tools = getattr(self.run_config, "tools", None)
        if config.tools is None and tools:
            config = dataclasses.replace(config, tools=dict(tools))
        return config

    def input_identity(self, ctx: StageContext) -> str:
        """Local models sampled for candidates: a changed checkpoint draws other answers."""
        return "|".join(file_identity(s.model) for s in self.config.sources if s.kind == "local" and s.model)

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        d = ctx.run_dir / "preference"
        return {"main": d / OUTPUTS["pairs"], **{k: d / v for k, v in OUTPUTS.items() if k != "pairs"}}

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.io import iter_conversations
        from datagen.preference.run import make_preference

        stats = make_preference(
            iter_conversations(ctx.output("final")),
            self.config,
            self.run_config.teacher,
            self.outputs(ctx)["main"].parent,
            journal_path=ctx.journal,
            progress=ctx.progress,
        )
        ctx.info.update({k: v for k, v in stats.to_dict().items() if k != "stage"})
        ctx.info["count"] = stats.counts["pairs"]
        ctx.log(stats.summary())
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        return []
