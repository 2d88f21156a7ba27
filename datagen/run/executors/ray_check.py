"""The check stage's scoring on Ray: `ActorScorer`, the `scorer=` of `check_files`
(`datagen.check.scoring.Scorer`), scores on actors that each ask for a GPU (`num_gpus`), load the
model once, and score the windows of rows the driver streams to them. The stage runs as it always
does (reading the rows, the settings sidecar, the report, the kept/rejected split); only the forward
passes happen on the actors.

The rows are cut into the windows the local run sorts and batches together (`batch_size * 16`
rows of the rows still to score, in input order), so each batch, and so each score, is the one the
local executor computes; the rows come back in input order too.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datagen.check.scoring import ScoreJob, ScoreSettings
from datagen.model.tokenize import TruncationStats
from datagen.ray_support import import_ray
from datagen.record import Conversation

#: Windows in flight per actor: one scoring, one queued, so a GPU never waits for the driver.
_IN_FLIGHT_PER_ACTOR = 2


class ScoreActor:
    """One model on one GPU (a Ray actor): `score(rows)` is `score_conversations` over one window."""

    def __init__(self, job: ScoreJob):
        from datagen.model.loading import load_model, resolve_model
        from datagen.model.score import resolve_max_length

        self.loaded = load_model(
            resolve_model(job.model), device=job.device, dtype=job.dtype, tokenization=job.tokenization
        )
        self.limit = resolve_max_length(job.max_length, self.loaded.context_length)
        self.batch_size = job.batch_size

    def settings(self) -> tuple[int, str, str]:
        """(context limit, tokenization) as loaded, what the scored file's settings record, and the
        Ray node this actor was placed on."""
        return self.limit, self.loaded.tokenization, import_ray().get_runtime_context().get_node_id()

    def score(self, rows: list[Conversation]) -> tuple[list[Conversation], dict[str, int]]:
        from datagen.model.score import score_conversations

        stats = TruncationStats()
        scored = list(
            score_conversations(
                rows,
                self.loaded,
                batch_size=self.batch_size,
                max_length=self.limit,
                window=max(1, len(rows)),
                stats=stats,
            )
        )
        return scored, stats.to_dict()


class ActorScorer:
    """A `datagen.check.scoring.Scorer` on `actors` Ray actors of `gpus_per_actor` GPUs each
    (started by `load`, killed by `close`). `nodes`: the Ray nodes they were placed on (empty
    while none was started); `scored`: rows scored."""

    def __init__(self, *, actors: int, gpus_per_actor: float):
        self.actors = max(1, actors)
        self.gpus_per_actor = gpus_per_actor
        self.nodes: list[str] = []
        self.scored = 0
        self._pool: list[Any] = []
        self._window = 0

    def load(self, job: ScoreJob) -> ScoreSettings:
        """Start the actors, each loading the model for `job`."""
        ray = import_ray()
        gpus = self.gpus_per_actor
        remote = ray.remote(ScoreActor).options(num_gpus=gpus, num_cpus=0 if gpus else 1)
        self._pool = [remote.remote(job) for _ in range(self.actors)]
        placed = ray.get([actor.settings.remote() for actor in self._pool])
        self.nodes = [p[2] for p in placed]
        self._window = job.batch_size * 16  # score_conversations' own window
        return ScoreSettings(placed[0][0], placed[0][1])

    def score(self, rows: Iterable[Conversation], stats: TruncationStats) -> Iterator[Conversation]:
        """Stream windows of `rows` to the actors in turn; yield the scored rows in input order."""
        ray = import_ray()
        pool, pending = self._pool, deque[Any]()
        for i, window in enumerate(_windows(iter(rows), self._window)):
            pending.append(pool[i % len(pool)].score.remote(window))
            while len(pending) >= _IN_FLIGHT_PER_ACTOR * len(pool):
                yield from self._unpack(ray.get(pending.popleft()), stats)
        while pending:
            yield from self._unpack(ray.get(pending.popleft()), stats)

    def _unpack(
        self, result: tuple[list[Conversation], dict[str, int]], stats: TruncationStats
    ) -> list[Conversation]:
        rows, truncation = result
        stats.merge(TruncationStats(**truncation))
        self.scored += len(rows)
        return rows

    def close(self) -> None:
        """Kill the actors."""
        ray = import_ray()
        for actor in self._pool:
            ray.kill(actor)
        self._pool = []


def _windows(rows: Iterator[Conversation], size: int) -> Iterator[list[Conversation]]:
    window: list[Conversation] = []
    for row in rows:
        window.append(row)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _todo(inp: Path, out: Path, max_rows: int | None) -> Iterator[Conversation]:
    """The rows `check_files` would score, in its order: the first `max_rows`, first of each id,
    well-formed, not in the output yet."""
    from datagen.check.files import scored_ids
    from datagen.formats.reader import read_conversations
    from datagen.formats.validate import format_defect

    done = scored_ids(out)
    seen: set[str] = set()
    for i, conv in enumerate(read_conversations([inp], torn_tail="skip")):
        if max_rows is not None and i >= max_rows:
            return
        if conv.id in seen:
            continue
        seen.add(conv.id)
        if conv.id not in done and format_defect(conv) is None:
            yield conv


def score_on_actors(
    inp: Path,
    out: Path,
    *,
    model: str,
    batch_size: int,
    max_length: int | None,
    max_rows: int | None,
    tokenization: str,
    actors: int,
    gpus_per_actor: float,
) -> dict[str, Any]:
    """Score what is left of `inp` into `out` with an `ActorScorer`, before the stage runs (what
    `RayExecutor._run_check` does until it hands the stage the scorer; then this, `_todo` and
    `settle_report` go). Returns {"scored_now": n, "truncation": {...}, "nodes": [node ids of the
    actors], "settings": {...}} (nothing to score: no actor is started)."""
    from datagen.check.scoring import check_settings, write_settings
    from datagen.io import AppendWriter
    from datagen.model.loading import MODEL_ALIASES, resolve_model

    truncation = TruncationStats()
    rows = _todo(inp, out, max_rows)
    first = next(rows, None)
    if first is None:
        return {"scored_now": 0, "truncation": truncation.to_dict(), "nodes": []}
    model_id = str(model) if str(model) in MODEL_ALIASES else resolve_model(model).display
    scorer = ActorScorer(actors=actors, gpus_per_actor=gpus_per_actor)
    try:
        loaded = scorer.load(ScoreJob(str(model), max_length, batch_size, tokenization))
        if out.exists() and out.stat().st_size:
            check_settings(out, model_id, loaded.max_length, loaded.tokenization)
        settings = {"model": model_id, "max_length": loaded.max_length, "tokenization": loaded.tokenization}
        write_settings(out, settings)
        with AppendWriter(out) as writer:
            for conv in scorer.score(itertools.chain([first], rows), truncation):
                writer.write(conv)
    finally:
        scorer.close()
    return {
        "scored_now": scorer.scored,
        "truncation": truncation.to_dict(),
        "nodes": scorer.nodes,
        "settings": settings,
    }


def settle_report(info: dict[str, Any], report_path: Path, scored: dict[str, Any]) -> None:
    """The stage ran after the actors scored: it saw every row as resumed. Put back what this run
    scored, in the manifest info and in report.json, as one process would have recorded it."""
    n = scored["scored_now"]
    if not n:
        return  # nothing scored on the actors: the stage's own record is the local one
    # the settings as a run that loaded the model records them (one that scored nothing has less)
    fixes = {
        "scored_now": n,
        "resumed": info.get("resumed", 0) - n,
        "truncation_this_run": scored["truncation"],
        "settings": scored["settings"],
    }
    info.update(fixes)
    if report_path.exists():
        from datagen.io import write_json_atomic

        report = json.loads(report_path.read_text(encoding="utf-8"))
        report.update(fixes)
        write_json_atomic(report_path, report, newline=False)


def cluster_gpus() -> int:
    """GPUs the Ray cluster has (0 without any)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


__all__ = ["ActorScorer", "ScoreActor", "cluster_gpus", "score_on_actors", "settle_report"]
