"""The `seeds` stage of `datagen run`: the seed prompts a run starts from, selected by language and
category and sampled per cell (`seeds.jsonl`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.io import write_jsonl_atomic
from datagen.paths import file_identity
from datagen.stage import Stage, StageContext, StageStats


class SeedsStage(Stage):
    """Read the seed file the config names, keep the selected languages and categories, sample
    `per_cell` of each, and write `seeds.jsonl`."""

    name = "seeds"
    sections = ("seeds", "seed")

    @property
    def config(self) -> Any:
        return self.run_config.seeds

    @property
    def seed_file(self) -> Path:
        return Path(self.config.path)  # already resolved against the config file's folder

    def input_identity(self, ctx: StageContext) -> str:
        return file_identity(str(self.seed_file))

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        return {"main": ctx.run_dir / "seeds.jsonl"}

    def read(self, ctx: StageContext) -> Iterable[Any]:
        from datagen.seeds.record import read_seeds

        return read_seeds(self.seed_file)

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.seeds.curate import sample_balanced
        from datagen.seeds.record import normalize_category, normalize_language

        sc = self.config
        seeds = list(rows)
        total = len(seeds)
        reasons: Counter[str] = Counter()
        kept = []
        categories = {normalize_category(c) for c in sc.categories}
        languages = {normalize_language(x) for x in sc.languages}
        for s in seeds:
            if languages and (not s.language or normalize_language(s.language) not in languages):
                reasons["language_not_selected"] += 1
            elif categories and normalize_category(s.category) not in categories:
                reasons["category_not_selected"] += 1
            else:
                kept.append(s)
        if sc.per_cell:
            sampled = sample_balanced(kept, per_cell=sc.per_cell, seed=self.run_config.seed)
            reasons["balanced_sample"] += len(kept) - len(sampled)
            kept = sampled
        n = write_jsonl_atomic(self.outputs(ctx)["main"], kept)
        ctx.stats.in_, ctx.stats.kept = total, n
        ctx.stats.reasons.update(reasons)
        ctx.stats.dropped = total - n
        ctx.info.update({"count": n, "in": total, "reasons": dict(reasons), "source": str(self.seed_file)})
        yield from kept

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        n_in, kept = info.get("in", 0), info.get("count", 0)
        return [StageStats("seeds", n_in, kept, n_in - kept, reasons=Counter(info.get("reasons", {})))]
