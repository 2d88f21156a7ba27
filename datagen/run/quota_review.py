"""A reviewer's decisions in a run in waves: `datagen review RUN_DIR` appends them to
`RUN_DIR/review.jsonl` (the run's `final.jsonl` is what the page lists), and the waves' rows pass
through them before anything is counted or capped, as a plain run's `review` step does:

- a rejected row leaves: its cell counts one accepted row fewer, so the next run fills the gap from
  the reserve first and asks new waves only for what the reserve lacks;
- an accepted row stays, and one a filter of its wave dropped comes back and counts in its cell;
- an edited answer replaces the original (the row is marked) and becomes a preference pair.

The decisions key rows by id, which is unique over the waves (a dialogue's id is its prompt's, and
no prompt is asked twice), and by the content hash the reviewer saw, as in a plain run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.io import iter_conversations
from datagen.paths import file_identity
from datagen.review.apply import DecisionBook, ReviewStats, iter_apply, rows_with_ids
from datagen.review.decisions import DECISIONS_FILE

#: Where a wave keeps the rows its filters and its check dropped (an accepted one comes back).
DROPPED_FILES = ("filtered/rejected.jsonl", "checked/rejected.jsonl")


class WaveReview:
    """The decisions of `run_dir/review.jsonl` (none when there is no such file), applied wave by
    wave; `stats` adds up what they did over every wave read since the object was made."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / DECISIONS_FILE
        self.book = DecisionBook.load(self.path) if self.path.exists() else None
        self.accepted = self.book.accepted_ids() if self.book is not None else set()
        self.stats = ReviewStats()

    @property
    def active(self) -> bool:
        """Whether there are decisions to apply."""
        return self.book is not None and bool(self.book.by_id)

    def identity(self) -> str:
        """The decisions file's identity (part of the final stage's fingerprint)."""
        return file_identity(str(self.path)) if self.path.exists() else ""

    def rows(self, wave_dir: Path) -> Iterator[Any]:
        """The rows a wave accepted (`final.jsonl`), decisions applied, then the rows its filters or
        check dropped that a reviewer accepted. Nothing for a wave that has not finished."""
        final = Path(wave_dir) / "final.jsonl"
        if not final.exists():
            return
        if not self.active:
            yield from iter_conversations(final)
            return
        dropped = rows_with_ids([Path(wave_dir) / p for p in DROPPED_FILES], self.accepted)
        yield from iter_apply(self.book, iter_conversations(final), self.stats, dropped=dropped)

    def summary(self) -> str | None:
        """One line for `datagen status` (None without decisions)."""
        if not self.active:
            return None
        s = self.stats
        line = f"Review: {s.rejected} rows rejected, {s.edited} edited, {s.rescued} brought back"
        if s.flagged:
            line += f"; {len(s.flagged)} decisions not applied (their rows changed since)"
        return line
