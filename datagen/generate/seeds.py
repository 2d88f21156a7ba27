"""Seed prompts: the `Seed` record, its JSONL reader/writer, importing from other datasets, stats,
deduplication and balanced sampling.

A seed is one user prompt that starts a dialogue (and that Self-Instruct expansion imitates):

    {"id": "s-en-code-0007", "text": "Write a Python function that ...", "language": "en",
     "category": "code", "plugins": [], "source": "starter", "source_id": null, "extra": {}}

Categories follow MOSS's data (see `CATEGORIES`); `plugins` names the plugins the prompt needs
(`search`, `calculator`, `solver`, `text2image`), with category `tool`.

Importing (`import_seeds`, `datagen seeds import`) reads JSONL, JSON, CSV/TSV, Parquet or a local
`datasets` folder (`save_to_disk` output) and maps fields by dotted paths with selectors:

    instruction                        a top-level field
    instances.0.input                  list index (also `instances[0].input`)
    conversations[from=human|user].value   the first list element whose `from` is human or user

The prompt is `--field` plus each non-empty `--append-field`, joined by a blank line (Self-Instruct:
`instruction` + `instances.0.input`; Alpaca: `instruction` + `input`). Presets bundle the mappings
of known shapes (`PRESETS`). Text is normalised (`normalize_prompt`), language is detected when
not mapped, and every bad row is rejected with a reason instead of stopping the import.

Language: a constant (`language=`, `--lang`) wins, then a mapped field, then
`detect_seed_language`. A prompt too short to tell (`Hola amigo`) is kept with language null
(counted as `lang_unknown`; the pipeline's `seeds.languages` then leaves it out) unless `languages`
selects some, where it is rejected as `language_unknown` rather than guessed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from datagen.errors import InputError, SeedFormatError
from datagen.jsonl import write_jsonl_atomic
from datagen.record import PLUGIN_COMMANDS

#: Seed categories (MOSS's), with what a prompt of each looks like.
CATEGORIES: dict[str, str] = {
    "brainstorming": "ideas, advice and recommendations (MOSS: brainstorming, advice)",
    "code": "writing, explaining, reviewing or debugging code",
    "complex_instruction": "tasks with several constraints or steps, output formats, extraction",
    "role_play": "the assistant plays a character or profession (MOSS: rp, awesome_en/zh)",
    "writing": "essays, stories, emails, poems, summaries, rewriting",
    "harmless": "adversarial requests that deserve a careful refusal or redirection",
    "honest": "questions about the assistant itself or beyond its knowledge (real-time data, memories)",
    "continue": "continue a text or an earlier answer",
    "switching": "switch language mid-conversation, translate, answer in another language",
    "tool": "needs a plugin: `plugins` says which (search, calculator, solver, text2image)",
}
LANGUAGES = ("zh", "en")
PLUGINS = tuple(PLUGIN_COMMANDS)

#: Other names for categories (MOSS file/category names, common spellings) -> datagen's.
CATEGORY_ALIASES: dict[str, str] = {
    "advice": "brainstorming",
    "brainstorm": "brainstorming",
    "helpful_brainstorming": "brainstorming",
    "helpful_code": "code",
    "coding": "code",
    "complex": "complex_instruction",
    "complex_instructions": "complex_instruction",
    "helpful_complex_instruction": "complex_instruction",
    "rp": "role_play",
    "roleplay": "role_play",
    "role_playing": "role_play",
    "helpful_role_playing": "role_play",
    "awesome_en": "role_play",
    "awesome_zh": "role_play",
    "helpful_writing": "writing",
    "harmless_en": "harmless",
    "harmless_zh": "harmless",
    "honest_en": "honest",
    "honest_zh": "honest",
    "continuation": "continue",
    "continue_switching": "switching",
    "language_switching": "switching",
    "plugin": "tool",
    "tools": "tool",
}
LANGUAGE_ALIASES: dict[str, str] = {
    "chinese": "zh", "中文": "zh", "zh-cn": "zh", "zh-hans": "zh", "zh-hant": "zh", "zh-tw": "zh",
    "zh-hk": "zh", "zho": "zh", "chi": "zh", "cn": "zh",
    "english": "en", "英文": "en", "en-us": "en", "en-gb": "en", "eng": "en",
}


# ---------------------------------------------------------------------------------------------------
# The record


@dataclass(slots=True)
class Seed:
    """One seed prompt. `source`/`source_id` say where an imported prompt came from; `extra` keeps
    any other fields of the row (expanded prompts keep `parents` and `lineage` there)."""

    id: str
    text: str
    language: str | None = None
    category: str | None = None
    plugins: list[str] = field(default_factory=list)
    source: str | None = None
    source_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text, "language": self.language,
                             "category": self.category, "plugins": list(self.plugins), "source": self.source,
                             "source_id": self.source_id}
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Seed:
        """Build from `to_dict` output (unknown top-level keys go to `extra`). Raises KeyError on a
        missing id/text, TypeError/ValueError on a wrong type; `read_seeds` adds file and line."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a seed must be a JSON object, got {type(d).__name__}")
        for key in ("id", "text"):
            if key not in d or d[key] is None:
                raise KeyError(key)
        sid = d["id"]
        if isinstance(sid, bool) or not isinstance(sid, str | int) or str(sid).strip() == "":
            raise ValueError("id: must be a non-empty string")
        text = d["text"]
        if not isinstance(text, str):
            raise TypeError(f"text: must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text: is empty")
        for key in ("language", "category", "source", "source_id"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise TypeError(f"{key}: must be a string or null, got {type(d[key]).__name__}")
        plugins = d.get("plugins") or []
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise TypeError("plugins: must be a list of plugin names")
        unknown = [p for p in plugins if p not in PLUGIN_COMMANDS]
        if unknown:
            raise ValueError(f"plugins: unknown plugin {unknown[0]!r} (known: {', '.join(PLUGINS)})")
        extra = d.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise TypeError("extra: must be an object")
        known = {"id", "text", "language", "category", "plugins", "source", "source_id", "extra"}
        extra = {**{k: v for k, v in d.items() if k not in known}, **extra}
        return cls(id=str(sid), text=text, language=d.get("language"), category=d.get("category"),
                   plugins=list(plugins), source=d.get("source"), source_id=d.get("source_id"), extra=extra)

    @property
    def parents(self) -> list[str]:
        """Ids of the prompts an expanded prompt was made from (kept in `extra`)."""
        return list(self.extra.get("parents") or [])

    @property
    def lineage(self) -> dict[str, Any]:
        """An expanded prompt's lineage (teacher model, template, params), kept in `extra`."""
        return dict(self.extra.get("lineage") or {})

    @property
    def cell(self) -> tuple[str, str, str]:
        """(category, language, plugins) — the group balanced sampling and expansion work on."""
        return (self.category or "-", self.language or "-", "+".join(sorted(self.plugins)) or "-")


def _field_of(message: str) -> str | None:
    head = message.split(":", 1)[0]
    return head if ":" in message and re.fullmatch(r"[a-z_]+", head) else None


def read_seeds(path: str | os.PathLike) -> list[Seed]:
    """Read a seed JSONL file (datagen's own format; expanded prompt files too).

    Raises SeedFormatError naming the file, line and field of the first bad row, and of a
    duplicate id (with the line that used it first).
    """
    from datagen.jsonl import iter_json_lines

    path = Path(path)
    if not path.is_file():
        raise SeedFormatError("seed file not found (create one with `datagen seeds import`)", path=str(path))
    seeds: list[Seed] = []
    first_line: dict[str, int] = {}
    try:
        rows = list(iter_json_lines(path))
    except InputError as exc:
        raise SeedFormatError(exc.reason, path=exc.path, line=exc.line) from None
    for line, obj in rows:
        try:
            seed = Seed.from_dict(obj)
        except KeyError as exc:
            raise SeedFormatError("missing required field", path=str(path), line=line,
                                  field=str(exc.args[0])) from None
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            fld = _field_of(msg)
            raise SeedFormatError(msg.split(": ", 1)[1] if fld else msg, path=str(path), line=line,
                                  field=fld) from None
        if seed.id in first_line:
            raise SeedFormatError(f"duplicate id {seed.id!r} (first used on line {first_line[seed.id]})",
                                  path=str(path), line=line, field="id")
        first_line[seed.id] = line
        seeds.append(seed)
    return seeds


def write_seeds(path: str | os.PathLike, seeds: Iterable[Seed]) -> int:
    """Write seeds as JSONL, atomically; return the count."""
    return write_jsonl_atomic(path, seeds)


# ---------------------------------------------------------------------------------------------------
# Normalisation and language

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_FENCE = re.compile(r"^\s*(```|~~~)")


def normalize_prompt(text: str) -> str:
    """Clean one prompt without changing what it says.

    Unicode NFC (not NFKC: that would turn Chinese full-width punctuation into ASCII); zero-width
    characters and control characters other than newline and tab removed; CRLF -> LF; other
    Unicode spaces -> a plain space. Outside code fences, runs of spaces/tabs inside a line become
    one space; leading indentation and everything inside ``` fences is kept (only trailing spaces
    go). Three or more newlines become two, and the text is stripped.
    """
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(
        ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else ""
        for ch in text
    )
    text = "".join(" " if ch != "\t" and ch != "\n" and unicodedata.category(ch) == "Zs" else ch for ch in text)
    out: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line.rstrip())
            continue
        if in_fence:
            out.append(line.rstrip())
            continue
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        out.append(indent + re.sub(r"[ \t]+", " ", line.strip(" \t")))
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def _cjk_script_language(text: str) -> str | None:
    """Fallback for prompts too short for the detector, by script alone and only for CJK: kana ->
    ja, Hangul -> ko, Han alone -> zh (when CJK characters, weighted 3, outweigh Latin letters). A
    short Latin text gets no guess: `Hola amigo` could be any of a dozen languages."""
    kana, hangul, han = len(_KANA.findall(text)), len(_HANGUL.findall(text)), len(_HAN.findall(text))
    cjk = kana + hangul + han
    other_letters = sum(ch.isalpha() for ch in text) - cjk
    if not cjk or 3 * cjk < other_letters:
        return None
    if kana:
        return "ja"
    if hangul:
        return "ko"
    return "zh"


