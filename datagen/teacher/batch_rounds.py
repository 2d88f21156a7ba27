"""When a batch round closes, and what goes into its files.

Stages are coroutines that await one teacher call after another and do other work (tools, parsing)
in between. `Rounds` gathers the calls of the round now open and says when it may close: once every
task that has called the engine is waiting on it or finished (none is still running a tool), no
call has come for `settle_seconds`, and the previous round's batches have all ended; or, whatever
else runs, once no call has come for `linger_seconds` (a task may wait on something the engine
cannot see). A queue that fills a file (`max_lines`, `max_bytes`) sends that file at once.

Files hold one model each, lines sorted by their messages, so requests sharing a prefix (the meta
instruction, a system prompt, earlier turns) sit together and the provider's prompt cache sees them
one after another.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.teacher.batch_io import prefix_order
from datagen.teacher.config import BatchSettings
from datagen.teacher.settle import Paid, Prepared
from datagen.teacher.types import Request, Result


class BatchExported(DatagenError):
    """A round was written for a self-hosted teacher (`batch.transport: files`): the run stops
    until its output is imported (`datagen batch import`). `paths` are the round's files."""

    def __init__(self, message: str, paths: list[Path]):
        super().__init__(message)
        self.paths = paths


@dataclass(eq=False, slots=True)
class Pending:
    """A request not settled yet: queued, or a line of a batch in flight."""

    prep: Prepared
    request: Request
    fut: asyncio.Future[Result]
    est_prompt: int
    size: int  # bytes of its batch line
    started: float = field(default_factory=time.monotonic)
    paid: Paid = field(default_factory=Paid)
    owners: int = 0  # stage calls waiting on it; 0 for a line a killed run left in flight


@dataclass(eq=False, slots=True)
class InFlight:
    """A batch file submitted (or exported) and not settled yet."""

    name: str
    round: int  # 0: left in flight by an earlier run
    lines: list[str]  # custom_ids
    status: str = "writing"
    file_id: str | None = None
    batch_id: str | None = None
    next_poll: float = 0.0
    interval: float = 0.0
    failures: int = 0
    path: Path | None = None  # the round file (files transport)


class Rounds:
    """The open round's queue and the rule that closes it."""

    def __init__(self, settings: BatchSettings, wake: asyncio.Event):
        self.settings = settings
        self.wake = wake
        self.queue: list[Pending] = []
        self.queued_bytes = 0
        self.open = 1  # the round new calls join
        self.closed = 0  # rounds closed so far
        self.last_call = 0.0
        self.not_before = 0.0  # a rate-limited round waits until then
        self._participants: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._waiting: Counter[asyncio.Task[Any]] = Counter()

    def add(self, p: Pending) -> None:
        """Queue a call for the open round."""
        self.queue.append(p)
        self.queued_bytes += p.size
        self.last_call = time.monotonic()
        self.wake.set()

    def waits(self, task: asyncio.Task[Any] | None) -> None:
        """`task` now waits on the engine (a done task counts as waiting too)."""
        if task is None:
            return
        if task not in self._participants:
            self._participants.add(task)
            task.add_done_callback(lambda _t: self.wake.set())
        self._waiting[task] += 1
        self.wake.set()

    def resumes(self, task: asyncio.Task[Any] | None) -> None:
        """`task` got its answer and runs on."""
        if task is not None:
            self._waiting[task] -= 1
            if self._waiting[task] <= 0:
                del self._waiting[task]

    def quiet(self) -> None:
        """The engine stops every caller on purpose (`BatchExported`): a caller task nobody awaits
        any more must not be logged as 'exception never retrieved'."""
        for task in list(self._participants):
            task.add_done_callback(_retrieve)

    def all_waiting(self) -> bool:
        """Every task that has called the engine waits on it, or has finished."""
        return all(t.done() or self._waiting.get(t, 0) > 0 for t in list(self._participants))

    def full(self) -> bool:
        return len(self.queue) >= self.settings.max_lines or self.queued_bytes >= self.settings.max_bytes

    def may_close(self, now: float, in_flight: list[InFlight]) -> bool:
        """Whether the open round may be submitted now (see the module docstring)."""
        if not self.queue or now < self.not_before or any(b.round < self.open for b in in_flight):
            return False
        quiet = now - self.last_call
        if quiet >= self.settings.linger_seconds:
            return True
        return quiet >= self.settings.settle_seconds and self.all_waiting()

    def next_check(self, now: float) -> float | None:
        """When `may_close` may turn true without an event (None: only an event can do it)."""
        if not self.queue:
            return None
        times = [
            self.last_call + self.settings.settle_seconds,
            self.not_before,
            self.last_call + self.settings.linger_seconds,
        ]
        return min((t for t in times if t > now), default=now)

    def take(self, *, full: bool) -> list[Pending]:
        """The queue in prefix order; with `full`, only the first file's worth of it."""
        self.queue.sort(key=lambda p: (p.prep.model, prefix_order(p.request.messages)))
        n = len(self.queue)
        if full:
            n, size = 0, 0
            while (
                n < len(self.queue)
                and n < self.settings.max_lines
                and (n == 0 or size + self.queue[n].size <= self.settings.max_bytes)
            ):
                size += self.queue[n].size
                n += 1
        taken, self.queue = self.queue[:n], self.queue[n:]
        self.queued_bytes = sum(p.size for p in self.queue)
        return taken

    def close(self) -> tuple[int, list[list[Pending]]]:
        """Close the open round: its number and its files (one model each, within the limits)."""
        items = self.take(full=False)
        number = self.open
        self.open += 1
        self.closed += 1
        return number, self.files(items)

    def files(self, items: list[Pending]) -> list[list[Pending]]:
        """Split items (already in order) into files of one model within the limits."""
        chunks: list[list[Pending]] = []
        size = 0
        for p in items:
            last = chunks[-1] if chunks else None
            if (
                last is None
                or last[0].prep.model != p.prep.model
                or len(last) >= self.settings.max_lines
                or size + p.size > self.settings.max_bytes
            ):
                chunks.append([p])
                size = p.size
            else:
                last.append(p)
                size += p.size
        return chunks


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved; whoever awaits the task still gets it
