"""The review index: every row of a run in one SQLite file, `RUN_DIR/review/index.sqlite`.

One pass over the run's files fills it: kept rows (`final.jsonl`, else the last stage's kept file),
rows a filter or the local check rejected (with step, reason and evidence), dialogues that failed,
and expansion prompts that were rejected; for a run in waves also its `reserve.jsonl` (kept, stage
`reserve`) and the rows each wave's filters and check rejected. Each row keeps its file, byte offset and length, so a page
reads one line of the source file and the index stays small. An FTS5 table (contentless) makes the
text searchable; Chinese and Japanese characters are indexed one by one, so any run of them is
found. The index records the size and modification time of every file it read and is rebuilt when
one changes; reviewers' decisions (`review.jsonl`) are mirrored into it whenever that file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.io import atomic_path
from datagen.record import Conversation
from datagen.review.apply import review_mark
from datagen.review.calls import CALL_COLUMNS, link_calls
from datagen.review.decisions import DECISIONS_FILE, Decision, content_hash, read_decisions
from datagen.text.script import HAN_BMP, HANGUL_SYLLABLES, KANA_BASIC

INDEX_VERSION = "3"
INDEX_FILE = Path("review") / "index.sqlite"
PAGE_SIZE = 50
HIST_BINS = 30
_BATCH = 2000

_SCHEMA = f"""
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (sid INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER, mtime_ns INTEGER);
CREATE TABLE rows (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    status TEXT NOT NULL,        -- kept | rejected | failed
    stage TEXT NOT NULL,         -- final, the filter step, moss_check, dialogues.KIND, expand
    reason TEXT,
    evidence TEXT,               -- JSON
    category TEXT, language TEXT,
    kind TEXT NOT NULL,          -- hhh | plugin | prompt
    plugins TEXT NOT NULL,       -- ",search,calculator," (LIKE '%,search,%')
    turns INTEGER,
    loss REAL,
    hash TEXT NOT NULL,          -- content_hash as the reviewer sees it (before review edits)
    preview TEXT,
    sid INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL, line INTEGER NOT NULL
);
CREATE TABLE scores (rid INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL);
CREATE TABLE calls ({", ".join(CALL_COLUMNS)});
CREATE TABLE row_calls (id TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE decisions (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, hash TEXT NOT NULL, decision TEXT NOT NULL,
                        reason TEXT, turn INTEGER, who TEXT, at TEXT);
CREATE VIRTUAL TABLE fts USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');
"""
_INDEXES = """
CREATE INDEX rows_status ON rows(status, stage, reason);
CREATE INDEX rows_stage ON rows(stage, reason);
CREATE INDEX rows_cell ON rows(category, language, kind);
CREATE INDEX rows_id ON rows(id);
CREATE INDEX rows_hash ON rows(hash, rid);
CREATE INDEX scores_name ON scores(name, value);
CREATE INDEX scores_rid ON scores(rid);
CREATE INDEX row_calls_id ON row_calls(id);
CREATE INDEX calls_key ON calls(key);
CREATE INDEX decisions_id ON decisions(id);
"""

# Kana, Han and hangul are indexed one character at a time. A run of them is spaced out in one
# call: a substitution per character costs ten times more on a large run.
_CJK_RUN = re.compile(f"[{KANA_BASIC}{HAN_BMP}{HANGUL_SYLLABLES}]+")
_WORD = re.compile(r"\w+")


def fts_text(text: str) -> str:
    """Text as the FTS table indexes it (CJK characters spaced out)."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(m.group()) + " ", text)


def fts_query(query: str) -> str | None:
    """A user's search words as an FTS5 query: each whitespace-separated word becomes a quoted
    phrase of its tokens, all of them required. User input never reaches FTS5's syntax."""
    phrases = []
    for word in query.split():
        tokens = _WORD.findall(fts_text(word))
        if tokens:
            phrases.append('"' + " ".join(tokens) + '"')
    return " AND ".join(phrases) or None


@dataclass(slots=True)
class Source:
    """One file of the run the index reads. `status` is what its rows are; `stage` names the step
    for files that do not say it per row."""

    path: str
    status: str
    stage: str
    form: str  # conversation | failure | prompt


def run_sources(run_dir: Path) -> list[Source]:
    """The files of a run directory that hold rows, in the order the index lists them. The output
    folder of `datagen filter` or `datagen check` alone (kept.jsonl, rejected.jsonl) works too."""
    out: list[Source] = []
    for kept in ("final.jsonl", "checked/kept.jsonl", "filtered/kept.jsonl", "kept.jsonl"):
        if (run_dir / kept).is_file():
            out.append(Source(kept, "kept", "final", "conversation"))
            break
    for rejected in ("filtered/rejected.jsonl", "checked/rejected.jsonl", "rejected.jsonl"):
        if (run_dir / rejected).is_file():
            out.append(Source(rejected, "rejected", "", "conversation"))
    if (run_dir / "quota.json").is_file():  # a run in waves: its reserve, and what each wave dropped
        if (run_dir / "reserve.jsonl").is_file():
            out.append(Source("reserve.jsonl", "kept", "reserve", "conversation"))
        for wave in sorted(p for p in (run_dir / "waves").glob("w*") if p.is_dir()):
            for rejected in ("filtered/rejected.jsonl", "checked/rejected.jsonl"):
                if (wave / rejected).is_file():
                    out.append(Source(f"waves/{wave.name}/{rejected}", "rejected", "", "conversation"))
    for failed in sorted((run_dir / "dialogues").glob("*.failed.jsonl")):
        kind = failed.name.split(".")[0]
        out.append(Source(f"dialogues/{failed.name}", "failed", f"dialogues.{kind}", "failure"))
    for prompts in sorted((run_dir / "prompts").glob("*.rejected.jsonl")):
        out.append(Source(f"prompts/{prompts.name}", "rejected", "expand", "prompt"))
    return out


def _signature(run_dir: Path, paths: list[str]) -> list[list[Any]]:
    sig = []
    for rel in paths:
        p = run_dir / rel
        try:
            st = p.stat()
            sig.append([rel, st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            sig.append([rel, None, None])
    return sig


def _watched(run_dir: Path) -> list[str]:
    """Files whose change makes the index stale: the sources, the prompt files and the journal."""
    paths = [s.path for s in run_sources(run_dir)]
    paths += ["seeds.jsonl", "prompts/expanded.jsonl", "journal.sqlite", "journal.sqlite-wal"]
    return paths


# ------------------------------------------------------------------------------------------ reading


def _lines(path: Path) -> Iterator[tuple[int, int, bytes, Any]]:
    """(line number, byte offset, raw line, object) per non-blank line; a torn last line (no
    newline, not JSON) is skipped like `datagen.io` does, any other bad line is an InputError."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if not raw.endswith(b"\n"):
                    return
                raise InputError(f"invalid JSON ({exc})", path=str(path), line=lineno) from None
            yield lineno, start, raw, obj


def _prompt_rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Prompt id -> the prompt's row (seeds and expanded prompts), for dialogues that failed."""
    out: dict[str, dict[str, Any]] = {}
    for rel in ("seeds.jsonl", "prompts/expanded.jsonl"):
        p = run_dir / rel
        if p.is_file():
            for _, _, _, obj in _lines(p):
                if isinstance(obj, dict) and "id" in obj:
                    out[str(obj["id"])] = obj
    return out


def _conversation_text(conv: Conversation) -> str:
    parts = [conv.id]
    for t in conv.turns:
        parts += [t.human, t.thoughts or "", t.assistant]
        parts += [c.arg for c in t.calls]
        for r in t.results:
            parts.append(r.output)
            parts.extend(r.snippets)
    return "\n".join(p for p in parts if p)


def _id_hash(row_id: str) -> str:
    # Rows without turns (failures, prompts) take no decisions; this only orders them.
    return hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:16]


def _short(text: str, n: int = 180) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(slots=True)
class _Row:
    id: str
    status: str
    stage: str
    reason: str | None
    evidence: Any
    category: str | None
    language: str | None
    kind: str
    plugins: list[str]
    turns: int | None
    hash: str
    preview: str
    text: str
    scores: dict[str, float] = field(default_factory=dict)
    first: str = ""  # the first user message (links teacher calls)


def _conversation_row(src: Source, obj: dict[str, Any], where: tuple[str, int]) -> _Row:
    try:
        conv = Conversation.from_dict(obj)
    except KeyError as exc:
        raise InputError(
            "missing required field", path=where[0], line=where[1], field=str(exc.args[0])
        ) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(str(exc), path=where[0], line=where[1]) from None
    rej = obj.get("rejected") if isinstance(obj.get("rejected"), dict) else None
    evidence = (rej or {}).get("evidence")
    if rej is not None and rej.get("duplicate_of") is not None:
        evidence = {
            **(evidence if isinstance(evidence, dict) else {"evidence": evidence}),
            "duplicate_of": rej["duplicate_of"],
        }
    mark = review_mark(conv)
    scores = {
        k: float(v)
        for k, v in conv.scores.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }
    first = conv.turns[0].human if conv.turns else ""
    return _Row(
        id=conv.id,
        status=src.status,
        stage=(rej or {}).get("step") or src.stage or "?",
        reason=(rej or {}).get("reason"),
        evidence=evidence,
        category=conv.category,
        language=conv.language,
        kind=conv.kind,
        plugins=list(conv.plugins),
        turns=len(conv.turns),
        hash=(mark or {}).get("original_hash") or content_hash(conv),
        preview=_short(first),
        text=_conversation_text(conv),
        scores=scores,
        first=first,
    )


def _failure_row(src: Source, obj: dict[str, Any], prompts: Mapping[str, dict[str, Any]]) -> _Row:
    prompt = prompts.get(str(obj.get("prompt_id")), {})
    text = str(prompt.get("text") or "")
    row_id = str(obj.get("id"))
    detail = str(obj.get("detail") or "")
    evidence = {k: obj.get(k) for k in ("role", "turn", "detail", "permanent") if obj.get(k) is not None}
    return _Row(
        id=row_id,
        status="failed",
        stage=src.stage,
        reason=str(obj.get("reason") or "failed"),
        evidence=evidence,
        category=prompt.get("category"),
        language=prompt.get("language"),
        kind=src.stage.split(".", 1)[-1],
        plugins=list(prompt.get("plugins") or []),
        turns=None,
        hash=_id_hash(row_id),
        preview=_short(text or detail),
        text="\n".join([row_id, text, detail]),
        first=text,
    )


def _prompt_row(src: Source, obj: dict[str, Any], lineno: int) -> _Row:
    text = str(obj.get("text") or "")
    cell = str(obj.get("cell") or "")
    category, _, language = cell.partition("/")
    evidence = {k: obj.get(k) for k in ("detail", "cell", "request") if obj.get(k) is not None}
    return _Row(
        id=f"prompt:{lineno}",
        status="rejected",
        stage=src.stage,
        reason=str(obj.get("reason") or "?"),
        evidence=evidence,
        category=category or None,
        language=language or None,
        kind="prompt",
        plugins=[],
        turns=None,
        hash=_id_hash(f"prompt:{lineno}"),
        preview=_short(text),
        text=text,
    )


# ------------------------------------------------------------------------------------------ building


def build_index(run_dir: Path, path: Path | None = None) -> Path:
    """Build the review index of `run_dir` (atomically: a reader keeps the old one meanwhile) and
    return its path. Raises InputError for a bad line in a run file."""
    run_dir = Path(run_dir)
    path = path or run_dir / INDEX_FILE
    with atomic_path(path) as tmp:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            watched = _watched(run_dir)
            sig = _signature(run_dir, watched)  # before reading: a file that changes meanwhile reads as stale
            prompts = _prompt_rows(run_dir)
            first_messages: dict[str, list[str]] = {}
            rid = 0
            for sid, src in enumerate(run_sources(run_dir)):
                conn.execute("INSERT INTO sources VALUES (?, ?, NULL, NULL)", (sid, src.path))
                batch: list[tuple[_Row, int, int, int, int]] = []
                file = run_dir / src.path
                for lineno, offset, raw, obj in _lines(file):
                    if not isinstance(obj, dict):
                        raise InputError("not a JSON object", path=str(file), line=lineno)
                    if src.form == "conversation":
                        row = _conversation_row(src, obj, (str(file), lineno))
                    elif src.form == "failure":
                        row = _failure_row(src, obj, prompts)
                    else:
                        row = _prompt_row(src, obj, lineno)
                    if row.first and row.kind != "prompt":
                        first_messages.setdefault(row.first, [])
                        if row.id not in first_messages[row.first]:
                            first_messages[row.first].append(row.id)
                    rid += 1
                    batch.append((row, rid, offset, len(raw), lineno))
                    if len(batch) >= _BATCH:
                        _insert(conn, batch, sid)
                        batch = []
                _insert(conn, batch, sid)
            calls_seen: set[str] = set()
            links = []
            for ids, call in link_calls(run_dir / "journal.sqlite", first_messages):
                if call.key not in calls_seen:
                    calls_seen.add(call.key)
                    conn.execute(
                        f"INSERT INTO calls VALUES ({', '.join('?' * len(CALL_COLUMNS))})", call.to_row()
                    )
                links += [(i, call.key) for i in ids]
            conn.executemany("INSERT INTO row_calls VALUES (?, ?)", links)
            conn.executescript(_INDEXES)
            _store_summary(conn)
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("version", INDEX_VERSION), ("signature", json.dumps(sig)), ("decisions", "")],
            )
            conn.commit()
        finally:
            conn.close()
    return path