def detect_seed_language(text: str) -> str | None:
    """A prompt's language: `datagen.filters.language.detect_language` (the one detector every
    stage uses), falling back to the script for very short CJK prompts (`你好` -> zh, `안녕` -> ko).
    None when it cannot tell (a short Latin text such as `Hola amigo`, numbers, code)."""
    from datagen.filters.language import detect_language

    lang = detect_language(text)
    if lang is None:
        lang = _cjk_script_language(text)
    return lang


def normalize_language(value: str) -> str:
    """`zh-CN`, `Chinese`, `中文` -> `zh`; `en_US`, `English` -> `en`; other codes lower-cased."""
    v = value.strip().lower().replace("_", "-")
    return LANGUAGE_ALIASES.get(v, v.split("-")[0] if re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", v) else v)


_CATEGORY_PREFIXES = ("helpful_",)
_CATEGORY_SUFFIXES = ("_prompts", "_conversations", "_conversation", "_en", "_zh")


def normalize_category(value: str | None) -> str:
    """Fold a category spelling to datagen's name (`CATEGORIES`): the one normaliser of seeds,
    config lookups, guidance files and the pipeline's `seeds.categories` filter (normalise both
    sides before comparing).

    Lower-case, runs of spaces/hyphens -> `_`, aliases resolved, then MOSS's file-name decorations
    dropped: `Role Playing` / `rp` / `helpful_role_playing` -> `role_play`, `advice` ->
    `brainstorming`, `writing_zh` -> `writing`, `helpful_code_prompts` -> `code`,
    `honest_conversations` -> `honest`. No category (None or blank) is `default`, the name config
    tables use for "any other category"."""
    if value is None or not value.strip():
        return "default"
    v = re.sub(r"[\s\-]+", "_", value.strip().lower())
    if v in CATEGORY_ALIASES:
        return CATEGORY_ALIASES[v]
    for prefix in _CATEGORY_PREFIXES:
        if v.startswith(prefix) and len(v) > len(prefix):
            v = v[len(prefix):]
    for suffix in _CATEGORY_SUFFIXES:
        if v.endswith(suffix) and len(v) > len(suffix):
            v = v[: -len(suffix)]
    return CATEGORY_ALIASES.get(v, v)


_MOSS_PROMPT_FILE = re.compile(r"^(?:helpful_)?(?P<cat>[a-z_]+?)_prompts(?:_\w+)?$")


def category_from_filename(path: str | os.PathLike) -> str | None:
    """MOSS's prompt files name their category: `helpful_code_prompts.jsonl` -> `code`,
    `harmless_prompts.jsonl` -> `harmless`. None for other names."""
    m = _MOSS_PROMPT_FILE.match(Path(path).name.split(".")[0])
    if not m:
        return None
    cat = normalize_category(m.group("cat"))
    return cat if cat in CATEGORIES else None


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
            raise SeedFormatError(f"the JSON object holds several lists ({', '.join(lists)}): "
                                  "choose one with --records-path", path=str(path))
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
        msg = (f"a field longer than {CSV_FIELD_LIMIT} characters in the row starting here "
               "(an unclosed quote?)")
    else:
        msg = f"malformed CSV in the row starting here ({msg}; a quote inside a quoted field is written \"\")"
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
                    raise SeedFormatError("not UTF-8 text (at or after this line)", path=str(path),
                                          line=start) from None
                if not values:
                    continue
                if header is None:
                    header = values
                    continue
                row: dict[Any, Any] = dict(zip(header, values, strict=False))
                for name in header[len(values):]:
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
                raise SeedFormatError(f"the dataset has splits {', '.join(ds)}: choose one with --split",
                                      path=str(path))
            split = next(iter(ds))
        if split not in ds:
            raise SeedFormatError(f"no split {split!r} (has {', '.join(ds)})", path=str(path))
        ds = ds[split]
    yield from enumerate(ds, start=1)


def iter_source_rows(path: str | os.PathLike, *, records_path: str | None = None,
                     split: str | None = None) -> Iterator[tuple[int, Any]]:
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
    raise SeedFormatError(f"unknown source format {suffix or '(no extension)'!r}: use .jsonl, .json, .csv, "
                          ".tsv, .parquet or a datasets folder", path=str(p))


# ---------------------------------------------------------------------------------------------------
# Import


#: Field mappings of known dataset shapes (`--preset`). Flags given beside a preset override it.
PRESETS: dict[str, dict[str, Any]] = {
    # yizhongw/self-instruct data/seed_tasks.jsonl
    "self-instruct": {"field": "instruction", "append_fields": ["instances.0.input"], "id_field": "id"},
    # tatsu-lab/stanford_alpaca alpaca_data.json
    "alpaca": {"field": "instruction", "append_fields": ["input"]},
    # OpenLMLab/MOSS SFT_data/user_prompts/*.jsonl
    "moss": {"field": "user_prompt"},
    # ShareGPT: the first human turn
    "sharegpt": {"field": "conversations[from=human|user].value", "id_field": "id"},
    # OpenAI chat messages: the first user message
    "messages": {"field": "messages[role=user].content", "id_field": "id"},
    # databricks-dolly-15k
    "dolly": {"field": "instruction", "append_fields": ["context"], "category_field": "category"},
}


@dataclass(slots=True)
class Reject:
    """A row that was not imported, and why (`reason` is a short code, `detail` the specifics)."""

    source: str
    row: int
    reason: str
    detail: str = ""
    source_id: str | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "reason": self.reason, "detail": self.detail,
                "source_id": self.source_id, "text": self.text}


