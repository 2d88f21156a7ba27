"""Normalisation against obfuscation, with a map back to the original text.

`compact_view` folds full-width forms (NFKC), case, Traditional to Simplified characters (OpenCC's
character table, one to one so offsets survive) and deletes everything that is not a letter, digit
or CJK character, so `制 造*炸.弹`, `製造炸彈` and `ＢＯＭＢ` all read `制造炸弹`/`bomb`. Latin
keywords are matched on `word_view` instead, where word boundaries survive and runs of single
letters (`b o m b`, `b.o.m.b`) are joined.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path


@functools.cache
def _t2s_table() -> dict[int, str]:
    import opencc

    table: dict[int, str] = {}
    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            v = v.split()[0]
            if len(k) == 1 and len(v) == 1 and k != v:
                table[ord(k)] = v
    return table


def fold(text: str) -> str:
    """NFKC, lower case, Traditional -> Simplified (character level)."""
    return unicodedata.normalize("NFKC", text).lower().translate(_t2s_table())


def _fold_chars(text: str) -> tuple[str, list[int]]:
    """Fold, keeping for each output char the index of its source char (char by char only when
    folding changes the length)."""
    folded = fold(text)
    if len(folded) == len(text):
        return folded, range(len(text))  # type: ignore[return-value]
    out: list[str] = []
    src: list[int] = []
    t2s = _t2s_table()
    for i, ch in enumerate(text):
        f = unicodedata.normalize("NFKC", ch).lower().translate(t2s)
        out.append(f)
        src.extend([i] * len(f))
    return "".join(out), src


_NON_ALNUM_RE = re.compile(r"[\W_]+")


class _LazyMap:
    """Source index of each view char, computed on first use (most texts have no hit)."""

    __slots__ = ("_build", "_map")

    def __init__(self, build):
        self._build, self._map = build, None

    def __getitem__(self, i: int) -> int:
        if self._map is None:
            self._map = self._build()
        return self._map[i]


def compact_view(text: str) -> tuple[str, _LazyMap]:
    """(folded text with only letters, digits and CJK kept, source index of each char)."""
    folded, src = _fold_chars(text)
    view = _NON_ALNUM_RE.sub("", folded)

    def build() -> list[int]:
        return [src[i] for i, c in enumerate(folded) if c.isalnum() and c != "_"]

    return view, _LazyMap(build)


_SPLIT_LETTERS_RE = re.compile(r"(?<![a-z0-9])(?:[a-z][\s\W_]{1,3}){2,}[a-z](?![a-z0-9])")


def has_split_letters(text: str) -> bool:
    """True when text has a run of single letters (`b o m b`) that `word_view` joins."""
    return _SPLIT_LETTERS_RE.search(fold(text)) is not None


def word_view(text: str, *, split_article: bool = False) -> tuple[str, _LazyMap | list[int], set[int]]:
    """(folded text with non-alphanumerics as single spaces and split-letter runs joined, padded
    with a space at both ends; source index of each char; positions inside joined runs, where a
    word may start anywhere since `b o m b` hides its boundaries). With split_article, a run
    starting with `a` or `i` keeps that letter as its own word (`make a b o m b`)."""
    folded, src = _fold_chars(text)
    if not _SPLIT_LETTERS_RE.search(folded):
        view = " " + _NON_ALNUM_RE.sub(" ", folded).strip() + " "
        if view == "  ":
            view = " "

        def build() -> list[int]:
            idx = [0]
            prev_space = True
            for i, c in enumerate(folded):
                if c.isalnum() and c != "_":
                    idx.append(src[i])
                    prev_space = False
                elif not prev_space:
                    idx.append(src[i])
                    prev_space = True
            if not prev_space:
                idx.append(len(text))
            return idx

        return view, _LazyMap(build), set()
    chars: list[str] = [" "]
    idx: list[int] = [0]
    soft: set[int] = set()
    # join `b o m b` / `b.o.m.b` first (on the folded text), then squeeze separators
    joined: list[tuple[str, int, bool]] = []
    pos = 0
    for m in _SPLIT_LETTERS_RE.finditer(folded):
        joined.extend((c, src[pos + j], False) for j, c in enumerate(folded[pos : m.start()]))
        run = [(c, src[m.start() + j], True) for j, c in enumerate(m.group(0)) if c.isalpha()]
        if split_article and run[0][0] in "ai" and len(run) >= 4:
            joined.append(run[0])
            joined.append((" ", run[1][1], False))
            run = run[1:]
        joined.extend(run)
        pos = m.end()
    joined.extend((c, src[pos + j], False) for j, c in enumerate(folded[pos:]))
    for c, s, in_run in joined:
        if c.isalnum() and c != "_":
            if in_run:
                soft.add(len(chars))
            chars.append(c)
            idx.append(s)
        elif chars[-1] != " ":
            chars.append(" ")
            idx.append(s)
    if chars[-1] != " ":
        chars.append(" ")
        idx.append(len(text))
    return "".join(chars), idx, soft
