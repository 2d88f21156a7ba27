"""The call journal: one SQLite row (WAL mode) per distinct teacher request.

The journal is at once the response cache (a rerun pays nothing for finished calls), the resume
point after a crash or Ctrl-C, the replay record (each row holds the canonical request) and the
ledger of tokens and cost. A row is keyed by `request_key`: the sha256 of the canonical request
(model, messages, sampling parameters, template version). The API key is never part of it.

Writes go through one writer thread that commits in groups: whatever finished while the previous
commit ran goes into the next transaction, so a million rows cost a few thousand commits and no
finished call waits on a timer. `write()` returns once the row is committed; with WAL and
`synchronous=NORMAL` a committed row survives SIGKILL of the process (an OS crash may lose the
last few transactions, which are then simply re-asked).

Rows with status `failed` are the failure ledger: they keep the last error, and the next run asks
them again (they are never served as cached).

Batch mode (`datagen.teacher.batch`) adds two tables: `batches` (one row per batch input file: its
round, the provider's file and batch ids, its status) and `batch_lines` (one row per submitted
line: custom_id, journal key, canonical request, whether it was settled). Both are written before
the run waits on the provider, so a killed run polls the same batches again and submits no line
twice. Journals written before these columns and tables existed are upgraded in place on open.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.teacher.redact import redact_opt

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,                 -- ok | failed
    model TEXT,
    request TEXT NOT NULL,                -- canonical request JSON (replay record)
    response TEXT,                        -- the assistant text (ok rows; failed `length` rows keep it too)
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,      -- usage of the stored response
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    paid_prompt_tokens INTEGER NOT NULL DEFAULT 0, -- summed over every paid try, all runs
    paid_completion_tokens INTEGER NOT NULL DEFAULT 0,
    paid_cost REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,           -- HTTP tries, all runs
    error TEXT,
    detail TEXT,
    latency REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0,      -- of prompt_tokens, read from the provider's cache
    paid_cached_tokens INTEGER NOT NULL DEFAULT 0,
    mode TEXT                                      -- online | batch: how the stored answer was made
);
CREATE INDEX IF NOT EXISTS calls_failed ON calls(error) WHERE status = 'failed';
CREATE TABLE IF NOT EXISTS batches (
    name TEXT PRIMARY KEY,                -- b000001: the local name; every custom_id starts with it
    round INTEGER NOT NULL,
    model TEXT,
    transport TEXT NOT NULL,              -- api | files
    status TEXT NOT NULL,                 -- writing, uploaded, the provider's status, exported, imported
    settled INTEGER NOT NULL DEFAULT 0,   -- 1 once every line is settled (or the batch abandoned)
    file_id TEXT,
    batch_id TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    counts TEXT,                          -- the provider's last request_counts (JSON)
    path TEXT,                            -- the round file (files transport)
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_lines (
    custom_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    batch TEXT NOT NULL,                  -- batches.name
    request TEXT NOT NULL,                -- canonical request JSON
    require_complete INTEGER NOT NULL DEFAULT 1,
    settled INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,                         -- ok, or the error code it was settled with
    delivered INTEGER NOT NULL DEFAULT 1  -- 0: a final failure no stage has been handed yet
);
CREATE INDEX IF NOT EXISTS batch_lines_key ON batch_lines(key);
CREATE INDEX IF NOT EXISTS batch_lines_open ON batch_lines(batch) WHERE settled = 0;
"""

#: Columns added to `calls` after schema version 1 first shipped: added in place to older journals.
_ADDED_COLUMNS = {
    "cached_tokens": "INTEGER NOT NULL DEFAULT 0",
    "paid_cached_tokens": "INTEGER NOT NULL DEFAULT 0",
    "mode": "TEXT",
}

_COLUMNS = (
    "key",
    "status",
    "model",
    "request",
    "response",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "paid_prompt_tokens",
    "paid_completion_tokens",
    "paid_cost",
    "attempts",
    "error",
    "detail",
    "latency",
    "created",
    "updated",
    "cached_tokens",
    "paid_cached_tokens",
    "mode",
)

# An ok row is never replaced by a failure; counters of paid work add up across runs.
_UPSERT = f"""
INSERT INTO calls ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
ON CONFLICT(key) DO UPDATE SET
    status = excluded.status, model = excluded.model, request = excluded.request,
    response = excluded.response, finish_reason = excluded.finish_reason,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    cost = excluded.cost,
    paid_prompt_tokens = calls.paid_prompt_tokens + excluded.paid_prompt_tokens,
    paid_completion_tokens = calls.paid_completion_tokens + excluded.paid_completion_tokens,
    paid_cost = calls.paid_cost + excluded.paid_cost,
    attempts = calls.attempts + excluded.attempts,
    error = excluded.error, detail = excluded.detail, latency = excluded.latency,
    updated = excluded.updated, cached_tokens = excluded.cached_tokens,
    paid_cached_tokens = calls.paid_cached_tokens + excluded.paid_cached_tokens, mode = excluded.mode
WHERE calls.status != 'ok' OR excluded.status = 'ok'
"""