@dataclass(slots=True)
class ImportResult:
    """Seeds kept, rows rejected, and counters (`read`, `kept`, `rejected_<reason>`, `lang_<code>`)."""

    seeds: list[Seed] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """A few human-readable lines for stderr."""
        c = self.counts
        lines = [f"read {c['read']} rows: kept {c['kept']}, rejected {c['read'] - c['kept']}"]
        reasons = sorted((k[9:], v) for k, v in c.items() if k.startswith("rejected_"))
        if reasons:
            lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in reasons))
        langs = sorted((k[5:], v) for k, v in c.items() if k.startswith("lang_"))
        if langs:
            lines.append("  languages: " + ", ".join(f"{k} {v}" for k, v in langs))
        return "\n".join(lines)


def source_name(src: str | os.PathLike) -> str:
    """What a seed's `source` records of the file it was imported from: its name only
    (`/home/me/data/alpaca_data.json` -> `alpaca_data.json`). Lineage is published with the
    dataset, and the folder is the importing user's machine's business."""
    return Path(src).resolve().name or str(src)


def source_hash(src: str | os.PathLike, split: str | None = None) -> str:
    """Which file (and `datasets` split) a seed was imported from, without recording its path: 12
    hex digits of SHA-256 over the resolved path (and the split). Seeds keep it in
    `extra["source_hash"]`, so `seeds import --append` tells `v1/train.jsonl` from `v2/train.jsonl`,
    which share the `source` name."""
    key = str(Path(src).resolve()) + (f"\0{split}" if split else "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def same_source(seed: Seed, src: str | os.PathLike, split: str | None = None) -> bool:
    """True when `seed` was imported from `src` (and `split`): by `extra["source_hash"]`, or for seeds
    imported before it was recorded, by `source` (the file name, or the path as given)."""
    recorded = seed.extra.get("source_hash") if isinstance(seed.extra, dict) else None
    if isinstance(recorded, str):
        return recorded == source_hash(src, split)
    return seed.source in (source_name(src), str(src))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:32] or "seed"


