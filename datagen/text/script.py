"""Scripts in text: the Unicode ranges of the scripts written without spaces (every CJK regex in
datagen is built from them), stripping what carries no language (code, URLs, quotes), counting
characters per script, and telling Traditional from Simplified Chinese.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Unicode ranges (regex character-class bodies) of the scripts written without spaces. A regex that
# looks for one of them is built from these: `re.compile(f"[{HAN_BMP}{KANA}]")`.
#: Han in the Basic Multilingual Plane: Extension A, the Unified Ideographs, Compatibility Ideographs.
HAN_BMP = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: Han beyond it: Extensions B to G.
HAN_EXT = "\U00020000-\U0003134f"
#: Hiragana and Katakana (with the marks below).
KANA_BASIC = "\u3040-\u30ff"
#: Katakana Phonetic Extensions (small ㇰ, ㇱ, ... of Ainu).
KANA_EXT = "\u31f0-\u31ff"
KANA = KANA_BASIC + KANA_EXT
#: ・ and ー: in the Katakana block, but Chinese text writes them too, so they say nothing of Japanese.
KANA_MARKS = "\u30fb\u30fc"
#: Hangul Jamo and Compatibility Jamo.
HANGUL_JAMO = "\u1100-\u11ff\u3130-\u318f"
HANGUL_SYLLABLES = "\uac00-\ud7af"
HANGUL = HANGUL_JAMO + HANGUL_SYLLABLES
#: Hangul Jamo Extended-A and -B (old Korean).
HANGUL_JAMO_EXT = "\ua960-\ua97c\ud7b0-\ud7fb"

#: Fewer CJK characters than this (and fewer Latin words than MIN_LATIN_WORDS): no verdict.
MIN_CJK_CHARS = 3
#: Fewer Latin-script words than this (and fewer CJK chars than MIN_CJK_CHARS): no verdict.
MIN_LATIN_WORDS = 3
#: One CJK character weighs as much as this many Latin letters (a Chinese word averages 1.5
#: characters, an English one about 4.7 letters).
CJK_CHAR_WEIGHT = 3.0
#: Seed for langdetect, whose answers are random between calls otherwise.
LANGDETECT_SEED = 0
_LANGDETECT_MAX_CHARS = 300
#: Fewer Latin words than this: no langdetect (a stop-word vote may still decide).
_LANGDETECT_MIN_WORDS = 5
#: Running prose has at least this share of function words; a Chinese sentence that names English
#: terms has fewer among its Latin words.
_PROSE_STOPWORD_SHARE = 0.3

# ---------------------------------------------------------------------------------------------------
# Stripping what carries no language

_CODE_FENCE_RE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.S)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_URL_RE = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.I)
# Anchored at the start of a run of address characters: unanchored, every position inside a long run
# without an `@` rescans the rest of the run (quadratic: 91 s for 200,000 CJK characters).
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MATH_RE = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|\\\[.*?\\\]|\\\(.*?\\\)", re.S)
_MOSS_TAG_RE = re.compile(r"<\|[A-Za-z ]+\|>:?|<e o[hctrm]>|<eo[hctrm]>|<sup>.*?</sup>")
_NUMBER_RE = re.compile(r"[+-]?\d[\d.,:/%eE+-]*")
_CODE_KEYWORD_RE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |return\b|if\s*\(|for\s*\(|while\s*\(|#include|"
    r"public |private |static |const |let |var |function\b|print\(|console\.|SELECT |INSERT |"
    r"UPDATE |DELETE |CREATE |package |using |namespace |\}|\{|//|/\*|\*/|<\?|<[a-zA-Z/][^>]*>$|"
    r"[A-Za-z_][\w.]*\s*(?:=|\+=|-=|==)\s*\S|[A-Za-z_][\w.]*\(.*\)\s*;?$)"
)
_CODE_END_RE = re.compile(r"(?:[;{}]|\):|\)|\]|,)\s*$")
#: Shell command lines: tools whose name is no English word, or common commands with flags/paths.
_SHELL_RE = re.compile(
    r"^\s*(?:\$\s*)?(?:(?:git|npm|npx|yarn|pnpm|pip3?|conda|docker|kubectl|sudo|apt|apt-get|yum|brew|wget|curl|"
    r"ssh|scp|chmod|chown|mkdir|rm|ls|tar|cargo|mvn|gradle|rustc|gcc|g\+\+|javac)\s+\S|"
    r"(?:python3?|node|make|go|java|cd|cat|echo|export|cp|mv|find|grep)\s+.*(?:\s--?\w|&&|\||/|=))"
)
#: Pasted tracebacks, stack frames and log lines: machine output, not the writer's language.
_TRACE_LINE_RE = re.compile(
    r"^\s*(?:Traceback \(most recent call last\):|File \"[^\"]*\", line \d+|"
    r"During handling of the above exception|The above exception was the direct cause|"
    r"at [\w$.<>]+\(.*\)$|"
    r"(?:[A-Za-z_][\w]*\.)*(?:[A-Z]\w*)?(?:Error|Exception)\b:|"
    r"(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Warning|Interrupt|Exit)\b:|"
    r"\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\[?\d\d:\d\d:\d\d\b|"
    r"\[?(?:ERROR|WARN|WARNING|INFO|DEBUG|FATAL|CRITICAL|TRACE)\b[\]:])"
)


def _is_code_line(line: str) -> bool:
    s = line.strip()
    if not s:
        return False
    if _has_cjk(s):
        return False
    if _CODE_KEYWORD_RE.match(s) or _SHELL_RE.match(s) or _TRACE_LINE_RE.match(s):
        return True
    symbols = len(_SYMBOL_RE.findall(s))
    if len(s) >= 4 and symbols / len(s) >= 0.25:
        return True
    return bool(_CODE_END_RE.search(s)) and symbols / len(s) >= 0.12


def strip_non_language(text: str) -> str:
    """Remove what says nothing about the natural language of a text: fenced and inline code, code
    lines, pasted tracebacks and log lines, URLs, e-mail addresses, formulas, numbers and MOSS tags."""
    text = unicodedata.normalize("NFKC", text)
    text = _CODE_FENCE_RE.sub(" ", text)
    text = _INLINE_CODE_RE.sub(" ", text)
    text = _MOSS_TAG_RE.sub(" ", text)
    text = _URL_RE.sub(" ", text)
    if "@" in text:
        text = _EMAIL_RE.sub(" ", text)
    text = _MATH_RE.sub(" ", text)
    lines = [ln for ln in text.splitlines() if not _is_code_line(ln)]
    return _NUMBER_RE.sub(" ", "\n".join(lines))


#: Quoted spans: a turn that quotes a word of another language is judged by the text around it.
#: ASCII quotes count only when they do not touch letters (so "don't" and "users'" open nothing).
_QUOTED_RE = re.compile(
    r"「[^」\n]{1,200}」|『[^』\n]{1,200}』|“[^”\n]{1,200}”|‘[^’\n]{1,200}’|«[^»\n]{1,200}»|"
    r"(?<!\w)\"[^\"\n]{1,200}\"(?!\w)|(?<!\w)'[^'\n]{1,200}'(?!\w)"
)
_QUOTE_CHARS_RE = re.compile("[「『“‘«\"']")


# ---------------------------------------------------------------------------------------------------
# Script counts


#: A han, kana or hangul character (as `_script_of` counts them, old Hangul jamo included); not the
#: kana marks.
_CJK_RE = re.compile(f"(?![{KANA_MARKS}])[{HAN_BMP}{HAN_EXT}{KANA}{HANGUL}{HANGUL_JAMO_EXT}]")
_SYMBOL_RE = re.compile(r"[^\w\s]|_")


def _has_cjk(s: str) -> bool:
    return _CJK_RE.search(s) is not None


@functools.lru_cache(maxsize=65536)
def _script_of(ch: str) -> str:
    cp = ord(ch)
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F:
        return "han"
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF:
        return "kana" if cp not in (0x30FB, 0x30FC) else "kana_mark"  # ・ and ー appear in zh text too
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return "hangul"
    if not ch.isalpha():
        return "other"
    if cp < 0x250 or 0x1E00 <= cp <= 0x1EFF:
        return "latin"
    if 0x400 <= cp <= 0x52F:
        return "cyrillic"
    if 0x370 <= cp <= 0x3FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    if 0x590 <= cp <= 0x5FF:
        return "hebrew"
    if 0x600 <= cp <= 0x6FF or 0x750 <= cp <= 0x77F:
        return "arabic"
    if 0x900 <= cp <= 0x97F:
        return "devanagari"
    if 0xE00 <= cp <= 0xE7F:
        return "thai"
    try:
        return unicodedata.name(ch).split()[0].lower()
    except ValueError:
        return "other"


@dataclass(slots=True)
class ScriptCounts:
    """Letters per script in a text (after `strip_non_language`) and its Latin-script words."""

    counts: Counter = field(default_factory=Counter)
    latin_words: list[str] = field(default_factory=list)

    @property
    def cjk(self) -> int:
        return self.counts["han"] + self.counts["kana"] + self.counts["hangul"]

    @property
    def weight(self) -> float:
        """Size of the text in Latin-letter equivalents (what dialogue votes weigh by)."""
        other = sum(n for s, n in self.counts.items() if s not in ("han", "kana", "hangul", "kana_mark"))
        return self.cjk * CJK_CHAR_WEIGHT + other


_WORD_RE = re.compile(r"[^\W\d_]+")


def script_counts(text: str, *, strip: bool = True) -> ScriptCounts:
    """Count letters per script (han, kana, hangul, latin, cyrillic, ...) in text."""
    if strip:
        text = strip_non_language(text)
    counts = Counter(map(_script_of, text))
    counts.pop("other", None)
    return ScriptCounts(counts, _latin_words(text))


def _latin_words(text: str) -> list[str]:
    return [
        w for w in _WORD_RE.findall(text.lower()) if w.isascii() or all(_script_of(c) == "latin" for c in w)
    ]


# ---------------------------------------------------------------------------------------------------
# Chinese variants


def _opencc_table(name: str) -> dict[str, list[str]]:
    import opencc

    out: dict[str, list[str]] = {}
    for line in (Path(opencc.__file__).parent / "dictionary" / name).read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            out[k] = v.split()
    return out


@functools.cache
def _variant_sets() -> tuple[frozenset[str], frozenset[str]]:
    """(Traditional-only, Simplified-only) characters, from OpenCC's character tables."""
    ts, st = _opencc_table("TSCharacters.txt"), _opencc_table("STCharacters.txt")
    trad = {k for k, v in ts.items() if k not in v} - set(st)
    simp = {k for k, v in st.items() if k not in v} - set(ts)
    return frozenset(trad), frozenset(simp)


