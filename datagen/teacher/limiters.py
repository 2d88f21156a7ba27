"""The limiters a `TeacherEngine` sends through, as one value it can be given (`limiters=`).

By default an engine makes its own (`Limiters.local(config)`: the `AdaptiveConcurrency` and
`WindowLimiter`s of `limits.py`). A caller may hand it others with the same methods: the cluster's
shared ones (`shared_limits.py`), or one concurrency for several engines of one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from datagen.teacher.config import TeacherConfig
from datagen.teacher.limits import AdaptiveConcurrency, WindowLimiter

__all__ = ["ConcurrencyLimit", "Limiters", "RateWindow"]


class ConcurrencyLimit(Protocol):
    """What the engine asks of its concurrency (`AdaptiveConcurrency`'s interface)."""

    limit: int  # the current limit, as shown in progress and logged when it is lowered

    async def acquire(self) -> int:
        """Take a slot; returns the epoch to pass to `pushed_back`."""
        ...

    def release(self) -> None:
        """Give a slot back."""
        ...

    def pushed_back(self, epoch: int) -> bool:
        """A 429 to a request sent in `epoch`; True when the server looks overloaded."""
        ...

    def succeeded(self) -> None:
        """A success."""
        ...


class RateWindow(Protocol):
    """What the engine asks of an RPM or TPM window (`WindowLimiter`'s interface). A handle is
    whatever `acquire` returned."""

    async def acquire(self, amount: float = 1.0) -> Any:
        """Wait until `amount` units may be sent; returns a handle."""
        ...

    def sent(self, handle: Any, when: float) -> None:
        """The request left at `when` (this machine's monotonic clock)."""
        ...

    def finished(self, handle: Any, when: float) -> None:
        """Its answer (or error) came at `when`."""
        ...

    def settle(self, handle: Any, actual: float) -> None:
        """Replace the reservation by the actual amount."""
        ...


@dataclass(slots=True)
class Limiters:
    """An engine's concurrency and its RPM and TPM windows (None: no such limit)."""

    concurrency: ConcurrencyLimit
    rpm: RateWindow | None = None
    tpm: RateWindow | None = None

    @classmethod
    def local(cls, config: TeacherConfig) -> Limiters:
        """This process's own limiters for `config`'s concurrency, rpm, tpm and rate_window."""
        return cls(
            AdaptiveConcurrency(config.concurrency),
            WindowLimiter(config.rpm, config.rate_window) if config.rpm else None,
            WindowLimiter(config.tpm, config.rate_window) if config.tpm else None,
        )