def import_seeds(
    src: str | os.PathLike,
    *,
    field: str | None = None,
    preset: str | None = None,
    append_fields: Sequence[str] | None = None,
    lang_field: str | None = None,
    category_field: str | None = None,
    id_field: str | None = None,
    plugins_field: str | None = None,
    language: str | None = None,
    category: str | None = None,
    plugins: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    prefix: str | None = None,
    min_chars: int = 2,
    max_chars: int = 8000,
    records_path: str | None = None,
    split: str | None = None,
    existing_ids: Iterable[str] = (),
) -> ImportResult:
    """Import prompts from another dataset as Seeds (see the module docstring for the mapping).

    Args:
        src: JSONL/JSON/CSV/TSV/Parquet file or `datasets` folder.
        field: path of the prompt field; required unless `preset` gives it.
        preset: a key of `PRESETS`; explicit arguments override its values.
        append_fields: paths appended after a blank line when non-empty.
        lang_field, category_field, id_field, plugins_field: paths of those values in the row.
        language, category, plugins: constants for every row (override the fields). Without a
            category, MOSS prompt file names give one (`helpful_code_prompts.jsonl` -> code), and
            rows with plugins get `tool`.
        languages: keep only these languages (others rejected as `language_not_selected`, rows whose
            language cannot be told as `language_unknown`).
        prefix: id prefix (default: the source file name); ids are `PREFIX-<16 hex digits of the text's SHA-1>`,
            stable across reruns and file reorderings.
        min_chars, max_chars: length bounds of the normalised prompt.
        records_path: for a JSON object, the path of the record list.
        split: for a `datasets` folder with several splits.
        existing_ids: source ids already used (e.g. by an earlier import), to reject duplicates.

    Seeds record `source` as the file's name only (`source_name`) and a hash of its full path in
    `extra["source_hash"]` (`source_hash`); rejects keep the path given, for the user to find the row.

    Returns an ImportResult; raises SeedFormatError only for problems with the whole source
    (not found, unknown format, unreadable JSON document) or the options.
    """
    if preset and preset not in PRESETS:
        raise SeedFormatError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})", field="preset")
    opts: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    given = {"field": field, "append_fields": append_fields, "lang_field": lang_field,
             "category_field": category_field, "id_field": id_field, "plugins_field": plugins_field}
    opts.update({k: v for k, v in given.items() if v is not None})
    if not opts.get("field"):
        raise SeedFormatError("say which field holds the prompt (--field NAME or --preset)", field="field")
    paths: dict[str, Any] = {}
    for key in ("field", "lang_field", "category_field", "id_field", "plugins_field"):
        if opts.get(key):
            try:
                paths[key] = parse_path(opts[key])
            except ValueError as exc:
                raise SeedFormatError(str(exc), field=key) from None
    try:
        append = [(name, parse_path(name)) for name in opts.get("append_fields") or []]
    except ValueError as exc:
        raise SeedFormatError(str(exc), field="append_fields") from None
    const_plugins = list(plugins or [])
    bad = [p for p in const_plugins if p not in PLUGIN_COMMANDS]
    if bad:
        raise SeedFormatError(f"unknown plugin {bad[0]!r} (known: {', '.join(PLUGINS)})", field="plugins")
    conv = _RowConverter(
        text_name=opts["field"], paths=paths, append=append, min_chars=min_chars, max_chars=max_chars,
        category=normalize_category(category) if category else None,
        file_category=category_from_filename(src),
        language=normalize_language(language) if language else None,
        languages={normalize_language(x) for x in languages} if languages else None,
        plugins=const_plugins, prefix=_slug(prefix or Path(src).name.split(".")[0]), source=source_name(src),
        source_hash=source_hash(src, split), seen_ids=set(existing_ids),
    )
    result = ImportResult()
    for row_no, row in iter_source_rows(src, records_path=records_path, split=split):
        result.counts["read"] += 1
        try:
            seed = conv.convert(row_no, row)
        except _RowError as exc:
            result.rejects.append(Reject(str(src), row_no, exc.reason, exc.detail, exc.source_id, exc.text))
            result.counts[f"rejected_{exc.reason}"] += 1
            continue
        result.seeds.append(seed)
        result.counts["kept"] += 1
        result.counts[f"lang_{seed.language or 'unknown'}"] += 1
    return result