def _insert(conn: sqlite3.Connection, batch: list[tuple[_Row, int, int, int, int]], sid: int) -> None:
    conn.executemany(
        f"INSERT INTO rows VALUES ({', '.join('?' * 18)})",
        [
            (
                rid,
                r.id,
                r.status,
                r.stage,
                r.reason,
                json.dumps(r.evidence, ensure_ascii=False) if r.evidence else None,
                r.category,
                r.language,
                r.kind,
                "," + ",".join(r.plugins) + "," if r.plugins else "",
                r.turns,
                r.scores.get("moss_loss"),
                r.hash,
                r.preview,
                sid,
                offset,
                length,
                line,
            )
            for r, rid, offset, length, line in batch
        ],
    )
    conn.executemany(
        "INSERT INTO scores VALUES (?, ?, ?)",
        [(rid, k, v) for r, rid, *_ in batch for k, v in r.scores.items()],
    )
    conn.executemany(
        "INSERT INTO fts (rowid, text) VALUES (?, ?)", [(rid, fts_text(r.text)) for r, rid, *_ in batch]
    )


_FACETS = ("status", "category", "language", "kind")


def _store_summary(conn: sqlite3.Connection) -> None:
    """Counts the filter menus show, computed once so a page never scans the whole table for them."""
    facets: dict[str, Any] = {}
    for col in _FACETS:
        facets[col] = conn.execute(
            f"SELECT coalesce({col}, ''), count(*) FROM rows GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    facets["stage"] = conn.execute(
        "SELECT stage, reason, count(*) FROM rows WHERE status != 'kept' GROUP BY 1, 2 ORDER BY 1, 3 DESC"
    ).fetchall()
    # kept rows by where they sit: `final`, and `reserve` for a run in waves
    facets["kept_stage"] = conn.execute(
        "SELECT stage, count(*) FROM rows WHERE status = 'kept' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    plugins: dict[str, int] = {}
    for value, n in conn.execute("SELECT plugins, count(*) FROM rows WHERE plugins != '' GROUP BY 1"):
        for p in value.strip(",").split(","):
            plugins[p] = plugins.get(p, 0) + n
    facets["plugin"] = sorted(plugins.items(), key=lambda kv: -kv[1])
    facets["score"] = conn.execute(
        "SELECT name, count(*), min(value), max(value) FROM scores GROUP BY 1 "
        "ORDER BY name != 'moss_loss', name"
    ).fetchall()
    facets["total"] = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    facets["loss_bins"] = _score_bins(conn, "moss_loss")
    conn.execute("INSERT INTO meta VALUES ('facets', ?)", (json.dumps(facets, ensure_ascii=False),))


def _score_bins(conn: sqlite3.Connection, name: str, bins: int = HIST_BINS) -> dict[str, Any] | None:
    """A score's histogram by row status: `{"lo", "hi", "counts": {status: [n per bin]}}`."""
    finite = "s.name = ? AND s.value BETWEEN -1e308 AND 1e308"
    lo, hi, n = conn.execute(
        f"SELECT min(value), max(value), count(*) FROM scores s WHERE {finite}", (name,)
    ).fetchone()
    if not n:
        return None
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = max(1, min(bins, n))
    step = (hi - lo) / bins
    counts: dict[str, list[int]] = {}
    for status, b, count in conn.execute(
        f"SELECT r.status, min(CAST((s.value - ?) / ? AS INTEGER), ?), count(*) FROM scores s "
        f"JOIN rows r USING (rid) WHERE {finite} GROUP BY 1, 2",
        (lo, step, bins - 1, name),
    ):
        counts.setdefault(status, [0] * bins)[b] += count
    return {"lo": lo, "hi": hi, "counts": counts}


# ------------------------------------------------------------------------------------------ queries


@dataclass(slots=True)
class Filters:
    """What a table page shows. Empty strings mean "any"; `score` names a score (`moss_loss`, a
    judge's) that `lo`/`hi` bound; `reviewed` is unreviewed, reviewed, accept, reject, edit or flagged."""

    status: str = ""
    stage: str = ""
    reason: str = ""
    category: str = ""
    language: str = ""
    kind: str = ""
    plugin: str = ""
    score: str = ""
    lo: float | None = None
    hi: float | None = None
    q: str = ""
    reviewed: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        f = cls()
        for fl in fields(cls):
            value = (query.get(fl.name) or "").strip()
            if fl.name in ("lo", "hi"):
                try:
                    setattr(f, fl.name, float(value) if value else None)
                except ValueError:
                    setattr(f, fl.name, None)
            else:
                setattr(f, fl.name, value)
        return f

    def to_query(self) -> dict[str, str]:
        """The non-empty filters, as URL query parameters."""
        out = {}
        for fl in fields(self):
            v = getattr(self, fl.name)
            if v not in ("", None):
                out[fl.name] = f"{v:g}" if isinstance(v, float) else str(v)
        return out

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for col in ("status", "stage", "reason", "category", "language", "kind"):
            v = getattr(self, col)
            if v:
                clauses.append(f"r.{col} = ?")
                params.append(v)
        if self.plugin:
            clauses.append("r.plugins LIKE ?")
            params.append(f"%,{self.plugin},%")
        if self.score and (self.lo is not None or self.hi is not None):
            sub = "SELECT rid FROM scores WHERE name = ?"
            params.append(self.score)
            if self.lo is not None:
                sub += " AND value >= ?"
                params.append(self.lo)
            if self.hi is not None:
                sub += " AND value <= ?"
                params.append(self.hi)
            clauses.append(f"r.rid IN ({sub})")
        match = fts_query(self.q) if self.q else None
        if self.q:
            clauses.append("r.rid IN (SELECT rowid FROM fts WHERE fts MATCH ?)" if match else "0")
            if match:
                params.append(match)
        reviewed = {
            "unreviewed": "r.id NOT IN (SELECT id FROM decisions)",
            "reviewed": "r.id IN (SELECT id FROM decisions)",
            "flagged": "r.id IN (SELECT d.id FROM decisions d WHERE d.hash != r.hash)",
        }
        if self.reviewed in reviewed:
            clauses.append(reviewed[self.reviewed])
        elif self.reviewed in ("accept", "reject", "edit"):
            clauses.append("r.id IN (SELECT id FROM decisions WHERE decision = ?)")
            params.append(self.reviewed)
        return (" AND ".join(clauses) or "1"), params


@dataclass(slots=True)
class IndexedRow:
    """One row of the index, with the source object read from its file."""

    rid: int
    id: str
    status: str
    stage: str
    reason: str | None
    evidence: Any
    category: str | None
    language: str | None
    kind: str
    plugins: list[str]
    turns: int | None
    loss: float | None
    hash: str
    preview: str
    source: str
    line: int
    obj: dict[str, Any] | None = None

    @property
    def cell(self) -> dict[str, str]:
        """The filters of this row's cell: same status, category, language and kind."""
        return {
            "status": self.status,
            "category": self.category or "",
            "language": self.language or "",
            "kind": self.kind,
        }


_ROW_COLS = (
    "r.rid, r.id, r.status, r.stage, r.reason, r.evidence, r.category, r.language, r.kind, r.plugins, "
    "r.turns, r.loss, r.hash, r.preview, s.path, r.line"
)


def _indexed(row: tuple[Any, ...]) -> IndexedRow:
    (
        rid,
        id_,
        status,
        stage,
        reason,
        evidence,
        category,
        language,
        kind,
        plugins,
        turns,
        loss,
        hash_,
        preview,
        source,
        line,
    ) = row
    return IndexedRow(
        rid,
        id_,
        status,
        stage,
        reason,
        json.loads(evidence) if evidence else None,
        category,
        language,
        kind,
        [p for p in plugins.split(",") if p],
        turns,
        loss,
        hash_,
        preview or "",
        source,
        line,
    )


class RunIndex:
    """A run directory's review index, opened for queries (one connection; use from one thread)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / INDEX_FILE
        self.decisions_path = self.run_dir / DECISIONS_FILE
        self.conn: sqlite3.Connection | None = None
        self.rebuilt = False

    def stale(self) -> bool:
        """True when there is no index, it is of another version, or a file it read has changed."""
        if not self.path.exists():
            return True
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return True
        if meta.get("version") != INDEX_VERSION:
            return True
        return json.loads(meta.get("signature", "[]")) != _signature(self.run_dir, _watched(self.run_dir))

    def open(self) -> RunIndex:
        """Open the index, (re)building it first when it is stale, and mirror the decisions."""
        self.refresh()
        return self

    def refresh(self) -> None:
        """Rebuild the index if a run file changed; reload decisions if `review.jsonl` changed."""
        if self.stale():
            self.close()
            build_index(self.run_dir, self.path)
            self.rebuilt = True
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
        self.sync_decisions()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> RunIndex:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            self.refresh()
        assert self.conn is not None
        return self.conn

    # -------------------------------------------------------------------- decisions

    def sync_decisions(self) -> None:
        """Mirror review.jsonl into the index when it changed since the last look."""
        sig = json.dumps(_signature(self.run_dir, [DECISIONS_FILE]))
        conn = self.db
        if conn.execute("SELECT value FROM meta WHERE name = 'decisions'").fetchone()[0] == sig:
            return
        decisions = read_decisions(self.decisions_path)
        with conn:
            conn.execute("DELETE FROM decisions")
            conn.executemany(
                "INSERT INTO decisions (id, hash, decision, reason, turn, who, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(d.id, d.hash, d.decision, d.reason, d.turn, d.who, d.when) for d in decisions],
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'decisions'", (sig,))

    def decisions_for(self, row_id: str) -> list[Decision]:
        """Decisions on this row id, oldest first (read from review.jsonl, which holds the texts)."""
        return [d for d in read_decisions(self.decisions_path) if d.id == row_id]

    def review_counts(self) -> dict[str, int]:
        """Rows with decisions, by their latest verdict, plus those flagged."""
        rows = self.db.execute("SELECT decision, count(DISTINCT id) FROM decisions GROUP BY 1").fetchall()
        out = dict(rows)
        out["flagged"] = self.db.execute(
            "SELECT count(DISTINCT d.id) FROM decisions d JOIN rows r ON r.id = d.id WHERE d.hash != r.hash"
        ).fetchone()[0]
        out["reviewed"] = self.db.execute("SELECT count(DISTINCT id) FROM decisions").fetchone()[0]
        return out

    # -------------------------------------------------------------------- rows

    def facets(self) -> dict[str, Any]:
        return json.loads(self.db.execute("SELECT value FROM meta WHERE name = 'facets'").fetchone()[0])

    def page(
        self, filters: Filters, *, offset: int = 0, limit: int = PAGE_SIZE
    ) -> tuple[list[IndexedRow], int]:
        """One page of rows matching `filters` (in file order) and how many match in all."""
        where, params = filters.where()
        total = self.db.execute(f"SELECT count(*) FROM rows r WHERE {where}", params).fetchone()[0]
        rows = self.db.execute(
            f"SELECT {_ROW_COLS} FROM rows r JOIN sources s USING (sid) WHERE {where} "
            "ORDER BY r.rid LIMIT ? OFFSET ?",
            [*params, limit, max(0, offset)],
        ).fetchall()
        return [_indexed(r) for r in rows], total

    def row(self, rid: int) -> IndexedRow | None:
        """One row, with its object read from the source file."""
        found = self.db.execute(
            f"SELECT {_ROW_COLS}, r.offset, r.length FROM rows r JOIN sources s USING (sid) WHERE r.rid = ?",
            (rid,),
        ).fetchone()
        if found is None:
            return None
        row = _indexed(found[:-2])
        with open(self.run_dir / row.source, "rb") as fh:
            fh.seek(found[-2])
            row.obj = json.loads(fh.read(found[-1]))
        return row

    def rids_of(self, row_id: str) -> list[int]:
        return [r for (r,) in self.db.execute("SELECT rid FROM rows WHERE id = ? ORDER BY rid", (row_id,))]

    def next_unreviewed(self, filters: Filters, after: IndexedRow | None = None) -> int | None:
        """The next row matching `filters` without a decision, in content-hash order (a fixed
        shuffle: the first N reviewed are a random sample of the cell), after `after`, wrapping."""
        where, params = filters.where()
        base = f"SELECT r.rid FROM rows r WHERE {where} AND r.id NOT IN (SELECT id FROM decisions)"
        if after is not None:
            found = self.db.execute(
                base + " AND (r.hash, r.rid) > (?, ?) ORDER BY r.hash, r.rid LIMIT 1",
                [*params, after.hash, after.rid],
            ).fetchone()
            if found:
                return found[0]
        found = self.db.execute(base + " ORDER BY r.hash, r.rid LIMIT 1", params).fetchone()
        return found[0] if found else None

    def cell_progress(self, filters: Filters) -> tuple[int, int]:
        """(rows with a decision, rows) among those matching `filters`."""
        where, params = filters.where()
        total, reviewed = self.db.execute(
            f"SELECT count(*), sum(r.id IN (SELECT id FROM decisions)) FROM rows r WHERE {where}", params
        ).fetchone()
        return reviewed or 0, total

    def calls(self, row_id: str) -> list[dict[str, Any]]:
        """The teacher calls behind a dialogue, oldest first."""
        cur = self.db.execute(
            f"SELECT {', '.join('c.' + c for c in CALL_COLUMNS)} FROM row_calls rc "
            "JOIN calls c ON c.key = rc.key WHERE rc.id = ? ORDER BY c.created",
            (row_id,),
        )
        return [dict(zip(CALL_COLUMNS, r, strict=True)) for r in cur]
