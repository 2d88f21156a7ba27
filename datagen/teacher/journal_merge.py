"""Journal shards: each worker of a cluster run writes its own `journal-<rank>.sqlite` (SQLite has
one writer per file, and a shared file over a network filesystem is asking for trouble); the
runner merges them into the run's `journal.sqlite`, so a rerun on one machine finds every call a
cluster made, and a cluster rerun finds them in turn (`ShardJournal` reads the merged journal and
writes its own shard).

The merge follows the journal's own upsert rule: an ok row is never replaced by a failure, the
newer of two rows of one status wins, and the paid counters (tokens, cost, attempts) add up. It is
idempotent: a `shard_merges` table in the merged journal remembers what each shard (known by an id
stored in the shard) has already contributed, and only the difference is added, so merging the
same shards after every stage, or again after a crash, never counts a paid call twice.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datagen.errors import DatagenError
from datagen.teacher.journal import _COLUMNS, Journal, JournalEntry

#: The counters that add up across shards and runs (the rest of a row is replaced).
_PAID = ("paid_prompt_tokens", "paid_completion_tokens", "paid_cost", "attempts")
_CONTENT = tuple(c for c in _COLUMNS if c not in _PAID and c not in ("key", "created"))

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS shard_merges (
    shard TEXT NOT NULL, key TEXT NOT NULL,
    paid_prompt_tokens INTEGER NOT NULL, paid_completion_tokens INTEGER NOT NULL,
    paid_cost REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (shard, key)
)
"""

# The shard's rows with what they add since their last merge (all of it the first time).
_DELTAS = f"""
CREATE TEMP TABLE merge_rows AS
SELECT s.key AS key, {", ".join(f"s.{c} AS {c}" for c in _CONTENT)}, s.created AS created,
       {", ".join(f"s.{c} - coalesce(m.{c}, 0) AS {c}" for c in _PAID)}
FROM shard.calls AS s
LEFT JOIN shard_merges AS m ON m.shard = :shard AND m.key = s.key
"""

# The journal's upsert (journal._UPSERT) with the deltas: the paid counters always add; the rest
# of the row is the shard's when it is not a failure over an ok row and is at least as new.
_MERGE = f"""
INSERT INTO calls ({", ".join(_COLUMNS)})
SELECT {", ".join(_COLUMNS)} FROM merge_rows WHERE true
ON CONFLICT(key) DO UPDATE SET
    {", ".join(f"{c} = CASE WHEN {{take}} THEN excluded.{c} ELSE calls.{c} END" for c in _CONTENT)},
    {", ".join(f"{c} = calls.{c} + excluded.{c}" for c in _PAID)}
""".replace(
    "{take}",
    "(excluded.status = 'ok' AND (calls.status != 'ok' OR excluded.updated >= calls.updated))"
    " OR (excluded.status != 'ok' AND calls.status != 'ok' AND excluded.updated >= calls.updated)",
)

_REMEMBER = f"""
INSERT OR REPLACE INTO shard_merges (shard, key, {", ".join(_PAID)})
SELECT :shard, key, {", ".join(_PAID)} FROM shard.calls
"""


@dataclass(slots=True)
class MergeStats:
    """What a merge did: shards read, rows in them, rows new to the merged journal."""

    shards: int = 0
    rows: int = 0
    new: int = 0


def shard_path(run_dir: Path, rank: int) -> Path:
    """Where worker `rank` keeps its journal shard."""
    return Path(run_dir) / "journal-shards" / f"journal-{rank:05d}.sqlite"


def shard_paths(run_dir: Path) -> list[Path]:
    """Every journal shard of a run, in rank order."""
    return sorted((Path(run_dir) / "journal-shards").glob("journal-*.sqlite"))


def _shard_id(path: Path) -> str:
    """The shard's own id (made on first sight and stored in it): a shard deleted and made again
    is another shard, so nothing it wrote before is subtracted from it."""
    with Journal(path) as j:  # makes the schema when the shard is new
        conn = j._db
        row = conn.execute("SELECT value FROM meta WHERE name = 'shard_id'").fetchone()
        if row is not None:
            return row[0]
        sid = uuid.uuid4().hex
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('shard_id', ?)", (sid,))
        return conn.execute("SELECT value FROM meta WHERE name = 'shard_id'").fetchone()[0]


def merge_journals(target: Path, shards: Iterable[Path]) -> MergeStats:
    """Merge journal shards into the journal at `target` (created when missing). Safe to repeat."""
    target = Path(target)
    Journal(target).open().close()  # schema and version check
    stats = MergeStats()
    conn = sqlite3.connect(target, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(_BOOKKEEPING)
        for path in shards:
            path = Path(path)
            sid = _shard_id(path)
            conn.execute("ATTACH DATABASE ? AS shard", (str(path),))
            try:
                conn.execute("BEGIN IMMEDIATE")
                before = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
                conn.execute(_DELTAS, {"shard": sid})
                stats.rows += conn.execute("SELECT count(*) FROM merge_rows").fetchone()[0]
                conn.execute(_MERGE)
                conn.execute(_REMEMBER, {"shard": sid})
                conn.execute("DROP TABLE merge_rows")
                stats.new += conn.execute("SELECT count(*) FROM calls").fetchone()[0] - before
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise DatagenError(f"{path}: cannot merge this journal shard into {target} ({exc})") from None
            finally:
                conn.execute("DETACH DATABASE shard")
            stats.shards += 1
    finally:
        conn.close()
    return stats


class ShardJournal(Journal):
    """A worker's journal: writes go to its own shard; a lookup that misses there reads the run's
    merged journal (read-only), so a rerun pays for nothing any earlier run, on any machine, made."""

    def __init__(self, path: str | Path, base: str | Path):
        super().__init__(path)
        self.base = Path(base)
        self._base: sqlite3.Connection | None = None

    def open(self) -> ShardJournal:
        super().open()
        if self._base is None and self.base.exists():
            self._base = sqlite3.connect(f"file:{self.base}?mode=ro", uri=True, check_same_thread=False)
            self._base.row_factory = sqlite3.Row
        return self

    def close(self) -> None:
        super().close()
        if self._base is not None:
            self._base.close()
            self._base = None

    def get_ok(self, key: str) -> JournalEntry | None:
        """The finished row for `key`, from the shard or else the merged journal."""
        found = super().get_ok(key)
        if found is not None or self._base is None:
            return found
        with self._lock:
            row = self._base.execute("SELECT * FROM calls WHERE key = ? AND status = 'ok'", (key,)).fetchone()
        return JournalEntry._from_row(row) if row is not None else None