def _json_type(value: Any) -> str:
    """What a row value is, in JSON's words (a 5000-digit integer is a number, not a Decimal)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


class _RowError(Exception):
    def __init__(self, reason: str, detail: str = "", source_id: str | None = None, text: str | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.source_id, self.text = reason, detail, source_id, text


@dataclass(slots=True)
class _RowConverter:
    """Turns one source row into a Seed or raises _RowError (the import's per-row logic)."""

    text_name: str
    paths: dict[str, Any]
    append: list[tuple[str, Any]]
    min_chars: int
    max_chars: int
    category: str | None
    file_category: str | None
    language: str | None
    languages: set[str] | None
    plugins: list[str]
    prefix: str
    source: str
    source_hash: str
    seen_ids: set[str]
    seen_text: dict[bytes, int] = field(default_factory=dict)  # sha1 of the text -> first row

    def _get(self, row: Mapping[str, Any], key: str) -> Any:
        return get_field(row, self.paths[key]) if key in self.paths else MISSING

    def convert(self, row_no: int, row: Any) -> Seed:
        if isinstance(row, _BadRow):
            raise _RowError(row.reason, row.detail)
        if not isinstance(row, Mapping):
            raise _RowError("not_an_object", f"got {type(row).__name__}")
        sid = None
        raw_id = self._get(row, "id_field")
        if raw_id is not MISSING and raw_id is not None and str(raw_id).strip():
            sid = str(raw_id).strip()
        text = self._text(row, sid)
        digest = hashlib.sha1(text.encode("utf-8")).digest()
        if sid is not None:
            if sid in self.seen_ids:
                raise _RowError("duplicate_id", f"id {sid!r} used before", sid, text)
            self.seen_ids.add(sid)
        if digest in self.seen_text:
            raise _RowError("duplicate_text", f"same text as row {self.seen_text[digest]}", sid, text)
        self.seen_text[digest] = row_no

        lang = self.language
        if lang is None:
            v = self._get(row, "lang_field")
            if isinstance(v, str) and v.strip():
                lang = normalize_language(v)
        if lang is None:
            lang = detect_seed_language(text)
        if self.languages is not None and lang is None:
            # Keeping it could let another language through (`Hola amigo` under --languages en).
            raise _RowError("language_unknown", "too short to tell; map a language field or give --lang", sid, text)
        if self.languages is not None and lang not in self.languages:
            raise _RowError("language_not_selected", f"language {lang}", sid, text)

        plugins = list(self.plugins)
        if not plugins:
            v = self._get(row, "plugins_field")
            if isinstance(v, str):
                v = [x for x in re.split(r"[,\s]+", v) if x]
            if isinstance(v, list):
                plugins = [str(x).strip().lower() for x in v]
            unknown = [p for p in plugins if p not in PLUGIN_COMMANDS]
            if unknown:
                raise _RowError("bad_plugins", f"unknown plugin {unknown[0]!r}", sid, text)

        category = self.category
        if category is None:
            v = self._get(row, "category_field")
            if isinstance(v, str) and v.strip():
                category = normalize_category(v)
        if category is None:
            category = self.file_category or ("tool" if plugins else None)

        return Seed(id=f"{self.prefix}-{digest.hex()[:16]}", text=text, language=lang, category=category,
                    plugins=plugins, source=self.source, source_id=sid,
                    extra={"row": row_no, "source_hash": self.source_hash})

    def _text(self, row: Mapping[str, Any], sid: str | None) -> str:
        raw = get_field(row, self.paths["field"])
        if raw is MISSING or raw is None:
            raise _RowError("missing_field", f"no {self.text_name!r}", sid)
        if not isinstance(raw, str):
            raise _RowError("not_text", f"{self.text_name!r} is {_json_type(raw)}", sid)
        parts = [normalize_prompt(raw)]
        for name, path in self.append:
            v = get_field(row, path)
            if v is MISSING or v is None:
                continue
            if not isinstance(v, str):
                raise _RowError("not_text", f"{name!r} is {_json_type(v)}", sid)
            parts.append(normalize_prompt(v))
        text = "\n\n".join(p for p in parts if p)
        if not text:
            raise _RowError("empty", "", sid)
        if len(text) < self.min_chars:
            raise _RowError("too_short", f"{len(text)} < {self.min_chars} characters", sid, text)
        if len(text) > self.max_chars:
            raise _RowError("too_long", f"{len(text)} > {self.max_chars} characters", sid, text[:200] + " ...")
        return text


# ---------------------------------------------------------------------------------------------------
# Stats, dedup, sampling


def seed_stats(seeds: Sequence[Seed]) -> dict[str, Any]:
    """Counts per category x language x plugins, per language, per plugin, and the length
    distribution (characters) overall and per language."""

    def lengths(xs: list[int]) -> dict[str, float]:
        if not xs:
            return {"count": 0}
        xs = sorted(xs)
        q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
        return {"count": len(xs), "min": xs[0], "p25": q[0], "median": q[1], "p75": q[2], "max": xs[-1],
                "mean": round(statistics.fmean(xs), 1)}

    cells = Counter("|".join(s.cell) for s in seeds)
    by_lang: dict[str, list[int]] = {}
    for s in seeds:
        by_lang.setdefault(s.language or "-", []).append(len(s.text))
    return {
        "total": len(seeds),
        "languages": dict(Counter(s.language or "-" for s in seeds).most_common()),
        "categories": dict(Counter(s.category or "-" for s in seeds).most_common()),
        "plugins": dict(Counter(p for s in seeds for p in s.plugins).most_common()),
        "cells": {k: cells[k] for k in sorted(cells)},
        "length": lengths([len(s.text) for s in seeds]),
        "length_by_language": {k: lengths(v) for k, v in sorted(by_lang.items())},
    }


def format_stats(stats: Mapping[str, Any]) -> str:
    """`seed_stats` as a table: one row per category, one column per language, plugins split out."""
    langs = sorted(stats["languages"])
    rows: dict[str, Counter] = {}
    for key, n in stats["cells"].items():
        cat, lang, plugins = key.split("|")
        name = cat if plugins == "-" else f"{cat} [{plugins}]"
        rows.setdefault(name, Counter())[lang] += n
    width = max([len("category")] + [len(r) for r in rows]) + 2
    out = ["category".ljust(width) + "".join(lang.rjust(7) for lang in langs) + "total".rjust(8)]
    for name in sorted(rows):
        c = rows[name]
        out.append(name.ljust(width) + "".join(str(c[lang]).rjust(7) for lang in langs)
                   + str(sum(c.values())).rjust(8))
    out.append("total".ljust(width) + "".join(str(stats["languages"][lang]).rjust(7) for lang in langs)
               + str(stats["total"]).rjust(8))
    if stats["plugins"]:
        out.append("plugins: " + ", ".join(f"{k} {v}" for k, v in stats["plugins"].items()))
    for lang, d in stats["length_by_language"].items():
        if d["count"]:
            out.append(f"length ({lang}, chars): min {d['min']}, median {d['median']:g}, "
                       f"p75 {d['p75']:g}, max {d['max']}, mean {d['mean']}")
    return "\n".join(out)


@dataclass(slots=True)
class DedupResult:
    """Seeds kept (first occurrence wins) and (dropped seed, kind, id it duplicates)."""

    kept: list[Seed]
    dropped: list[tuple[Seed, str, str]]


def dedup_seeds(seeds: Iterable[Seed], *, near: bool = False, threshold: float | None = None) -> DedupResult:
    """Drop exact duplicates (same text after `datagen.filters.exact.normalize_text`: case,
    punctuation, width and whitespace folded) and, with `near=True`, near-duplicates found by
    `datagen.filters.dedup.NearDupIndex("prompt")` (MinHash LSH; `threshold` is its Jaccard)."""
    from datagen.filters.exact import normalize_text

    index = None
    if near:
        from datagen.filters.dedup import NearDupIndex

        index = NearDupIndex("prompt", threshold)
    first: dict[str, str] = {}
    kept: list[Seed] = []
    dropped: list[tuple[Seed, str, str]] = []
    for s in seeds:
        key = normalize_text(s.text)
        if key in first:
            dropped.append((s, "exact", first[key]))
            continue
        first[key] = s.id
        if index is not None:
            dup = index.check_and_add(s.id, s.text)
            if dup is not None:
                dropped.append((s, "near", dup))
                continue
        kept.append(s)
    return DedupResult(kept, dropped)


def sample_balanced(seeds: Sequence[Seed], *, per_cell: int, seed: int = 0) -> list[Seed]:
    """At most `per_cell` seeds from each (category, language, plugins) cell, chosen at random
    but deterministically for a given `seed` (and independent of the input order); the result
    keeps the input order."""
    if per_cell < 1:
        raise ValueError("per_cell must be at least 1")
    cells: dict[tuple[str, str, str], list[Seed]] = {}
    for s in seeds:
        cells.setdefault(s.cell, []).append(s)
    chosen: set[str] = set()
    for cell, members in cells.items():
        members = sorted(members, key=lambda s: s.id)
        rng = random.Random(f"{seed}|{'|'.join(cell)}")
        rng.shuffle(members)
        chosen.update(s.id for s in members[:per_cell])
    return [s for s in seeds if s.id in chosen]
