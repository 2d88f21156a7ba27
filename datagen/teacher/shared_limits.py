"""One set of teacher limits for many workers: a named Ray actor holds the adaptive concurrency and
the RPM/TPM windows (the very `AdaptiveConcurrency` and `WindowLimiter` one engine uses alone), and
each worker's engine talks to it through proxies with the same methods, so N workers together
never send more than the provider's limit and a wave of 429s halves the concurrency of all of them.

    limits = SharedLimits.create(config, name="teacher-limits")       # the driver, once
    ...                                                                # in each worker:
    async with SharedLimitsEngine(config, limits=limits, worker="rank-3", journal_path=...) as engine:
        ...

Clocks: each machine has its own monotonic clock, so times never cross the wire. `sent` and
`finished` carry the *age* of the event and the actor stamps `its now - age` on receipt. The
message's transit makes that stamp later than the event, and a later stamp only keeps a request in
the window longer (a request is counted from a time at or after it reached the server either way),
so the limit still holds.

Calls that need no answer (`release`, `succeeded`, `sent`, `finished`, `settle`) are sent without
waiting; Ray runs one caller's calls to an actor in the order they were made.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from datagen.ray_support import import_ray
from datagen.teacher.config import TeacherConfig
from datagen.teacher.engine import TeacherEngine
from datagen.teacher.journal import Journal
from datagen.teacher.limiters import Limiters
from datagen.teacher.limits import AdaptiveConcurrency, WindowLimiter

#: A 429's answer (`pushed_back`) is awaited this long at most; past it the engine is told "not
#: overloaded" (it then only waits that request's retry-after).
_ANSWER_TIMEOUT = 10.0


class LimitsActor:
    """The shared state (run as a Ray actor: `SharedLimits.create`). Every method runs on the
    actor's one event loop, so the limiters need no locks beyond their own."""

    def __init__(self, concurrency: int, rpm: int | None, tpm: int | None, window: float):
        self.slots = AdaptiveConcurrency(concurrency)
        self.windows = {
            name: WindowLimiter(limit, window) for name, limit in (("rpm", rpm), ("tpm", tpm)) if limit
        }
        self._handles: dict[int, tuple[str, list[Any]]] = {}
        self._ids = itertools.count()
        self._held: Counter[str] = Counter()  # worker -> slots it holds
        self.peak_active = 0

    async def acquire_slot(self, worker: str) -> tuple[int, int]:
        epoch = await self.slots.acquire()
        self._held[worker] += 1
        self.peak_active = max(self.peak_active, self.slots.active)
        return epoch, self.slots.limit

    def release_slot(self, worker: str) -> None:
        if self._held[worker] > 0:
            self._held[worker] -= 1
            self.slots.release()

    def pushed_back(self, epoch: int) -> tuple[bool, int]:
        overloaded = self.slots.pushed_back(epoch)
        return overloaded, self.slots.limit

    def succeeded(self) -> None:
        self.slots.succeeded()

    def forget(self, worker: str) -> int:
        """Give back every slot a worker holds (it died, or ended without releasing); returns how many."""
        n = self._held.pop(worker, 0)
        for _ in range(n):
            self.slots.release()
        return n

    async def acquire_window(self, name: str, amount: float) -> int:
        handle = await self.windows[name].acquire(amount)
        hid = next(self._ids)
        self._handles[hid] = (name, handle)
        if len(self._handles) > 4 * max(1, self.slots.maximum) + 64:
            # a handle out of its window can no longer move anything that counts
            self._handles = {k: v for k, v in self._handles.items() if v[1][2]}
        return hid

    def sent(self, hid: int, age: float) -> None:
        if (h := self._handles.get(hid)) is not None:
            self.windows[h[0]].sent(h[1], time.monotonic() - age)

    def finished(self, hid: int, age: float) -> None:
        if (h := self._handles.get(hid)) is not None:
            self.windows[h[0]].finished(h[1], time.monotonic() - age)

    def settle(self, hid: int, actual: float) -> None:
        if (h := self._handles.get(hid)) is not None:
            self.windows[h[0]].settle(h[1], actual)

    def snapshot(self) -> dict[str, Any]:
        """The limits now: concurrency limit, slots in use (and the most ever), units per window."""
        return {
            "limit": self.slots.limit,
            "active": self.slots.active,
            "peak_active": self.peak_active,
            "held": dict(self._held),
            **{n: w.in_window for n, w in self.windows.items()},
        }


