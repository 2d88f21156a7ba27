"""Read conversations from files and folders in any format datagen knows, streaming.

    for conv in read_conversations(["data/", "more.jsonl"]):
        ...

Inputs: files or folders (searched recursively for `*.json`, `*.jsonl`, `*.ndjson`, their `.gz`
versions and `.zip` archives of them; hidden files are skipped). A `.jsonl`/`.ndjson` file is one
JSON value per line; any other file is one JSON document (an object, or an array of objects
streamed element by element) unless its first line is a complete JSON value, in which case it is
read as JSONL. A last line without its newline that does not parse is the torn tail of a killed
writer: a problem at its file and line (`torn_tail="report"`, the default, so that `validate` and
`convert` say so), or skipped with a warning on the `datagen.formats` logger (`torn_tail="skip"`,
for readers of files a resumable stage is still appending to). Each record's format is detected on
its own (`detect_format`): datagen's JSONL (`id` + `turns`), MOSS SFT (`chat`), OpenAI messages
(`messages`), ShareGPT (`conversations`).

`iter_records` is the lower level: it yields `(Location, value)` for every JSON record and
`(Location, FormatError)` for every problem (bad encoding, invalid JSON, numbers too long to
read, nesting too deep, empty file, binary file) without stopping, holding at most one line (or one
array element) in memory.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from datagen.errors import FormatError
from datagen.io import json_error_reason
from datagen.record import Conversation

log = logging.getLogger("datagen.formats")

FORMATS = ("datagen", "moss", "messages", "sharegpt")
TornTail = Literal["report", "skip"]
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_DATA_SUFFIXES = (".json", *_JSONL_SUFFIXES)
#: Lines longer than this are reported and skipped rather than parsed (bytes).
MAX_LINE_BYTES = 512 * 1024 * 1024
_GIVE_UP_AFTER = 20  # unreadable lines in a row, with nothing readable before: stop reading that file
_CHUNK = 1 << 20


@dataclass(slots=True, frozen=True)
class Location:
    """Where a record (or problem) is: `path`, 1-based `line` (None for a whole one-object file),
    and `whole_file` for problems that concern the file rather than one record."""

    path: str
    line: int | None = None
    whole_file: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


# -- files ---------------------------------------------------------------------------------------


def _is_data_file(name: str) -> bool:
    n = name.lower()
    if n.endswith(".gz"):
        n = n[:-3]
    return n.endswith(_DATA_SUFFIXES) or n.endswith(".zip")


def iter_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted, hidden entries skipped) into data files.
    A path named explicitly is used whatever its extension. Raises FormatError for a path that
    does not exist."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and _is_data_file(name):
                        yield Path(root) / name
        elif p.exists():
            yield p
        else:
            raise FormatError("no such file or folder", path=str(p))


def _open_members(path: Path) -> Iterator[tuple[str, str, IO[bytes]]]:
    """(label, name used to pick the parser, binary stream) for a file, or each data member of
    a zip archive."""
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                base = info.filename.rsplit("/", 1)[-1]
                if info.is_dir() or base.startswith(".") or not _is_data_file(base) or base.endswith(".zip"):
                    continue
                with zf.open(info) as fh:
                    inner: IO[bytes] = gzip.GzipFile(fileobj=fh) if base.lower().endswith(".gz") else fh
                    yield f"{path}/{info.filename}", base.lower(), inner
        return
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            yield str(path), name[:-3], fh
        return
    with open(path, "rb") as fh:
        yield str(path), name, fh


# -- records -------------------------------------------------------------------------------------


def iter_records(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    torn_tail: TornTail = "report",
) -> Iterator[tuple[Location, Any]]:
    """Yield `(Location, value)` for every JSON record in `paths`, and `(Location, FormatError)`
    for every problem (a missing path included), never stopping at one. A JSON array at the top
    of a document or on a JSONL line yields its elements; a JSONL line holding a bare list of chat
    messages (`[{"role": ...}, ...]`) yields `{"messages": [...]}`. `torn_tail`: see the module
    docstring."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for top in paths:
        try:
            files = list(iter_files(top)) if Path(top).is_dir() else [Path(top)]
            if not Path(top).exists():
                raise FormatError("no such file or folder", path=str(top))
        except FormatError as exc:
            yield Location(str(top), whole_file=True), exc
            continue
        for path in files:
            try:
                for label, name, fh in _open_members(path):
                    yield from _iter_stream(label, name, fh, max_line_bytes, torn_tail)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                yield Location(str(path), whole_file=True), FormatError(f"cannot read: {exc}", path=str(path))