@functools.cache
def _variant_phrases() -> tuple[dict[str, list[str]], dict[str, list[str]], int]:
    """OpenCC's phrase tables (Simplified -> Traditional, Traditional -> Simplified), keeping only
    phrases that a conversion changes, and the longest phrase length."""
    st = {k: v for k, v in _opencc_table("STPhrases.txt").items() if k not in v}
    ts = {k: v for k, v in _opencc_table("TSPhrases.txt").items() if k not in v}
    return st, ts, max(map(len, [*st, *ts]))


def variant_counts(text: str) -> tuple[int, int]:
    """(Traditional-only, Simplified-only) character counts of text."""
    trad, simp = _variant_sets()
    t = s = 0
    for c in text:
        if c in trad:
            t += 1
        elif c in simp:
            s += 1
    return t, s


_HAN_RUN_RE = re.compile(f"[{HAN_BMP}]{{2,}}")


def phrase_variant_counts(text: str) -> tuple[int, int]:
    """(Traditional, Simplified) evidence from OpenCC's phrase tables: characters that both sets
    share (价 后 里 面 只 干 范 ...) but that a phrase-level conversion changes (价格 -> 價格 says the
    text is Simplified). Longest match first, left to right, as OpenCC converts."""
    st, ts, longest = _variant_phrases()
    t = s = 0
    for run in _HAN_RUN_RE.findall(text):
        i = 0
        while i < len(run) - 1:
            for n in range(min(longest, len(run) - i), 1, -1):
                piece = run[i : i + n]
                hit = st.get(piece)
                if hit is not None:
                    s += sum(a != b for a, b in zip(piece, hit[0], strict=False))
                    break
                hit = ts.get(piece)
                if hit is not None:
                    t += sum(a != b for a, b in zip(piece, hit[0], strict=False))
                    break
            else:
                i += 1
                continue
            i += n
    return t, s


def detect_script_variant(text: str) -> str | None:
    """`zh-Hant` or `zh-Hans` by character set (Traditional-only vs Simplified-only characters);
    when those are silent or tie, by the characters that OpenCC's phrase-level conversions change
    (`phrase_variant_counts`). None when nothing tells them apart."""
    t, s = variant_counts(text)
    if t == s:
        pt, ps = phrase_variant_counts(text)
        t, s = t + pt, s + ps
    if t == s:
        return None
    return "zh-Hant" if t > s else "zh-Hans"


def to_simplified(text: str) -> str:
    """Convert Traditional characters to Simplified (OpenCC t2s, character level)."""
    return _t2s_converter().convert(text)


@functools.cache
def _t2s_converter():
    import opencc

    return opencc.OpenCC("t2s")
