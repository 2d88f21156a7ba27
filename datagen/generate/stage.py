"""The teacher stages of `datagen run`: `expand` (machine prompts from the seeds,
`prompts/expanded.jsonl`) and `dialogues.hhh` / `dialogues.plugin` (one dialogue per prompt,
`dialogues/{kind}.jsonl`). Each calls the stage's function as `datagen expand` / `datagen generate`
do; the runner around them skips, resumes and records."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datagen.stage import Stage, StageContext, StageStats


class ExpandStage(Stage):
    """The Self-Instruct loop over the run's seeds."""

    name = "expand"
    sections = ("expand", "teacher", "seed")
    after = ("seeds",)
    needs_teacher = True

    @property
    def config(self) -> Any:
        return self.run_config.expand

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        return {"main": ctx.run_dir / "prompts" / "expanded.jsonl"}

    def fresh(self, ctx: StageContext, previous: Mapping[str, Any]) -> list[Path]:
        return [self.outputs(ctx)["main"].parent]

    def read(self, ctx: StageContext) -> Iterable[Any]:
        from datagen.seeds.record import read_seeds

        return read_seeds(ctx.output("seeds"))

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.generate.expand import expand

        out = self.outputs(ctx)["main"]
        cfg = self.run_config
        stats = expand(
            list(rows),
            cfg.expand,
            cfg.teacher,
            out,
            ctx.journal,
            run_seed=cfg.seed,
            engine_factory=ctx.engine_factory,
        )
        ctx.stats = stats
        info = ctx.info
        info.update(stats.info())
        info.setdefault("count", count_lines(out))
        log_teacher_stage(
            ctx,
            "expand",
            info,
            f"{info.get('count', 0)} prompts kept of "
            f"{info.get('candidates', 0)} candidates, {info.get('requests', 0)} "
            "requests",
        )
        yield from ()

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        # The expansion row counts candidate prompts: rejected ones by reason, plus those beyond a
        # cell's target (surplus). Failed requests made no candidates; the manifest keeps them.
        reasons = _reasons(info, ("rejected_",))
        if info.get("surplus"):
            reasons["surplus"] = info["surplus"]
        return [
            StageStats(
                "expand",
                info.get("candidates", 0),
                info.get("count", 0),
                sum(reasons.values()),
                reasons=Counter(reasons),
            )
        ]


class DialoguesStage(Stage):
    """One dialogue of `kind` (`hhh` or `plugin`) per prompt: the seeds (unless
    `include_seeds: false`) and the expanded prompts, with plugins for `plugin` and without for
    `hhh`, capped at `max_dialogues` round-robin over (category, language, plugins).

    Shardable: rank `r` of `n` makes every `n`-th dialogue into its own file (`ctx.shard_path`)."""

    after = ("expand",)
    needs_teacher = True
    shardable = True

    def __init__(self, run_config: Any, kind: str):
        super().__init__(run_config)
        self.kind = kind
        self.name = f"dialogues.{kind}"
        self.sections = (f"dialogues.{kind}", "teacher", "tools", "seed")

    @property
    def config(self) -> Any:
        return self.run_config.dialogues.get(self.kind)

    def outputs(self, ctx: StageContext) -> dict[str, Path]:
        return {"main": ctx.run_dir / "dialogues" / f"{self.kind}.jsonl"}

    def fresh(self, ctx: StageContext, previous: Mapping[str, Any]) -> list[Path]:
        out = self.outputs(ctx)["main"]
        return sorted(out.parent.glob(f"{self.kind}.*"))

    def read(self, ctx: StageContext) -> Iterable[Any]:
        from datagen.seeds.record import read_seeds

        dk = self.config
        include_seeds = dk.include_seeds if dk else True
        prompts = list(read_seeds(ctx.output("seeds"))) if include_seeds else []
        expanded = ctx.output("expand")
        if expanded.exists():
            prompts += list(read_seeds(expanded))
        want_plugin = self.kind == "plugin"
        prompts = [p for p in prompts if bool(p.plugins) == want_plugin]
        if dk and dk.max_dialogues is not None:
            prompts = interleave(prompts)[: dk.max_dialogues]
        return prompts

    def run(self, rows: Iterable[Any], ctx: StageContext) -> Iterator[Any]:
        from datagen.generate.dialogues import generate_dialogues

        prompts = list(rows)
        out = self.outputs(ctx)["main"]
        cfg = self.run_config
        dk = self.config
        options = dict(dk.options) if dk else {}
        ctx.stats = generate_dialogues(
            prompts,
            kind=self.kind,
            options=options,
            teacher=cfg.teacher,
            out_path=ctx.shard_path(out),
            journal_path=ctx.journal,
            tools_config=cfg.tools,
            run_seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            engine_factory=ctx.engine_factory,
        )
        self.record(ctx)
        info = ctx.info
        log_teacher_stage(
            ctx,
            self.name,
            info,
            f"{info.get('made', 0)} made"
            + (f", {info['skipped_done']} done earlier" if info.get("skipped_done") else ""),
        )
        yield from ()

    def record(self, ctx: StageContext) -> None:
        # `prompts` counts this shard's prompts: summed over shards, all of them.
        ctx.info.update(ctx.stats.info())
        ctx.info["count"] = count_lines(ctx.shard_path(self.outputs(ctx)["main"]))

    def funnel(self, info: Mapping[str, Any], ctx: StageContext) -> list[StageStats]:
        reasons = _reasons(info, ("failed_",))
        return [
            StageStats(
                self.name,
                info.get("prompts", 0),
                info.get("count", 0),
                sum(reasons.values()),
                reasons=Counter(reasons),
            )
        ]


def _reasons(info: Mapping[str, Any], prefixes: tuple[str, ...] = ("rejected_", "failed_")) -> dict[str, int]:
    """Drop reasons from a stage's counters (`rejected_near_dup: 3` -> `near_dup: 3`)."""
    out: dict[str, int] = {}
    for key, value in info.items():
        for prefix in prefixes:
            if key.startswith(prefix) and isinstance(value, int) and value:
                out[key[len(prefix) :]] = out.get(key[len(prefix) :], 0) + value
    return out


def log_teacher_stage(ctx: StageContext, name: str, info: Mapping[str, Any], made: str) -> None:
    """One line per teacher stage: what it made, and what failed with an example of the main cause."""
    from datagen.generate.common import failure_cause

    if not info.get("calls"):
        return  # asked nothing (a target of 0, no prompt of this kind)
    cause = failure_cause(dict(info), info.get("failure_examples"))
    line = f"{name}: {made}" + (f"; failed: {cause}" if cause else "")
    if info.get("retry_next_run"):
        line += f"; {info['retry_next_run']} refused by the server are tried again on the next run"
    ctx.log(line)


def interleave(prompts: list[Any]) -> list[Any]:
    """Round-robin over (category, language, plugins) so a cap keeps every kind of prompt."""
    groups: dict[tuple, deque[Any]] = {}
    for p in prompts:
        groups.setdefault((p.category, p.language, tuple(p.plugins)), deque()).append(p)
    out: list[Any] = []
    queues = deque(groups.values())
    while queues:
        q = queues.popleft()
        out.append(q.popleft())
        if q:
            queues.append(q)
    return out


def count_lines(path: Path) -> int:
    """Non-blank lines of a JSONL file (0 when there is none)."""
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
