"""`datagen run CONFIG`: seeds -> expansion -> HHH and plugin dialogues -> filters -> local check ->
(review) -> final -> dataset folder (-> Hub). `datagen status RUN_DIR` shows where a run is.

Every stage writes its JSONL under the run directory and records itself in `manifest.json`. A rerun
of the same command skips stages whose fingerprint matches, and the unfinished stage continues from
the teacher journal (`journal.sqlite`), so finished calls are never paid twice.

This module only says which stages a config runs, in which order (`stages_for`); each stage is an
adapter in its own folder (`datagen/*/stage.py`), and `datagen.run.runner.Runner` runs them.

Layout of a run directory:

    manifest.json            config, fingerprints, versions, per-stage status, counts, times, cost
    seeds.jsonl              the seed prompts this run started from
    prompts/expanded.jsonl   machine prompts from the Self-Instruct loop (+ rejected.jsonl)
    dialogues/{hhh,plugin}.jsonl
    filtered/                kept.jsonl, rejected.jsonl, funnel.json, funnel.md
    checked/                 scored.jsonl, rejected.jsonl, report.json
    review/                  kept.jsonl after a reviewer's decisions (review.jsonl), the page's index
    final.jsonl              the conversations that made it
    funnel.json, funnel.md, funnel.png
    dataset/                 the Hub-ready folder (parquet + card)
    journal.sqlite           every teacher call: cache, resume point, cost ledger
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datagen.check.stage import CheckStage
from datagen.filters.stage import FilterStage
from datagen.generate.stage import DialoguesStage, ExpandStage
from datagen.preference.stage import PreferenceStage
from datagen.publish.stage import DatasetStage, PublishStage
from datagen.review.stage import ReviewStage
from datagen.run.config import RunConfig
from datagen.run.executors import Executor
from datagen.run.final import FinalStage
from datagen.run.runner import Runner
from datagen.seeds.stage import SeedsStage
from datagen.stage import Stage


def stages_for(cfg: RunConfig, run_dir: Path) -> list[Stage]:
    """The stages `cfg` runs in `run_dir`, in order."""
    out: list[Stage] = [SeedsStage(cfg), ExpandStage(cfg)]
    out += [
        DialoguesStage(cfg, k)
        for k in ("hhh", "plugin")
        if cfg.dialogues.get(k) is None or cfg.dialogues[k].enabled
    ]
    out.append(FilterStage(cfg))
    last = "filter"
    if cfg.check.enabled:
        out.append(CheckStage(cfg))
        last = "check"
    if (Path(run_dir) / "review.jsonl").exists():  # decisions from `datagen review`, applied last
        out.append(ReviewStage(cfg, after=last))
        last = "review"
    out.append(FinalStage(cfg, after=last))
    if cfg.preference is not None:  # pairs from the final rows; the dataset folder then carries them
        out.append(PreferenceStage(cfg))
    if cfg.dataset.enabled:
        out.append(DatasetStage(cfg, preference=cfg.preference is not None))
        if cfg.publish.repo_id:
            out.append(PublishStage(cfg))
    return out


def run_pipeline(
    cfg: RunConfig,
    run_dir: Path,
    *,
    executor: Executor | None = None,
    engine_factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage of `cfg` in `run_dir`; returns the manifest. `executor` and
    `engine_factory` (a batch-API engine for the teacher stages) default to this process and
    `TeacherEngine`."""
    return Runner(cfg, run_dir, executor=executor, engine_factory=engine_factory).run(
        stages_for(cfg, run_dir)
    )
