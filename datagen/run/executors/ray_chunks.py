"""Per-chunk work of a driver stage on a Ray cluster: the `datagen.stage.ChunkMapper` the Ray executor
hands the filter stage (`ctx.chunk_mapper`), so the format step, the stateless steps and the stateful
steps' `prepare_batch` run on the cluster's CPUs while the driver decides in input order.

A pool of actors, one CPU each (as many as the cluster has CPUs, started only as chunks come), each
building its state (`setup()`: the steps, with their lexicons and models) on its first chunk and
keeping it. Chunks go to the object store and round-robin to the actors; at most `ahead` x actors are
in flight, so a large input is read only as fast as the cluster answers, and the answers come back
in input order. The actors are killed when the stream ends (or stops on an error), freeing their
CPUs for the next step (the dedup backend's tasks).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from datagen.ray_support import cluster_cpus, import_ray
from datagen.run.executors.ray import remote_cause


class ChunkWorker:
    """One actor of the pool: `setup()` once, on its first chunk (an error there reaches the driver
    as the chunk's error, like any other), then `work(state, chunk)` per chunk."""

    def __init__(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any]):
        self.setup, self.work = setup, work
        self.state: Any = None
        self.built = False

    def run(self, chunk: Sequence[Any]) -> Any:
        """The work on one chunk."""
        if not self.built:
            self.state = self.setup()
            self.built = True
        return self.work(self.state, chunk)


@dataclass(slots=True)
class RayChunkMapper:
    """Maps `work` over chunks on the Ray cluster this process is connected to (see the module
    docstring).

    Args:
        log: where the one line per stream goes (rows, chunks, actors).
        workers: actors at most (default: the cluster's CPUs).
        ahead: chunks in flight per actor (2, as the local pool).
    """

    log: Callable[[str], None] = print
    workers: int | None = None
    ahead: int = 2
    #: (what, rows, chunks, actors) of every stream mapped, in order.
    mapped: list[tuple[str, int, int, int]] = field(default_factory=list)

    def map_chunks(
        self,
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        chunks: Iterable[Sequence[Any]],
        *,
        what: str,
    ) -> Iterator[Any]:
        """`work(setup(), chunk)` per chunk on the actors, in input order (`datagen.stage.ChunkMapper`)."""
        ray = import_ray()
        n = max(1, self.workers or cluster_cpus())
        # A lost node loses its actors: they restart and rebuild their state, and the chunks they
        # held run again (the work is a pure function of the chunk). `setup` and `work` are small
        # (a config, a function), passed inline so that a restart does not depend on the store.
        actor_class = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(ChunkWorker)
        actors: list[Any] = []
        pending: deque[Any] = deque()
        rows = count = 0
        t0 = time.perf_counter()
        try:
            for chunk in chunks:
                if len(actors) < n:
                    actors.append(actor_class.remote(setup, work))
                pending.append(actors[count % n].run.remote(ray.put(chunk)))
                count += 1
                rows += len(chunk)
                while len(pending) > self.ahead * n:
                    yield _get(ray, pending.popleft())
            while pending:
                yield _get(ray, pending.popleft())
        finally:
            for actor in actors:
                ray.kill(actor)
        self.mapped.append((what, rows, count, len(actors)))
        self.log(
            f"{rows} rows {what} on Ray in {count} chunks by {len(actors)} actor(s), "
            f"{time.perf_counter() - t0:.1f} s"
        )


def _get(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise remote_cause(exc) from None
