"""Files on disk: JSONL (the hand-off between stages) and atomic writes.

Readers name the file and line of any bad row. Writers are either atomic (`atomic_write`: a temp
file in the same folder, fsynced, then `os.replace`, so a killed process never leaves half a file)
or append-only with a flush per row (for stage outputs that grow as work finishes and must survive
a kill).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import jsonlines

from datagen.errors import InputError
from datagen.record import Conversation
from datagen.teacher.redact import redact


def json_error_reason(exc: ValueError | RecursionError) -> str:
    """Why `json.loads` refused a text, in a few words: the decoder's message and column, a
    number too long to read (Python's limit on integer digits), or nesting too deep."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
    msg = str(exc).split("; use sys.set_int_max_str_digits()")[0]
    if "integer string conversion" in msg:
        return f"invalid JSON: a number too long to read ({msg})"
    return f"invalid JSON ({msg})"


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, object) for each non-blank line, streaming; raise InputError naming
    file:line on a line that is not valid JSON (including numbers too long to read and nesting too
    deep). A torn last line (no trailing newline, invalid JSON, as left by a killed writer) is
    skipped rather than fatal: this is the reader stages resume from."""
    path = Path(path)
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as exc:
                if not raw.endswith(b"\n"):
                    return  # only the last line can lack its newline: the torn tail of an interrupted append
                raise InputError(json_error_reason(exc), path=str(path), line=i) from None
            yield i, obj


def iter_conversations(path: str | os.PathLike) -> Iterator[Conversation]:
    """Stream datagen's own JSONL file (one `Conversation.to_dict()` per line). For other formats
    and folders, see `datagen.formats.reader.read_conversations`."""
    for line, obj in iter_json_lines(path):
        try:
            yield Conversation.from_dict(obj)
        except KeyError as exc:
            raise InputError(
                "missing required field", path=str(path), line=line, field=str(exc.args[0])
            ) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(str(exc), path=str(path), line=line) from None


#: The old name, kept while callers move to `iter_conversations`.


def dumps(obj: Any) -> str:
    """One JSON line: UTF-8 kept readable, no spaces wasted."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of a new file as `open` would create it. `mkstemp` makes its file private (0600);
#: the file it becomes is an ordinary output, so it gets these instead. Read once, at import: the
#: umask can only be read by setting it, which would race with other threads creating files.
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty file beside `path`, for a writer that needs a name rather than a handle (SQLite).
    When the block ends without error it is fsynced and moved over `path`, else deleted: a reader
    sees the old file or the whole new one, never a part. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, _FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """`atomic_path` with the file open: text as UTF-8 with `mode="w"`, bytes with `"wb"`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
        yield fh


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows (dicts or objects with `to_dict`) to path atomically; return the count."""
    n = 0
    with atomic_write(path) as fh:
        writer = jsonlines.Writer(fh, compact=True, dumps=dumps)
        for row in rows:
            writer.write(row.to_dict() if hasattr(row, "to_dict") else row)
            n += 1
    return n


class AppendWriter:
    """Append rows to a JSONL file, one flushed line each, so a kill loses at most a torn last line
    (which readers skip). Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.count = 0

    def _repair_tail(self) -> None:
        # A process killed mid-write may have left a last line without its newline. If that line is
        # a whole JSON row (the row reached the disk, only the newline did not), readers already
        # count it as done, so keep it and add the newline; otherwise cut the torn fragment off.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            pos = size
            chunk = 1 << 16
            start_of_last = 0
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                buf = fh.read(pos - start)
                idx = buf.rfind(b"\n")
                if idx >= 0:
                    start_of_last = start + idx + 1
                    break
                pos = start
            fh.seek(start_of_last)
            tail = fh.read()
            try:
                json.loads(tail.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
                fh.truncate(start_of_last)
            else:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")

    def write(self, row: Any) -> None:
        # One write of the row and its newline together (jsonlines writes them apart), so a kill
        # leaves either a whole line or a fragment that `_repair_tail` recognises.
        self._fh.write(dumps(row.to_dict() if hasattr(row, "to_dict") else row) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> AppendWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def append_writer(path: str | os.PathLike) -> Iterator[AppendWriter]:
    w = AppendWriter(path)
    try:
        yield w
    finally:
        w.close()


def write_json_atomic(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    newline: bool = True,
) -> None:
    """Write `data` as one JSON document through `atomic_write`, so a reader never sees half of it.
    The flags are `json.dumps`'s (each caller keeps the bytes it always wrote); `newline` ends the
    file with one. The text is redacted (`datagen.teacher.redact`): error messages in it may quote
    a server that echoed the API key."""
    text = redact(json.dumps(data, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys))
    with atomic_write(path) as fh:
        fh.write(text + "\n" if newline else text)
