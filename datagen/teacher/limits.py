"""Client-side limits: adaptive concurrency, request/token rate windows, a token estimate.

`AdaptiveConcurrency` is a semaphore whose size halves when most recent answers are 429s (once
per "generation" of requests, like TCP's congestion window, so a burst of 429s from one wave counts
once) and grows back by one for every `limit` successes. A minority of 429s lowers nothing.

`WindowLimiter` keeps the units (requests or tokens) reaching the server in any sliding window at
or below the limit, and paces them evenly (a token bucket at limit/window with a small burst) so the server
never sees the whole window's quota in its first second. Token reservations are estimates; they
are settled with the usage the server reports.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any


class AdaptiveConcurrency:
    """A semaphore of `maximum` slots that shrinks when the server pushes back (429) and grows back
    on success.

    Every answer is recorded, 429 (`pushed_back`) or success (`succeeded`). The server counts as
    overloaded when three quarters of the recent answers are 429s (judged on at least
    `min(limit, sample)` answers, the last `max(sample, maximum)`): a server refusing a
    random 30% passes that bar about once in 10,000 runs of 400 requests, a real overload at once.
    Only then is the limit halved, and at most once per
    generation of requests (a 429 to a request sent before the last cut says nothing about the new
    limit). A minority of 429s is a server refusing some requests at random, or a limit we sit just
    above: each of those requests waits and retries on its own, and halving on top would only
    collapse the throughput.
    """

    def __init__(self, maximum: int, *, minimum: int = 1, sample: int = 32):
        self.maximum = maximum
        self.minimum = max(1, min(minimum, maximum))
        self.limit = maximum
        self.active = 0
        self.epoch = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sample = sample
        self._recent: deque[bool] = deque(maxlen=max(sample, maximum))
        self._recent_429 = 0

    async def acquire(self) -> int:
        """Take a slot; returns the current epoch (pass it to `pushed_back`)."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return self.epoch
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return self.epoch

    def release(self) -> None:
        """Give a slot back."""
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    def overloaded(self) -> bool:
        """True when three quarters of the recent answers (enough of them to judge) were 429s."""
        n = len(self._recent)
        return n >= min(self.limit, self._sample) and 4 * self._recent_429 >= 3 * n

    def _record(self, rate_limited: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_429 -= 1
        self._recent.append(rate_limited)
        self._recent_429 += rate_limited

    def pushed_back(self, epoch: int) -> bool:
        """The server said 429 to a request started in `epoch`. Returns True when it looks
        overloaded (`overloaded`); the limit is then halved, once per epoch."""
        self._record(True)
        if not self.overloaded():
            return False
        if epoch == self.epoch:
            self.epoch += 1
            self._successes = 0
            self.limit = max(self.minimum, self.limit // 2)
        return True

    def succeeded(self) -> None:
        """A success. Additive increase: one more slot per `limit` successes, up to the maximum."""
        self._record(False)
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()


class WindowLimiter:
    """At most `limit` units in any `window` seconds, sent at an even pace.

    `acquire(amount)` waits, in FIFO order, until both the sliding window and the pacing bucket
    allow `amount`, and returns a handle. The window counts a request from when it reaches the
    server, which the client cannot see; it only knows it lies between the send (`sent()`, an
    httpx hook) and the answer (`finished()`). So a reservation is stamped `send + guard` until
    the answer comes, then `min(that, answer time)`: a fast call is counted exactly from a time at
    or after its arrival, a slow one from `guard` seconds after it left. `settle(handle, actual)`
    corrects the amount once the true figure is known (the server's usage). A single amount
    above the limit is admitted alone (when the window is empty) rather than never.
    """

    def __init__(self, limit: int, window: float = 60.0, *, guard: float | None = None):
        self.limit = limit
        self.window = window
        self.guard = guard if guard is not None else max(0.5, 0.01 * window)
        self.rate = limit / window
        self.burst = max(1.0, limit / 60.0)
        self._level = self.burst
        self._stamp = time.monotonic()
        self._log: deque[list[Any]] = deque()  # [counted-from time, amount, still in the log]
        self._sum = 0.0
        self._lock = asyncio.Lock()

    @property
    def in_window(self) -> float:
        """Units counted in the current window."""
        self._expire(time.monotonic())
        return self._sum

    def _expire(self, now: float) -> None:
        log = self._log
        edge = now - self.window
        while log and log[0][0] <= edge:
            entry = log.popleft()
            entry[2] = False
            self._sum -= entry[1]

    def _refill(self, now: float) -> None:
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def _wait_time(self, amount: float, now: float) -> float:
        need = min(amount, self.limit)
        wait = 0.0
        if self._sum + need > self.limit:
            # Walk the oldest entries until enough would have left the window. Entries leave in
            # log order, each once every stamp up to it is old enough (stamps move, so take the max).
            excess = self._sum + need - self.limit
            freed = 0.0
            latest = float("-inf")
            for stamp, units, _ in self._log:
                freed += units
                latest = max(latest, stamp)
                if freed >= excess:
                    wait = latest + self.window - now
                    break
        want = min(need, self.burst)
        if self._level < want:
            wait = max(wait, (want - self._level) / self.rate)
        return wait

    async def acquire(self, amount: float = 1.0) -> list[Any]:
        """Wait until `amount` units may be sent; returns a handle for `sent`/`finished`/`settle`."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._expire(now)
                self._refill(now)
                wait = self._wait_time(amount, now)
                if wait <= 0:
                    break
                # A floor on the sleep: a stamp moved meanwhile must not make this a busy loop.
                await asyncio.sleep(max(wait, 0.001))
            entry = [now + self.guard, float(amount), True]
            self._log.append(entry)
            self._sum += amount
            self._level -= amount
            return entry

    def sent(self, handle: list[Any], when: float) -> None:
        """The request left at `when` (it may have waited for the event loop or a connection)."""
        if handle[2] and when + self.guard > handle[0]:
            handle[0] = when + self.guard

    def finished(self, handle: list[Any], when: float) -> None:
        """The answer (or error) came at `when`: the request reached the server before that."""
        if handle[2] and when < handle[0]:
            handle[0] = when

    def settle(self, handle: list[Any], actual: float) -> None:
        """Replace a reservation by the actual amount (refunds or charges the difference)."""
        diff = actual - handle[1]
        handle[1] = float(actual)
        if handle[2]:  # still counted in the window
            self._sum += diff
        self._level = min(self.burst, self._level - diff)


def estimate_tokens(messages: Any) -> int:
    """A cheap prompt-token estimate with no tokenizer: ~4 ASCII characters or ~1 CJK character
    per token, plus a few tokens of framing per message. It only has to be close enough to pace
    a TPM limit; the server's usage settles the difference."""
    total = 3
    for m in messages:
        total += 4
        content = m.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not content:
            continue
        text = str(content)
        n_chars = len(text)
        extra = len(text.encode("utf-8")) - n_chars
        wide = extra // 2  # most non-ASCII text (CJK) is 3 bytes a character in UTF-8
        total += (n_chars - wide) // 4 + wide + 1
    return total
