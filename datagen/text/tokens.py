"""Token streams shared by the filters: one token per Han/kana/Hangul character, lower-cased words
for everything else (Latin, Cyrillic, digits).

Whitespace tokenizers see a Chinese sentence as one token and `rouge_score`'s default tokenizer
deletes every Chinese character, so every text comparison in datagen (MinHash shingles, ROUGE-L)
goes through `tokenize`.
"""

from __future__ import annotations

import re
import unicodedata

from datagen.text.script import HAN_BMP, HAN_EXT, HANGUL, KANA

#: The scripts written without spaces, one token per character.
CJK_RANGES = HAN_BMP + HAN_EXT + KANA + HANGUL

_TOKEN_RE = re.compile(rf"[{CJK_RANGES}]|[^\W_{CJK_RANGES}]+")


def tokenize(text: str) -> list[str]:
    """Split text into datagen's mixed token stream (NFKC, lower-cased).

    >>> tokenize("用Python写一个 Web Server!")
    ['用', 'python', '写', '一', '个', 'web', 'server']
    """
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())


def shingles(tokens: list[str], n: int) -> list[str]:
    """Contiguous n-grams of tokens joined by a space (the tokens themselves when n == 1; the whole
    stream as one shingle when it is shorter than n)."""
    if n <= 1 or len(tokens) <= n:
        return tokens if n <= 1 else ([" ".join(tokens)] if tokens else [])
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class CJKTokenizer:
    """`tokenize` wrapped in the interface `rouge_score.rouge_scorer.RougeScorer(tokenizer=...)` expects,
    so the Self-Instruct baseline and datagen's ROUGE-L option see the same tokens."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)
