"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""


from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from datagen.record import (
    Conversation,
    Lineage,
)

# ------------------------------------------------------------------------------------ paths

_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\[^\\]+\\)")
#: An absolute POSIX or Windows path inside free text (a card line): two or more components, not part
#: of a URL or of a relative path (`data/hhh/train-*`).
_PATH_IN_TEXT = re.compile(r"(?<![\w:/.~%-])(?:/[\w.@+-]+){2,}/?|(?<![\w])[A-Za-z]:\\(?:[\w .@+-]+\\)+[\w .@+-]*")


def is_absolute_path(value: Any) -> bool:
    """True for a one-line string that is an absolute filesystem path (`/home/ann/seeds.jsonl`,
    `~/data.jsonl`, `C:\\data\\x.jsonl`, `file:///...`); URLs, relative paths and one-component
    paths (`/`, `/v1`) are not."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return False
    text = value[len("file://"):] if value.startswith("file://") else value
    if "://" in text:
        return False
    if text.startswith("~/") or _WINDOWS_ABS.match(text):
        return True
    # two components at least: `/v1` or `/` alone say nothing about the machine (and may be an API path)
    return text.startswith("/") and len(PurePosixPath(text).parts) > 2


def portable_path(value: str) -> str:
    """The file name of an absolute path (`/home/ann/data/seeds.jsonl` -> `seeds.jsonl`); any other
    value unchanged."""
    if not is_absolute_path(value):
        return value
    text = value[len("file://"):] if value.startswith("file://") else value
    name = PureWindowsPath(text).name if _WINDOWS_ABS.match(text) else PurePosixPath(text).name
    return name or value


def portable_paths(value: Any) -> Any:
    """A copy of a JSON-like value with every absolute path string replaced by its file name."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    return portable_path(value) if isinstance(value, str) else value


def make_portable(conv: Conversation) -> Conversation:
    """Keep only file names of absolute paths in the metadata a published row carries and the check
    reads (`_row_paths`): the whole lineage (a teacher model served under its path, as vLLM does by
    default, a seed source file, a path among the params), tags and extra. The dialogue text is left
    alone. Changes `conv` in place and returns it."""
    conv.lineage = Lineage.from_dict(portable_paths(conv.lineage.to_dict()))
    conv.tags = portable_paths(conv.tags)
    conv.extra = portable_paths(conv.extra)
    return conv


def absolute_paths(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, path) for every absolute path string in a JSON-like value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from absolute_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from absolute_paths(v, f"{where}[{i}]")
    elif is_absolute_path(value):
        yield where, value


def absolute_paths_in_text(text: str) -> list[str]:
    """Absolute paths written in free text (a card body), in order of appearance, each once."""
    return list(dict.fromkeys(m.group(0) for m in _PATH_IN_TEXT.finditer(text)))