def _iter_stream(
    label: str, name: str, fh: IO[bytes], max_line_bytes: int, torn_tail: TornTail
) -> Iterator[tuple[Location, Any]]:
    head = fh.read(8192) if not hasattr(fh, "peek") else fh.peek(8192)[:8192]
    if not hasattr(fh, "peek"):
        fh = _Prefixed(head, fh)
    if not head:
        yield Location(label, whole_file=True), FormatError("empty file", path=label)
        return
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        yield Location(label, whole_file=True), FormatError("UTF-16 file; convert it to UTF-8", path=label)
        return
    if b"\x00" in head:
        yield (
            Location(label, whole_file=True),
            FormatError("binary file (NUL bytes); expected UTF-8 JSON", path=label),
        )
        return
    if name.endswith(_JSONL_SUFFIXES) or _first_line_is_json(head):
        yield from _iter_jsonl(label, fh, max_line_bytes, torn_tail)
    else:
        yield from _iter_document(label, fh)


def _first_line_is_json(head: bytes) -> bool:
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    nl = text.find(b"\n")
    if nl < 0:
        return False  # a one-line file is the same either way; read it as a document
    try:
        json.loads(text[:nl])
    except (ValueError, RecursionError):
        return False
    return True


class _Prefixed(io.RawIOBase):
    """A binary stream that replays `head` before the rest of `fh` (for streams without peek)."""

    def __init__(self, head: bytes, fh: IO[bytes]):
        self._head = head
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._fh.read(len(b))
        b[: len(data)] = data
        return len(data)


def _iter_jsonl(
    label: str, fh: IO[bytes], max_line_bytes: int, torn_tail: TornTail
) -> Iterator[tuple[Location, Any]]:
    if not isinstance(fh, io.BufferedIOBase | gzip.GzipFile):
        fh = io.BufferedReader(fh)  # type: ignore[arg-type]
    good = bad = 0
    lineno = 0
    loads = json.loads
    while True:
        raw = fh.readline(max_line_bytes + 1)
        if not raw:
            break
        lineno += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while True:  # skip the rest of the line without holding it
                rest = fh.readline(_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            bad += 1
            yield (
                Location(label, lineno),
                FormatError(f"line longer than {max_line_bytes} bytes; skipped", path=label, line=lineno),
            )
            continue
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]  # before the torn-tail check, which would not parse a row behind a BOM
        if not raw.endswith(b"\n") and raw.strip():
            # The rule of every datagen JSONL reader (datagen.io): a last line without its newline
            # is a record when it parses (many tools omit the final newline; datagen's AppendWriter
            # keeps such a row), and the torn tail of a killed writer when it does not.
            try:
                loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as exc:
                if torn_tail == "skip":
                    log.warning(
                        "%s:%d: the last line is cut off (left by a killed writer?); skipped", label, lineno
                    )
                else:
                    yield (
                        Location(label, lineno),
                        FormatError(
                            "the last line is cut off: no newline at its end and "
                            f"{json_error_reason(exc).replace('invalid JSON', 'not valid JSON', 1)} "
                            "(left by a killed writer?)",
                            path=label,
                            line=lineno,
                        ),
                    )
                break
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad += 1
            yield (
                Location(label, lineno),
                FormatError(f"not UTF-8 ({exc.reason} at byte {exc.start + 1})", path=label, line=lineno),
            )
        else:
            if not text.strip():
                continue
            try:
                value = loads(text)
            except RecursionError:
                bad += 1
                yield Location(label, lineno), FormatError("JSON nested too deeply", path=label, line=lineno)
            except ValueError as exc:
                bad += 1
                if isinstance(exc, json.JSONDecodeError):
                    body = text.rstrip("\r\n")
                    cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(body)
                    what = "truncated JSON" if cut else "invalid JSON"
                    reason = f"{what}: {exc.msg} (column {exc.pos + 1})"
                else:
                    reason = json_error_reason(exc)
                yield Location(label, lineno), FormatError(reason, path=label, line=lineno)
            else:
                good += 1
                if isinstance(value, list):
                    if value and all(isinstance(m, dict) and "role" in m for m in value):
                        yield Location(label, lineno), {"messages": value}  # a bare list of chat messages
                    else:
                        for item in value:
                            yield Location(label, lineno), item
                else:
                    yield Location(label, lineno), value
                continue
        if not good and bad >= _GIVE_UP_AFTER:
            yield (
                Location(label, lineno, whole_file=True),
                FormatError(
                    f"gave up after {bad} unreadable lines and none readable (not a JSONL file?)",
                    path=label,
                    line=lineno,
                ),
            )
            return


