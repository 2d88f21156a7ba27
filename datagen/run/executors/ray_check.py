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

from collections import deque
from collections.abc import Iterable, Iterator
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


def cluster_gpus() -> int:
    """GPUs the Ray cluster has (0 without any)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


__all__ = ["ActorScorer", "ScoreActor", "cluster_gpus"]