def canonical_request(
    model: str, messages: Any, params: dict[str, Any], template_version: str = "", *, sample: int = 0
) -> dict[str, Any]:
    """The request as the journal keys and stores it (no credentials, ever)."""
    req: dict[str, Any] = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "params": dict(params),
        "template_version": template_version,
    }
    if sample:
        req["sample"] = sample
    return req


def request_key(
    model: str, messages: Any, params: dict[str, Any], template_version: str = "", *, sample: int = 0
) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys) of a request: the journal key."""
    return key_of(canonical_request(model, messages, params, template_version, sample=sample))


def key_of(canonical: dict[str, Any]) -> str:
    """sha256 of an already canonical request dict."""
    return hashlib.sha256(dumps(canonical).encode("utf-8")).hexdigest()


def dumps(obj: Any) -> str:
    """The journal's JSON form: sorted keys, no spaces, UTF-8 text as is."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class JournalEntry:
    """One journal row. `prompt_tokens`/`completion_tokens`/`cached_tokens`/`cost` describe this
    call's last try; `paid_*` and `attempts` are what this call has cost so far in all (the writer
    adds them up). `mode` says whether the last try was an online call or a batch line."""

    key: str
    status: str
    request: dict[str, Any]
    model: str | None = None
    response: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    paid_prompt_tokens: int = 0
    paid_completion_tokens: int = 0
    paid_cost: float = 0.0
    attempts: int = 0
    error: str | None = None
    detail: str | None = None
    latency: float | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    cached_tokens: int = 0
    paid_cached_tokens: int = 0
    mode: str | None = None

    def _row(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.status,
            self.model,
            dumps(self.request),
            self.response,
            self.finish_reason,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost,
            self.paid_prompt_tokens,
            self.paid_completion_tokens,
            self.paid_cost,
            self.attempts,
            self.error,
            redact_opt(self.detail),
            self.latency,
            self.created,
            self.updated,
            self.cached_tokens,
            self.paid_cached_tokens,
            self.mode,
        )

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> JournalEntry:
        d = dict(row)
        d["request"] = json.loads(d["request"])
        return cls(**d)