def _iter_document(label: str, fh: IO[bytes]) -> Iterator[tuple[Location, Any]]:
    """One JSON document, streamed: a top-level array yields its elements (with the line each
    starts on); a single value yields it with no line; several concatenated values (JSONL whose
    first line did not fit the sniffing window) yield each with its line."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    raw_decode = json.JSONDecoder().raw_decode
    buf = ""
    pos = 0
    line_base = 1  # line number of buf[0]
    consumed = 0  # bytes fed to the decoder
    eof = False

    def fill() -> bool:
        # Reads at least as much as is buffered, so re-parsing a long value after each read
        # costs O(n) in total.
        nonlocal buf, pos, line_base, eof, consumed
        if eof:
            return False
        if pos > _CHUNK:  # drop what was consumed
            line_base += buf.count("\n", 0, pos)
            buf = buf[pos:]
            pos = 0
        chunk = fh.read(max(_CHUNK, len(buf) - pos))
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _Undecodable(consumed + exc.start + 1, exc.reason) from None
        consumed += len(chunk)
        if not chunk:
            eof = True
        buf += text
        return bool(chunk)

    def skip_ws() -> bool:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return True
            if not fill():
                return False

    def line_at(p: int) -> int:
        return line_base + buf.count("\n", 0, p)

    def decode() -> Any:
        nonlocal pos
        while True:
            try:
                value, end = raw_decode(buf, pos)
            except RecursionError:
                raise _BadJSON("JSON nested too deeply", line_at(pos)) from None
            except json.JSONDecodeError as exc:
                near_end = exc.msg.startswith("Unterminated string") or len(buf) - exc.pos <= 8
                if near_end and fill():
                    continue
                what = "truncated JSON" if eof and near_end else "invalid JSON"
                raise _BadJSON(f"{what}: {exc.msg} (column {_col(buf, exc.pos)})", line_at(exc.pos)) from None
            except ValueError as exc:  # e.g. a number with more digits than Python converts
                raise _BadJSON(json_error_reason(exc), line_at(pos)) from None
            if end == len(buf) and fill():  # a number may go on in the next chunk
                continue
            pos = end
            return value

    def problem(msg: str, line: int | None) -> tuple[Location, FormatError]:
        return Location(label, line, whole_file=True), FormatError(msg, path=label, line=line)

    try:
        if not skip_ws():
            yield problem("empty file (only whitespace)", None)
            return
        if buf[pos] != "[":
            first_line = line_at(pos)
            value = decode()
            if not skip_ws():
                yield Location(label, None), value
                return
            yield Location(label, first_line), value
            while True:  # concatenated values: JSON lines
                line = line_at(pos)
                if buf[pos] not in "{[":
                    yield problem(
                        f"invalid JSON: extra data after the JSON value (column {_col(buf, pos)})", line
                    )
                    return
                yield Location(label, line), decode()
                if not skip_ws():
                    return
        pos += 1
        first = True
        while True:
            if not skip_ws():
                yield problem("truncated JSON: the array is not closed", line_at(len(buf)))
                return
            if buf[pos] == "]":
                pos += 1
                if skip_ws():
                    yield problem("extra data after the JSON array", line_at(pos))
                return
            if not first:
                if buf[pos] != ",":
                    yield problem(
                        f"invalid JSON: expected ',' or ']' (column {_col(buf, pos)})", line_at(pos)
                    )
                    return
                pos += 1
                if not skip_ws():
                    yield problem("truncated JSON: the array is not closed", line_at(len(buf)))
                    return
            first = False
            line = line_at(pos)
            yield Location(label, line), decode()
    except _BadJSON as exc:
        yield problem(exc.message, exc.line)
    except _Undecodable as exc:
        yield problem(f"not UTF-8 ({exc.reason} at byte {exc.offset})", None)


class _BadJSON(Exception):
    def __init__(self, message: str, line: int):
        self.message = message
        self.line = line


class _Undecodable(Exception):
    def __init__(self, offset: int, reason: str):
        self.offset = offset
        self.reason = reason


def _col(buf: str, pos: int) -> int:
    return pos - buf.rfind("\n", 0, pos)


# -- conversations -------------------------------------------------------------------------------


def detect_format(record: Any) -> str | None:
    """`datagen`, `moss`, `messages` or `sharegpt` from a record's keys; None when unknown."""
    if not isinstance(record, dict):
        return None
    if "turns" in record and "id" in record:
        return "datagen"
    if "chat" in record or "meta_instruction" in record:
        return "moss"
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    return None


