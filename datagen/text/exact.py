"""Exact duplicates: xxhash of normalised text.

Normalisation folds what a teacher varies without changing meaning: NFKC (full-width forms),
case, whitespace and punctuation (ASCII and CJK alike). Two units are hashed per conversation: the
first human turn (the prompt) and the whole dialogue.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

import xxhash

from datagen.record import Conversation


@functools.cache
def _fold_table() -> dict[int, int | None]:
    # Every punctuation (P*) and symbol (S*) code point is deleted, every separator/control becomes a
    # space; built once (about 0.3 s) and shared by forked workers.
    table: dict[int, int | None] = {}
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PS":
            table[cp] = None
        elif cat[0] == "Z" or cat in ("Cc", "Cf"):
            table[cp] = 0x20
    return table


def normalize_text(text: str) -> str:
    """Fold text for exact-duplicate hashing: NFKC, case-folded, punctuation and symbols removed,
    whitespace runs collapsed to one space, stripped.

    >>> normalize_text("Hello,  ＷＯＲＬＤ！") == normalize_text("hello world")
    True
    """
    text = unicodedata.normalize("NFKC", text).casefold().translate(_fold_table())
    return " ".join(text.split())


def text_hash(text: str) -> int:
    """64-bit xxh3 hash of `normalize_text(text)`."""
    return xxhash.xxh3_64_intdigest(normalize_text(text).encode("utf-8"))


def prompt_hash(conv: Conversation) -> int:
    """Hash of the first human turn (0 turns hash as the empty string)."""
    return text_hash(conv.turns[0].human if conv.turns else "")


def dialogue_hash(conv: Conversation) -> int:
    """Hash of every human and assistant message, turn boundaries kept (a message moved from one
    turn to the next changes the hash)."""
    h = xxhash.xxh3_64()
    for t in conv.turns:
        h.update(normalize_text(t.human).encode("utf-8"))
        h.update(b"\x00")
        h.update(normalize_text(t.assistant).encode("utf-8"))
        h.update(b"\x01")
    return h.intdigest()


class ExactIndex:
    """Hashes seen so far -> key of the first row that had it. Streams: O(1) per row, 8 bytes of
    hash plus the key per kept row."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def check_and_add(self, key: str, h: int) -> str | None:
        """Return the key of an earlier row with hash `h`; otherwise remember `key` and return None."""
        first = self._seen.setdefault(h, key)
        return None if first == key else first

    def get(self, h: int) -> str | None:
        """Key of the first row with hash h, or None."""
        return self._seen.get(h)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, h: int) -> bool:
        return h in self._seen
