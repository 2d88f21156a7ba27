"""Part of the former datagen/teacher/engine.py (see ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class EngineStats:
    """Counters of one engine session. `done` counts ok results (cached ones included), `failed`
    failed ones; tokens and cost are what this session paid (cached calls cost nothing now)."""

    submitted: int = 0
    expected: int = 0
    done: int = 0
    failed: int = 0
    cached: int = 0
    in_flight: int = 0
    sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    concurrency: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def pending(self) -> int:
        """Submitted calls that have not finished yet."""
        return self.submitted - self.done - self.failed

    def projected_cost(self) -> float | None:
        """Cost so far plus the average paid call's cost times the calls still to come, when the
        total is known."""
        total = max(self.expected, self.submitted)
        paid = self.done + self.failed - self.cached
        if not total or paid <= 0:
            return None
        remaining = max(0, total - self.done - self.failed)
        return self.cost + self.cost / paid * remaining

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        out["errors"] = dict(self.errors)
        return out