def to_conversation(
    record: Any, *, path: str | None = None, line: int | None = None, format: str | None = None
) -> Conversation:
    """Convert one record (format detected unless given) into a Conversation. Raises FormatError
    naming path, line and field."""
    try:
        return _to_conversation(record, path=path, line=line, format=format)
    except RecursionError:
        raise FormatError("nested too deeply", path=path, line=line) from None


def _to_conversation(record: Any, *, path: str | None, line: int | None, format: str | None) -> Conversation:
    fmt = format or detect_format(record)
    if fmt is None:
        if not isinstance(record, dict):
            raise FormatError(f"expected a JSON object, got {_type_name(record)}", path=path, line=line)
        keys = ", ".join(list(record)[:6]) or "none"
        raise FormatError(
            f"unknown record format (keys: {keys}); expected datagen (id, turns), MOSS SFT "
            "(chat), OpenAI messages (messages) or ShareGPT (conversations)",
            path=path,
            line=line,
        )
    if fmt == "moss":
        from datagen.formats.moss import from_sft

        # a one-record file is named after its conversation; upstream's ids repeat across folders
        file_id = Path(path).stem if path is not None and line is None else None
        return from_sft(record, path=path, line=line, id=file_id)
    if fmt == "messages":
        from datagen.formats.messages import from_messages

        return from_messages(record, path=path, line=line)
    if fmt == "sharegpt":
        from datagen.formats.sharegpt import from_sharegpt

        return from_sharegpt(record, path=path, line=line)
    if fmt == "datagen":
        return datagen_from_dict(record, path=path, line=line)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def datagen_from_dict(record: Any, *, path: str | None = None, line: int | None = None) -> Conversation:
    """`Conversation.from_dict` with errors turned into FormatError naming the field."""
    try:
        return Conversation.from_dict(record)
    except KeyError as exc:
        raise FormatError("missing", path=path, line=line, field=str(exc.args[0])) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise FormatError(str(exc), path=path, line=line) from None


OnError = Literal["raise", "skip", "warn"] | Callable[[FormatError], None]


def read_conversations(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    format: str | None = None,
    on_error: OnError = "raise",
    torn_tail: TornTail = "report",
) -> Iterator[Conversation]:
    """Stream Conversations from files and folders in any known format (detected per record).

    `on_error`: `raise` (default) raises FormatError naming file, line and field at the first bad
    record; `skip` drops bad records silently; `warn` logs each one (logger `datagen.formats`) and
    goes on; a callable receives each FormatError and reading goes on. A torn last line is a bad
    record unless `torn_tail="skip"` (see the module docstring). MOSS records with segments outside
    the grammar are not bad records: they are read (see `datagen.formats.moss.from_sft`).
    """
    for loc, value in iter_records(paths, torn_tail=torn_tail):
        if isinstance(value, FormatError):
            err = value
        else:
            try:
                yield to_conversation(value, path=loc.path, line=loc.line, format=format)
                continue
            except FormatError as exc:
                err = exc
        if on_error == "raise":
            raise err
        if on_error == "warn":
            log.warning("skipped: %s", err)
        elif callable(on_error):
            on_error(err)


def _type_name(v: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(v), type(v).__name__)
