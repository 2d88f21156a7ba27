"""Progress of a teacher run: a tqdm bar, rolling rates, a stall watchdog, a one-line summary.

The bar reads the engine's counters twice a second (no per-call redraw cost):

    expand: 41%|████      | 8210/20000 [02:11<03:08, ok=8190 fail=3 inflight=64 | 3.7k req/min
            1.2M tok/min | $1.84 ~ $4.49]

The watchdog warns (log level WARNING, logger `datagen.teacher`) when calls are pending and none
has finished for `stall_seconds`, naming the last error seen.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from datagen.teacher.stats import EngineStats

log = logging.getLogger("datagen.teacher")


def human(n: float) -> str:
    """1234 -> 1.2k, 1234567 -> 1.2M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def money(usd: float) -> str:
    """$0.0123, $4.56, $789."""
    if usd >= 100:
        return f"${usd:.0f}"
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.4f}"


class Progress:
    """Draws the bar and watches for stalls; call `tick()` periodically and `close()` at the end."""

    def __init__(
        self,
        stats: EngineStats,
        *,
        enabled: bool,
        desc: str = "",
        stall_seconds: float = 300.0,
        rate_window: float = 60.0,
    ):
        self.stats = stats
        self.enabled = enabled and sys.stderr.isatty()
        self.desc = desc or "teacher"
        self.stall_seconds = stall_seconds
        self.rate_window = rate_window
        self.started = time.monotonic()
        self.last_finish = self.started
        self.last_stall_warning = 0.0
        self.stalls = 0
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, finished, tokens)
        self._last_finished = 0
        self.bar = tqdm(
            total=None,
            desc=self.desc,
            unit="call",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=not self.enabled,
            leave=True,
        )

    def tick(self) -> None:
        """Refresh the bar and run the stall watchdog."""
        now = time.monotonic()
        st = self.stats
        finished = st.done + st.failed
        if finished != self._last_finished:
            self._last_finished = finished
            self.last_finish = now
        self._samples.append((now, finished, st.prompt_tokens + st.completion_tokens))
        while len(self._samples) > 2 and self._samples[0][0] < now - self.rate_window:
            self._samples.popleft()
        pending = st.submitted - finished
        if (
            pending > 0
            and now - self.last_finish >= self.stall_seconds
            and now - self.last_stall_warning >= self.stall_seconds
        ):
            self.last_stall_warning = now
            self.stalls += 1
            last = f"; last error: {st.last_error}" if st.last_error else ""
            log.warning(
                "%s: no teacher call finished in %.0fs (%d pending, %d in flight, %d retries so far%s)",
                self.desc,
                now - self.last_finish,
                pending,
                st.in_flight,
                st.retries,
                last,
            )
        if self.enabled:
            self.bar.total = max(st.expected, st.submitted) or None
            self.bar.n = finished
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.refresh()

    def rates(self) -> tuple[float, float]:
        """(finished calls per minute, tokens per minute) over the last rate window."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        t0, f0, k0 = self._samples[0]
        t1, f1, k1 = self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0
        return (f1 - f0) * 60.0 / span, (k1 - k0) * 60.0 / span

    def postfix(self) -> str:
        st = self.stats
        rpm, tpm = self.rates()
        cost = money(st.cost)
        projected = st.projected_cost()
        if projected is not None:
            cost += f" ~ {money(projected)}"
        return (
            f"ok={st.done} fail={st.failed} inflight={st.in_flight} | {human(rpm)} req/min "
            f"{human(tpm)} tok/min | {cost}"
        )

    def summary(self) -> str:
        """One line for the end of a run."""
        st = self.stats
        elapsed = time.monotonic() - self.started
        rate = (st.done + st.failed - st.cached) * 60.0 / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{self.desc}: {st.done} ok ({st.cached} cached), {st.failed} failed",
            f"{st.sent} HTTP requests ({st.retries} retries, {st.rate_limited} rate-limited)",
            f"{human(st.prompt_tokens)} prompt + {human(st.completion_tokens)} completion tokens",
            f"${st.cost:.4f}",
            f"{elapsed:.1f}s ({human(rate)} calls/min)",
        ]
        if st.errors:
            parts.append("failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(st.errors.items())))
        return ", ".join(parts)

    def close(self) -> str:
        """Final refresh, close the bar, emit and return the summary line."""
        self.tick()
        line = self.summary()
        if self.enabled:
            self.bar.close()
            print(line, file=sys.stderr)
        else:
            self.bar.close()
            log.info(line)
        return line