@dataclass(slots=True)
class SharedLimits:
    """A handle on the limits actor; picklable, so it travels to every worker."""

    actor: Any
    maximum: int

    @classmethod
    def create(cls, config: TeacherConfig, *, name: str | None = None) -> SharedLimits:
        """Start the actor for `config`'s concurrency, rpm, tpm and rate_window. With `name`, a live
        actor of that name is reused (it lives as long as the driver that made it)."""
        ray = import_ray()
        opts: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 10_000}
        if name:
            opts.update(name=name, get_if_exists=True)
        actor = (
            ray.remote(LimitsActor)
            .options(**opts)
            .remote(config.concurrency, config.rpm, config.tpm, config.rate_window)
        )
        return cls(actor, config.concurrency)

    def concurrency(self, worker: str) -> SharedConcurrency:
        """The proxy a worker's engine uses instead of its own `AdaptiveConcurrency`."""
        return SharedConcurrency(self.actor, worker, self.maximum)

    def window(self, name: str) -> SharedWindow:
        """The proxy for the `rpm` or `tpm` window."""
        return SharedWindow(self.actor, name)

    def snapshot(self) -> dict[str, Any]:
        """The actor's `snapshot()`."""
        return import_ray().get(self.actor.snapshot.remote())

    def forget(self, worker: str) -> int:
        """Free the slots a (dead) worker held."""
        return import_ray().get(self.actor.forget.remote(worker))


async def _flush(proxy: Any) -> None:
    # One caller's calls reach the actor in order, and these methods never await inside it: once
    # the last one has run, every earlier one has.
    last, proxy._last = proxy._last, None
    if last is not None:
        await last


class SharedConcurrency:
    """`AdaptiveConcurrency`'s interface, backed by the shared actor."""

    def __init__(self, actor: Any, worker: str, maximum: int):
        self._actor, self._worker = actor, worker
        self._last: Any = None  # the last call sent without waiting
        self.maximum = maximum
        self.limit = maximum  # as of the actor's last answer

    async def acquire(self) -> int:
        """Take a slot; returns the epoch. A cancelled wait hands back the slot once it is granted."""
        ref = self._actor.acquire_slot.remote(self._worker)
        try:
            epoch, self.limit = await ref
        except BaseException:
            self._release_when_granted(ref)
            raise
        return epoch

    def _release_when_granted(self, ref: Any) -> None:
        actor, worker = self._actor, self._worker

        def done(fut: Any) -> None:
            if not fut.cancelled() and fut.exception() is None:
                actor.release_slot.remote(worker)

        ref.future().add_done_callback(done)

    def release(self) -> None:
        self._last = self._actor.release_slot.remote(self._worker)

    def pushed_back(self, epoch: int) -> bool:
        """A 429; True when the servers' recent answers, all workers together, say overloaded. The
        engine needs the answer at once, so this waits for it (a few ms, only on a 429)."""
        ray = import_ray()
        try:
            overloaded, self.limit = ray.get(self._actor.pushed_back.remote(epoch), timeout=_ANSWER_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            return False
        return overloaded

    def succeeded(self) -> None:
        self._last = self._actor.succeeded.remote()

    async def flush(self) -> None:
        """Wait until the actor has applied every call this proxy sent without waiting."""
        await _flush(self)


class SharedWindow:
    """`WindowLimiter`'s interface, backed by the shared actor. Handles are the actor's ids."""

    def __init__(self, actor: Any, name: str):
        self._actor, self.name = actor, name
        self._last: Any = None

    async def acquire(self, amount: float = 1.0) -> int:
        return await self._actor.acquire_window.remote(self.name, float(amount))

    def sent(self, handle: int, when: float) -> None:
        self._last = self._actor.sent.remote(handle, max(0.0, time.monotonic() - when))

    def finished(self, handle: int, when: float) -> None:
        self._last = self._actor.finished.remote(handle, max(0.0, time.monotonic() - when))

    def settle(self, handle: int, actual: float) -> None:
        self._last = self._actor.settle.remote(handle, float(actual))

    async def flush(self) -> None:
        """Wait until the actor has applied every call this proxy sent without waiting."""
        await _flush(self)


class SharedLimitsEngine(TeacherEngine):
    """A `TeacherEngine` whose concurrency slots and RPM/TPM windows are the cluster's.

    Args:
        config: as for `TeacherEngine`; its concurrency/rpm/tpm are those the actor was made with.
        limits: the `SharedLimits` handle.
        worker: this worker's name (its rank): slots it still holds when it dies are freed by it.
        journal: an unopened journal to use instead of `journal_path`'s (a worker's
            `journal_merge.ShardJournal`).
        kwargs: `TeacherEngine`'s (journal_path, progress, desc).
    """

    def __init__(
        self,
        config: TeacherConfig,
        *,
        limits: SharedLimits,
        worker: str,
        journal: Journal | None = None,
        **kwargs: Any,
    ):
        if journal is not None:
            kwargs["journal_path"] = None
        self._proxies = (
            limits.concurrency(worker),
            limits.window("rpm") if config.rpm else None,
            limits.window("tpm") if config.tpm else None,
        )
        super().__init__(config, journal=journal, limiters=Limiters(*self._proxies), **kwargs)

    async def aclose(self) -> None:
        """Close as `TeacherEngine` does, then wait until the actor has every release and
        settlement this engine sent (so the slots it held are free when it is closed)."""
        try:
            await super().aclose()
        finally:
            for proxy in self._proxies:
                if proxy is not None:
                    await proxy.flush()
