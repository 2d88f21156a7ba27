"""Paths in data: find the absolute ones, make them portable, and fingerprint the files a config
names.

Whatever leaves this machine (a manifest, a published row, a card) carries no absolute path of it:
`portable` makes each one relative to a known folder or cuts it to its file name.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from datagen.record import (
    Conversation,
    Lineage,
)

# ------------------------------------------------------------------------------------ paths

_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\[^\\]+\\)")
#: An absolute POSIX or Windows path inside free text (a card line): two or more components, not part
#: of a URL or of a relative path (`data/hhh/train-*`).
_PATH_IN_TEXT = re.compile(
    r"(?<![\w:/.~%-])(?:/[\w.@+-]+){2,}/?|(?<![\w])[A-Za-z]:\\(?:[\w .@+-]+\\)+[\w .@+-]*"
)


def is_absolute_path(value: Any) -> bool:
    """True for a one-line string that is an absolute filesystem path (`/home/ann/seeds.jsonl`,
    `~/data.jsonl`, `C:\\data\\x.jsonl`, `file:///...`); URLs, relative paths and one-component
    paths (`/`, `/v1`) are not."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return False
    text = value[len("file://") :] if value.startswith("file://") else value
    if "://" in text:
        return False
    if text.startswith("~/") or _WINDOWS_ABS.match(text):
        return True
    # two components at least: `/v1` or `/` alone say nothing about the machine (and may be an API path)
    return text.startswith("/") and len(PurePosixPath(text).parts) > 2


def portable(value: Any, *, bases: Sequence[str | os.PathLike] = ()) -> Any:
    """`value` (a string, or a JSON-like dict or list, copied) with every absolute path string
    (`is_absolute_path`) made relative to the first of `bases` that contains it, else cut to its
    file name (`/home/ann/data/seeds.jsonl` -> `seeds.jsonl`). Other values are returned as they
    are."""
    if isinstance(value, dict):
        return {k: portable(v, bases=bases) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, bases=bases) for v in value]
    if not is_absolute_path(value):
        return value
    text = value[len("file://") :] if value.startswith("file://") else value
    if _WINDOWS_ABS.match(text):
        return PureWindowsPath(text).name or value
    if bases:
        path = Path(text).expanduser().resolve()
        for base in bases:
            try:
                return str(path.relative_to(Path(base).resolve()))
            except ValueError:
                continue
    return PurePosixPath(text).name or value


#: Earlier names of `portable` (one path; a JSON-like value), for callers not moved yet.


def make_portable(conv: Conversation) -> Conversation:
    """Keep only file names of absolute paths in the metadata a published row carries and the check
    reads (`_row_paths`): the whole lineage (a teacher model served under its path, as vLLM does by
    default, a seed source file, a path among the params), tags and extra. The dialogue text is left
    alone. Changes `conv` in place and returns it."""
    conv.lineage = Lineage.from_dict(portable(conv.lineage.to_dict()))
    conv.tags = portable(conv.tags)
    conv.extra = portable(conv.extra)
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


def file_identity(spec: str | None) -> str:
    """Size, modification time and (for small files) content hash of a file the config names, so a
    stage notices when the file changes under the same name. Non-paths (e.g. `smollm2`) are
    returned as they are."""
    if not spec:
        return ""
    path = Path(spec)
    if not path.exists():
        return str(spec)
    if path.is_dir():
        parts = []
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    st = path.stat()
    if st.st_size <= 64 << 20:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{st.st_size}:{int(st.st_mtime)}"
