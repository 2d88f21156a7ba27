"""Part of the former datagen/generate/seeds.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from datagen.errors import SeedFormatError

# ---------------------------------------------------------------------------------------------------
# Field paths

_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


class _Missing:
    pass


MISSING = _Missing()


def parse_path(path: str) -> list[str | int | tuple[str, tuple[str, ...]]]:
    """Split `conversations[from=human|user].value` into steps: keys, list indexes, selectors."""
    steps: list[str | int | tuple[str, tuple[str, ...]]] = []
    pos = 0
    path = path.strip()
    while pos < len(path):
        if path[pos] == ".":
            pos += 1
            continue
        m = _SEGMENT.match(path, pos)
        if not m:
            raise ValueError(f"bad field path {path!r} at {pos}")
        key, sel = m.group(1), m.group(2)
        if key is not None:
            steps.append(int(key) if re.fullmatch(r"-?\d+", key) else key)
        elif "=" in sel:
            k, _, v = sel.partition("=")
            steps.append((k.strip(), tuple(x.strip() for x in v.split("|"))))
        elif re.fullmatch(r"\s*-?\d+\s*", sel):
            steps.append(int(sel))
        else:
            raise ValueError(f"bad selector [{sel}] in field path {path!r}")
        pos = m.end()
    if not steps:
        raise ValueError("empty field path")
    return steps


def get_field(row: Any, path: str | list) -> Any:
    """Follow a field path (see `parse_path`) through dicts and lists; `MISSING` when absent."""
    steps = parse_path(path) if isinstance(path, str) else path
    obj = row
    for step in steps:
        if isinstance(step, tuple):
            key, values = step
            if not isinstance(obj, list):
                return MISSING
            obj = next((x for x in obj if isinstance(x, Mapping) and str(x.get(key)) in values), MISSING)
        elif isinstance(step, int):
            if isinstance(obj, list) and -len(obj) <= step < len(obj):
                obj = obj[step]
            elif isinstance(obj, Mapping) and str(step) in obj:
                obj = obj[str(step)]
            else:
                return MISSING
        elif isinstance(obj, Mapping) and step in obj:
            obj = obj[step]
        else:
            return MISSING
        if obj is MISSING:
            return MISSING
    return obj


# ---------------------------------------------------------------------------------------------------
# Reading source files


@dataclass(slots=True)
class _BadRow:
    reason: str
    detail: str


#: Longest integer literal kept as an int (Python refuses to convert longer ones); a longer one
#: stays a Decimal, so a row with a huge id or count still imports.
_MAX_INT_DIGITS = 4000


def _json_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else Decimal(text)


def _loads(text: str) -> Any:
    """`json.loads`, with every failure a ValueError (JSONDecodeError for malformed JSON): huge
    integers load, nesting too deep for the parser is an error like any other."""
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield i, _BadRow("invalid_json", f"not UTF-8 at byte {exc.start}")
                continue
            try:
                yield i, _loads(text)
            except json.JSONDecodeError as exc:
                yield i, _BadRow("invalid_json", f"{exc.msg} at column {exc.colno}")
            except ValueError as exc:
                yield i, _BadRow("invalid_json", str(exc))


def _iter_json(path: Path, records_path: str | None) -> Iterator[tuple[int, Any]]:
    try:
        data = _loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SeedFormatError(f"not a JSON file (not UTF-8 at byte {exc.start})", path=str(path)) from None
    except ValueError as exc:
        raise SeedFormatError(f"not a JSON file ({exc})", path=str(path)) from None
    if records_path:
        data = get_field(data, records_path)
        if data is MISSING:
            raise SeedFormatError(f"no {records_path!r} in the file", path=str(path), field=records_path)
    if isinstance(data, Mapping):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) == 1:
            data = data[lists[0]]
        elif not lists:  # a single record
            data = [data]
        else:
            raise SeedFormatError(
                f"the JSON object holds several lists ({', '.join(lists)}): choose one with --records-path",
                path=str(path),
            )
    if not isinstance(data, list):
        raise SeedFormatError("a JSON seed file must hold a list of records", path=str(path))
    yield from enumerate(data, start=1)


#: Longest CSV field read, in characters (Python's csv default is 131,072, which real prompt or
#: context columns exceed). A field running past it is most likely an unclosed quote.
CSV_FIELD_LIMIT = 16 * 1024 * 1024


def _csv_error(path: Path, line: int, exc: csv.Error) -> SeedFormatError:
    msg = str(exc)
    if "unexpected end of data" in msg:
        msg = "unclosed quote: the quoted field opened in the row starting here runs to the end of the file"
    elif "field larger than field limit" in msg:
        msg = (
            f"a field longer than {CSV_FIELD_LIMIT} characters in the row starting here (an unclosed quote?)"
        )
    else:
        msg = f'malformed CSV in the row starting here ({msg}; a quote inside a quoted field is written "")'
    return SeedFormatError(msg, path=str(path), line=line)


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows as dicts keyed by the header (as `csv.DictReader`), numbered by the line they start on.
    Strict parsing: an unclosed quote is an error naming its line, never a silent merge of the rest
    of the file into one field."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    limit = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            header: list[str] | None = None
            while True:
                start = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise _csv_error(path, start, exc) from None
                except UnicodeDecodeError:
                    raise SeedFormatError(
                        "not UTF-8 text (at or after this line)", path=str(path), line=start
                    ) from None
                if not values:
                    continue
                if header is None:
                    header = values
                    continue
                row: dict[Any, Any] = dict(zip(header, values, strict=False))
                for name in header[len(values) :]:
                    row[name] = None  # a short row: DictReader's restval
                yield start, row
    finally:
        csv.field_size_limit(limit)


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    except (pa.ArrowException, OSError) as exc:
        where = f" after row {n}" if n else ""
        reason = " ".join(str(exc).split())  # Arrow's messages may span lines
        raise SeedFormatError(f"not a readable Parquet file{where} ({reason})", path=str(path)) from None


def _iter_datasets_folder(path: Path, split: str | None) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        from datagen.errors import MissingDependencyError

        raise MissingDependencyError("datasets", "core") from None
    import pyarrow as pa

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())
        raise SeedFormatError(f"not a readable `datasets` folder ({reason})", path=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise SeedFormatError(
                    f"the dataset has splits {', '.join(ds)}: choose one with --split", path=str(path)
                )
            split = next(iter(ds))
        if split not in ds:
            raise SeedFormatError(f"no split {split!r} (has {', '.join(ds)})", path=str(path))
        ds = ds[split]
    yield from enumerate(ds, start=1)


def iter_source_rows(
    path: str | os.PathLike, *, records_path: str | None = None, split: str | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield (row number, record) from a JSONL/JSON/CSV/TSV/Parquet file or a `datasets` folder.

    The row number is the line for JSONL and CSV, the 1-based record index otherwise. Unreadable
    JSONL lines come through as rejected rows rather than errors.
    """
    p = Path(path)
    if p.is_dir():
        if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            raise SeedFormatError("a folder must be a `datasets` save_to_disk folder", path=str(p))
        return _iter_datasets_folder(p, split)
    if not p.is_file():
        raise SeedFormatError("source not found", path=str(p))
    suffix = "".join(p.suffixes[-1:]).lower()
    if suffix in (".jsonl", ".ndjson"):
        return _iter_jsonl(p)
    if suffix == ".json":
        # some "json" files are really JSON lines
        with open(p, "rb") as fh:
            head = fh.read(1 << 16).lstrip()
        if head[:1] == b"{" and b"\n{" in head and not head.rstrip().endswith(b"]"):
            try:
                _loads(p.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError):
                return _iter_jsonl(p)
        return _iter_json(p, records_path)
    if suffix in (".csv", ".tsv"):
        return _iter_csv(p)
    if suffix == ".parquet":
        return _iter_parquet(p)
    raise SeedFormatError(
        f"unknown source format {suffix or '(no extension)'!r}: use .jsonl, .json, .csv, "
        ".tsv, .parquet or a datasets folder",
        path=str(p),
    )
