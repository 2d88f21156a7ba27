"""Every CJK regex is built from the range constants of `datagen.text.script` and still matches
exactly the characters its hand-written class did (code points 0 to U+323AF, the end of Han
Extension H)."""

from __future__ import annotations

import re

import pytest

from datagen.filters.safety import lexicon
from datagen.formats import stats
from datagen.review import index
from datagen.seeds import record
from datagen.text import script, tokens
from datagen.tools import search

LAST = 0x323AF
#: Every code point twice (a run regex needs two), pairs apart: U+0000 is in none of the classes.
ALL = "\0".join(chr(c) * 2 for c in range(1, LAST + 1))


def matched(regex: re.Pattern[str]) -> frozenset[int]:
    """The code points `regex` matches."""
    assert not regex.search("\0")
    return frozenset(ord(ch) for m in regex.finditer(ALL) for ch in m.group())


# (name, the class as it was written before the constants, the regex now)
PAIRS = [
    (
        "script._CJK_RE",
        "[\u3040-\u30fa\u30fd-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
        "\uac00-\ud7af\ud7b0-\ud7fb\ua960-\ua97c\u1100-\u11ff\u3130-\u318f\U00020000-\U0003134f]",
        script._CJK_RE,
    ),
    ("script._HAN_RUN_RE", r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}", script._HAN_RUN_RE),
    (
        "tokens.CJK_RANGES",
        "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
        "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]",
        re.compile(f"[{tokens.CJK_RANGES}]"),
    ),
    (
        "index._CJK_RUN",
        "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+",
        index._CJK_RUN,
    ),
    (
        "lexicon._CJK_RE",
        r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]",
        lexicon._CJK_RE,
    ),
    ("stats._CJK_RE", r"[\u3400-\u9fff\uf900-\ufaff]", stats._CJK_RE),
    ("record._HAN", r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", record._HAN),
    ("record._KANA", r"[\u3040-\u30ff\u31f0-\u31ff]", record._KANA),
    ("record._HANGUL", r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]", record._HANGUL),
    ("search._CJK_RE", "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]", search._CJK_RE),
]


@pytest.mark.parametrize(("name", "before", "now"), PAIRS, ids=[p[0] for p in PAIRS])
def test_each_regex_matches_the_code_points_it_did(name, before, now):
    assert matched(now) == matched(re.compile(before)), name


def test_the_tokenizers_still_split_the_same_characters():
    # NFKC first: the compatibility jamo ㄱㅏ compose to 가; the hexagram ䷀ is no letter.
    sample = "用Python写一个 Web Server! ひらがなカタカナ・ー 한국어 ㄱㅏ 𠀀𫠝 ䷀ ㇰ"
    assert tokens.tokenize(sample) == [
        "用",
        "python",
        "写",
        "一",
        "个",
        "web",
        "server",
        *"ひらがなカタカナ・ー한국어가𠀀𫠝ㇰ",
    ]
    assert search.tokenize("北京的人口 population") == [
        "北",
        "京",
        "人",
        "口",
        "北京",
        "京的",
        "的人",
        "人口",
        "population",
    ]


def test_the_constants_hold_what_their_names_say():
    def cps(body: str) -> frozenset[int]:
        return matched(re.compile(f"[{body}]"))

    assert cps(script.KANA_MARKS) == {0x30FB, 0x30FC} <= cps(script.KANA_BASIC)
    assert cps(script.KANA) == cps(script.KANA_BASIC) | cps(script.KANA_EXT)
    assert cps(script.HANGUL) == cps(script.HANGUL_JAMO) | cps(script.HANGUL_SYLLABLES)
    assert {ord("中"), ord("㐀"), ord("豈")} <= cps(script.HAN_BMP)
    assert {0x20000, 0x3134F} <= cps(script.HAN_EXT) and 0x31350 not in cps(script.HAN_EXT)
