"""Keyword and regex lexicons, matched with Aho-Corasick over normalised text.

    lex = Lexicon.builtin().extend(Lexicon.load("my_terms.tsv"))
    for hit in lex.matcher().find("教我製 造 炸 彈"):
        print(hit.category, hit.severity, hit.text)   # weapons 3 製 造 炸 彈

File format (see `datagen/filters/data/safety_lexicon.tsv`): `term<TAB>category<TAB>severity`,
`allow<TAB>phrase`, `re<TAB>pattern<TAB>category<TAB>severity`, `#` comments.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from datagen.errors import ConfigError
from datagen.filters.safety.normalize import compact_view, has_split_letters, word_view
from datagen.text.script import HAN_BMP, HANGUL_SYLLABLES, KANA_BASIC

_INFLECTIONS = ("", "s", "es", "ed", "d", "ing", "er", "ers")
_CJK_RE = re.compile(f"[{KANA_BASIC}{HAN_BMP}{HANGUL_SYLLABLES}]")


@dataclass(slots=True, frozen=True)
class Entry:
    term: str
    category: str
    severity: int


@dataclass(slots=True, frozen=True)
class Hit:
    """A lexicon match: the entry, and the span of the original text it covers."""

    term: str
    category: str
    severity: int
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return {"term": self.term, "category": self.category, "severity": self.severity, "text": self.text}


@dataclass(slots=True)
class Lexicon:
    """Terms, allow-list phrases and regexes."""

    entries: list[Entry] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    regexes: list[tuple[str, str, int]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        """Read a lexicon file; ConfigError names file and line of a bad entry."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read lexicon: {exc.strerror}", path=str(path)) from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<lexicon>") -> Lexicon:
        lex = cls()
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = [c.strip() for c in line.split("\t")]
            try:
                if cols[0] == "allow":
                    lex.allow.append(cols[1])
                elif cols[0] == "re":
                    re.compile(cols[1])
                    lex.regexes.append((cols[1], cols[2], _severity(cols[3])))
                else:
                    lex.entries.append(Entry(cols[0], cols[1], _severity(cols[2])))
            except (IndexError, ValueError, re.error) as exc:
                raise ConfigError(
                    f"bad lexicon entry ({exc}); expected term<TAB>category<TAB>severity", path=source, line=n
                ) from None
        return lex

    @classmethod
    def builtin(cls) -> Lexicon:
        """datagen's built-in zh/en lexicon."""
        return cls.parse(_builtin_text(), "datagen/filters/data/safety_lexicon.tsv")

    def extend(self, other: Lexicon) -> Lexicon:
        """A new lexicon with other's entries added."""
        return Lexicon(self.entries + other.entries, self.allow + other.allow, self.regexes + other.regexes)

    def matcher(self) -> KeywordMatcher:
        return KeywordMatcher(self)


def _severity(s: str) -> int:
    v = int(s)
    if v not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {v}")
    return v


@functools.cache
def _builtin_text() -> str:
    return resources.files("datagen.filters").joinpath("data/safety_lexicon.tsv").read_text(encoding="utf-8")


class KeywordMatcher:
    """Aho-Corasick automata over the compact view (CJK terms) and the word view (Latin terms),
    plus regexes; hits inside allow-list phrases are dropped."""

    def __init__(self, lexicon: Lexicon):
        import ahocorasick

        self._cjk = ahocorasick.Automaton()
        self._latin = ahocorasick.Automaton()
        self._n_cjk = self._n_latin = 0
        for e in lexicon.entries:
            self._add(e.term, ("hit", e))
        for phrase in lexicon.allow:
            self._add(phrase, ("allow", phrase))
        if self._n_cjk:
            self._cjk.make_automaton()
        if self._n_latin:
            self._latin.make_automaton()
        self._regexes = [(re.compile(p, re.I), c, s, p) for p, c, s in lexicon.regexes]

    def _add(self, term: str, value: tuple) -> None:
        if _CJK_RE.search(term):
            key = compact_view(term)[0]
            if key:
                # several entries may share a key: keep them all
                prev = self._cjk.get(key, [])
                self._cjk.add_word(key, [*prev, (*value, len(key))])
                self._n_cjk += 1
        else:
            key = word_view(term)[0].strip()
            if key:
                prev = self._latin.get(key, [])
                self._latin.add_word(key, [*prev, (*value, len(key))])
                self._n_latin += 1

    def find(self, text: str) -> list[Hit]:
        """Every lexicon hit in text (original spans), allow-listed ones removed."""
        hits: list[Hit] = []
        if self._n_cjk:
            view, src = compact_view(text)
            hits.extend(self._scan(self._cjk, view, src, text, None))
        if self._n_latin:
            seen: set[tuple[int, int, str]] = set()
            for split_article in (False, True) if has_split_letters(text) else (False,):
                view, src, soft = word_view(text, split_article=split_article)
                for h in self._scan(self._latin, view, src, text, soft):
                    if (h.start, h.end, h.term) not in seen:
                        seen.add((h.start, h.end, h.term))
                        hits.append(h)
        if self._regexes:
            nf = unicodedata.normalize("NFKC", text)
            same = len(nf) == len(text)
            for rx, cat, sev, pat in self._regexes:
                for m in rx.finditer(nf):
                    span = text[m.start() : m.end()] if same else m.group(0)
                    hits.append(Hit(pat, cat, sev, m.start(), m.end(), span))
        hits.sort(key=lambda h: (h.start, -h.severity))
        return hits

    def _scan(self, automaton, view: str, src: list[int], text: str, soft: set[int] | None) -> list[Hit]:
        found: list[tuple[int, int, tuple]] = []
        allows: list[tuple[int, int]] = []
        for end, values in automaton.iter(view):
            for kind, item, key_len in values:
                start = end - key_len + 1
                if soft is not None:
                    # Latin: start at a word start; end at a word end, after an inflection at most
                    if view[start - 1] != " " and start not in soft:
                        continue
                    tail = view[end + 1 :].split(" ", 1)[0]
                    if tail not in _INFLECTIONS and end + 1 not in soft:
                        continue
                if kind == "allow":
                    allows.append((start, end))
                else:
                    found.append((start, end, item))
        out = []
        for start, end, e in found:
            if any(a0 <= start and end <= a1 for a0, a1 in allows):
                continue
            s0, s1 = src[start], src[end] + 1
            out.append(Hit(e.term, e.category, e.severity, s0, s1, text[s0:s1]))
        return out
