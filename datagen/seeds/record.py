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

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError, SeedFormatError
from datagen.io import write_jsonl_atomic
from datagen.record import PLUGIN_COMMANDS
from datagen.text.script import HAN_BMP, HANGUL, KANA

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
    "chinese": "zh",
    "中文": "zh",
    "zh-cn": "zh",
    "zh-hans": "zh",
    "zh-hant": "zh",
    "zh-tw": "zh",
    "zh-hk": "zh",
    "zho": "zh",
    "chi": "zh",
    "cn": "zh",
    "english": "en",
    "英文": "en",
    "en-us": "en",
    "en-gb": "en",
    "eng": "en",
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
        d: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "language": self.language,
            "category": self.category,
            "plugins": list(self.plugins),
            "source": self.source,
            "source_id": self.source_id,
        }
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
        return cls(
            id=str(sid),
            text=text,
            language=d.get("language"),
            category=d.get("category"),
            plugins=list(plugins),
            source=d.get("source"),
            source_id=d.get("source_id"),
            extra=extra,
        )

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
    from datagen.io import iter_json_lines

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
            raise SeedFormatError(
                "missing required field", path=str(path), line=line, field=str(exc.args[0])
            ) from None
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            fld = _field_of(msg)
            raise SeedFormatError(
                msg.split(": ", 1)[1] if fld else msg, path=str(path), line=line, field=fld
            ) from None
        if seed.id in first_line:
            raise SeedFormatError(
                f"duplicate id {seed.id!r} (first used on line {first_line[seed.id]})",
                path=str(path),
                line=line,
                field="id",
            )
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
    text = "".join(ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else "" for ch in text)
    text = "".join(
        " " if ch != "\t" and ch != "\n" and unicodedata.category(ch) == "Zs" else ch for ch in text
    )
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


_HAN = re.compile(f"[{HAN_BMP}]")
_KANA = re.compile(f"[{KANA}]")
_HANGUL = re.compile(f"[{HANGUL}]")


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
    """A prompt's language: `datagen.text.language.detect_language` (the one detector every
    stage uses), falling back to the script for very short CJK prompts (`你好` -> zh, `안녕` -> ko).
    None when it cannot tell (a short Latin text such as `Hola amigo`, numbers, code)."""
    from datagen.text.language import detect_language

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
            v = v[len(prefix) :]
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
