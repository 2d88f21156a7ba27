"""`Issue`: one thing wrong (or merely unusual) in a conversation, found while parsing or checking.

Parsers append issues to an optional list instead of raising when the input can still be
represented faithfully; `datagen validate` prints them. `noise=True` marks accepted deviations
from the canonical rendering that occur in released MOSS data (e.g. `Search("a"), None`); they are
errors only under `--strict`. `recovered=True` marks errors in one segment that did not stop the
record from being read: the segment is kept verbatim (`Turn.raw`, `Turn.problems`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Issue:
    """`turn` is 1-based (None for conversation-level issues); `field` is the SFT key or record
    field (`Commands`, `Tool Responses`, `num_turns`, ...)."""

    reason: str
    field: str | None = None
    turn: int | None = None
    noise: bool = False
    recovered: bool = False

    def format(self) -> str:
        """`turn N: field: reason`, leaving out the parts that are None."""
        parts = []
        if self.turn is not None:
            parts.append(f"turn {self.turn}")
        if self.field:
            parts.append(self.field)
        parts.append(self.reason)
        return ": ".join(parts)

    def at(self, turn: int | None = None, field: str | None = None) -> Issue:
        """A copy with turn/field filled in where this one has none."""
        return Issue(
            self.reason,
            self.field or field,
            self.turn if self.turn is not None else turn,
            self.noise,
            self.recovered,
        )
