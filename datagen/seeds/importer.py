"""Part of the former datagen/generate/seeds.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from datagen.errors import SeedFormatError
from datagen.record import PLUGIN_COMMANDS
from datagen.seeds.record import (
    PLUGINS,
    Seed,
    category_from_filename,
    detect_seed_language,
    normalize_category,
    normalize_language,
    normalize_prompt,
)
from datagen.seeds.sources import MISSING, _BadRow, get_field, iter_source_rows, parse_path

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
        return {
            "source": self.source,
            "row": self.row,
            "reason": self.reason,
            "detail": self.detail,
            "source_id": self.source_id,
            "text": self.text,
        }


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
    given = {
        "field": field,
        "append_fields": append_fields,
        "lang_field": lang_field,
        "category_field": category_field,
        "id_field": id_field,
        "plugins_field": plugins_field,
    }
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
        text_name=opts["field"],
        paths=paths,
        append=append,
        min_chars=min_chars,
        max_chars=max_chars,
        category=normalize_category(category) if category else None,
        file_category=category_from_filename(src),
        language=normalize_language(language) if language else None,
        languages={normalize_language(x) for x in languages} if languages else None,
        plugins=const_plugins,
        prefix=_slug(prefix or Path(src).name.split(".")[0]),
        source=source_name(src),
        source_hash=source_hash(src, split),
        seen_ids=set(existing_ids),
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
            raise _RowError(
                "language_unknown", "too short to tell; map a language field or give --lang", sid, text
            )
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

        return Seed(
            id=f"{self.prefix}-{digest.hex()[:16]}",
            text=text,
            language=lang,
            category=category,
            plugins=plugins,
            source=self.source,
            source_id=sid,
            extra={"row": row_no, "source_hash": self.source_hash},
        )

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
            raise _RowError(
                "too_long", f"{len(text)} > {self.max_chars} characters", sid, text[:200] + " ..."
            )
        return text