@dataclass(slots=True)
class JournalStats:
    """Totals over a journal: counts by status, tokens and USD actually paid, per model."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached_tokens: int = 0
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.total} calls: {self.ok} ok, {self.failed} failed, {self.attempts} HTTP tries; "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens; ${self.cost:.4f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost": round(self.cost, 6),
            "by_model": self.by_model,
        }


@dataclass(slots=True)
class FailureGroup:
    """Failed rows sharing one error code, with the most recent detail as an example."""

    error: str
    count: int
    example: str | None
    attempts: int


_STOP = object()

#: One SQL statement and its parameters, run by the writer thread.
Statement = tuple[str, tuple[Any, ...]]


class Journal:
    """A SQLite journal of teacher calls. Open it with `with Journal(path) as j:` (or `open()`).

    Reads run on the caller's thread; writes are queued to one writer thread and committed in
    groups. `write()` is awaitable (returns once committed); `put()` takes a plain callback.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Journal:
        """Create or open the database and start the writer thread."""
        if self._reader is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            raise DatagenError(f"{self.path}: not a usable journal ({exc})") from None
        try:
            with conn:
                conn.executescript(_SCHEMA)
                row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise DatagenError(
                        f"{self.path}: journal schema version {row[0]}, this datagen reads "
                        f"version {SCHEMA_VERSION}; use a new journal path"
                    )
                have = {r[1] for r in conn.execute("PRAGMA table_info(calls)")}
                for name, decl in _ADDED_COLUMNS.items():
                    if name not in have:
                        conn.execute(f"ALTER TABLE calls ADD COLUMN {name} {decl}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DatagenError(f"{self.path}: not a usable journal ({exc})") from None
        self._reader = conn
        self._writer = threading.Thread(target=self._write_loop, name="datagen-journal", daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        """Commit everything queued, stop the writer, close the database."""
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across process kills in WAL mode
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    # ------------------------------------------------------------------ writes

    def put(
        self,
        entry: JournalEntry,
        on_commit: Callable[[BaseException | None], None] | None = None,
        *also: Statement,
    ) -> None:
        """Queue a row (and statements `also`, committed in the same transaction); `on_commit(error)`
        is called from the writer thread once it is committed."""
        self._enqueue([(_UPSERT, entry._row()), *also], on_commit)

    def _enqueue(
        self, statements: list[Statement], on_commit: Callable[[BaseException | None], None] | None
    ) -> None:
        if self._writer is None:
            raise DatagenError(f"{self.path}: journal is not open")
        if self._write_error is not None:
            raise DatagenError(f"{self.path}: journal writes failed: {self._write_error}")
        self._queue.put((statements, on_commit))

    def put_statements(self, *statements: Statement) -> None:
        """Queue statements (one transaction) without waiting for the commit."""
        self._enqueue(list(statements), None)

    async def write(self, entry: JournalEntry, *also: Statement) -> None:
        """Queue a row (and statements `also`, in the same transaction) and wait until committed."""
        await self.execute((_UPSERT, entry._row()), *also)

    async def execute(self, *statements: Statement) -> None:
        """Run statements in one transaction on the writer thread; returns once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, error)

        self._enqueue(list(statements), done)
        await fut

    def flush(self) -> None:
        """Block until every row queued so far is committed."""
        event = threading.Event()
        self.put_marker(event.set)
        event.wait()

    def put_marker(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the writer thread) once everything queued before it is committed."""
        if self._writer is None:
            callback()
            return
        self._queue.put((None, lambda _err: callback()))

    def _write_loop(self) -> None:
        conn = self._connect()
        stop = False
        try:
            while not stop:
                batch = [self._queue.get()]
                # Group commit: take everything that queued up while the last commit ran.
                while len(batch) < 10_000:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                statements: list[Statement] = []
                callbacks = []
                for item in batch:
                    if item is _STOP:
                        stop = True
                        continue
                    stmts, cb = item
                    if stmts:
                        statements.extend(stmts)
                    if cb is not None:
                        callbacks.append(cb)
                error: BaseException | None = None
                if statements:
                    try:
                        conn.execute("BEGIN")
                        for sql, group in itertools.groupby(statements, key=lambda st: st[0]):
                            conn.executemany(sql, [params for _, params in group])
                        conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        error = exc
                        self._write_error = exc
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                for cb in callbacks:
                    cb(error)
        finally:
            conn.close()

    # ------------------------------------------------------------------ reads

    @property
    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise DatagenError(f"{self.path}: journal is not open")
        return self._reader

    def get(self, key: str) -> JournalEntry | None:
        """The row for `key` (any status), or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM calls WHERE key = ?", (key,)).fetchone()
        return JournalEntry._from_row(row) if row is not None else None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only SQL query on the shared reader (the batch tables' helpers use it)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def get_ok(self, key: str) -> JournalEntry | None:
        """The finished row for `key`, or None when there is none (or only a failure)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM calls WHERE key = ? AND status = 'ok'", (key,)).fetchone()
        return JournalEntry._from_row(row) if row is not None else None

    def entries(self, status: str | None = None) -> Iterator[JournalEntry]:
        """Every row (optionally of one status), oldest first."""
        sql = "SELECT * FROM calls" + (" WHERE status = ?" if status else "") + " ORDER BY created"
        conn = self._reader_for_iteration()
        try:
            for row in conn.execute(sql, (status,) if status else ()):
                yield JournalEntry._from_row(row)
        finally:
            conn.close()

    def _reader_for_iteration(self) -> sqlite3.Connection:
        # A private connection so iterating does not hold the shared reader's lock.
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def count(self, status: str | None = None) -> int:
        """Number of rows (of one status)."""
        sql = "SELECT count(*) FROM calls" + (" WHERE status = ?" if status else "")
        with self._lock:
            return self._db.execute(sql, (status,) if status else ()).fetchone()[0]

    def stats(self) -> JournalStats:
        """Counts, tokens and cost paid, in all and per model."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model, status, count(*), sum(attempts), sum(paid_prompt_tokens), "
                "sum(paid_completion_tokens), sum(paid_cost), sum(paid_cached_tokens) FROM calls "
                "GROUP BY model, status"
            ).fetchall()
        st = JournalStats()
        for model, status, n, attempts, pt, ct, cost, cached in rows:
            st.total += n
            st.ok += n if status == "ok" else 0
            st.failed += n if status == "failed" else 0
            st.attempts += attempts or 0
            st.prompt_tokens += pt or 0
            st.completion_tokens += ct or 0
            st.cost += cost or 0.0
            st.cached_tokens += cached or 0
            m = st.by_model.setdefault(
                model or "?",
                {
                    "ok": 0,
                    "failed": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "cached_tokens": 0,
                    "cost": 0.0,
                },
            )
            m[status] = m.get(status, 0) + n
            m["prompt_tokens"] += pt or 0
            m["cached_tokens"] += cached or 0
            m["completion_tokens"] += ct or 0
            m["cost"] = round(m["cost"] + (cost or 0.0), 6)
        return st

    def failures(self) -> list[FailureGroup]:
        """The failure ledger grouped by error code, largest group first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT error, count(*), sum(attempts), "
                "(SELECT detail FROM calls c2 WHERE c2.status = 'failed' AND c2.error IS c1.error "
                " ORDER BY updated DESC LIMIT 1) "
                "FROM calls c1 WHERE status = 'failed' GROUP BY error ORDER BY count(*) DESC"
            ).fetchall()
        return [
            FailureGroup(error=e or "unknown", count=n, attempts=a or 0, example=d) for e, n, a, d in rows
        ]


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(DatagenError(f"journal write failed: {error}"))
