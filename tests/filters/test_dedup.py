"""Exact and near-duplicate detection, streaming, in Chinese and English."""

from __future__ import annotations

import random

import pytest

from datagen.errors import ConfigError
from datagen.filters.base import Verdict
from datagen.filters.dedup import ExactDedupFilter, NearDedupFilter
from datagen.text.exact import ExactIndex, dialogue_hash, normalize_text, prompt_hash, text_hash
from datagen.text.neardup import NearDupIndex, rouge_l, rouge_string
from datagen.text.tokens import tokenize
from tests.filters.conftest import conv

# -- exact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Hello, World!", "hello world"),
        ("ＨＥＬＬＯ　ｗｏｒｌｄ", "hello world"),  # full-width letters and space
        ("你好，世界。", "你好世界"),
        ("  写一首诗  \n\n关于春天 ", "写一首诗 关于春天"),
        ("「引号」《书名》", "引号书名"),
    ],
)
def test_normalize_text_folds_form_not_content(a, b):
    assert normalize_text(a) == normalize_text(b)
    assert text_hash(a) == text_hash(b)


def test_normalize_text_keeps_different_words_apart():
    assert text_hash("写一首关于春天的诗") != text_hash("写一首关于秋天的诗")
    assert text_hash("hello world") != text_hash("helloworld")


def test_exact_index_returns_first_key():
    idx = ExactIndex()
    assert idx.check_and_add("a", 1) is None
    assert idx.check_and_add("b", 1) == "a"
    assert idx.check_and_add("c", 2) is None
    assert len(idx) == 2


def test_exact_dedup_filter_prompt_and_dialogue_units():
    f = ExactDedupFilter()
    rows = [
        conv(("写一首诗", "春风又绿江南岸。"), id="a"),
        conv(("写一首诗！", "春风又绿江南岸"), id="b"),  # same dialogue after folding
        conv(("写一首诗", "床前明月光。"), id="c"),  # same prompt, other answer
        conv(("Write a poem", "Roses are red."), id="d"),
    ]
    verdicts = f.decide_batch([(c, f.prepare(c)) for c in rows])
    assert [v.keep for v in verdicts] == [True, False, False, True]
    assert (verdicts[1].reason, verdicts[1].duplicate_of) == ("duplicate_dialogue", "a")
    assert (verdicts[2].reason, verdicts[2].duplicate_of) == ("duplicate_prompt", "a")
    only_dialogue = ExactDedupFilter(units=["dialogue"])
    assert [v.keep for v in only_dialogue.decide_batch([(c, None) for c in rows])] == [
        True,
        False,
        True,
        True,
    ]


def test_hashes_see_turn_boundaries():
    a = conv(("问题", "回答 一"), ("追问", "回答 二"))
    b = conv(("问题", "回答 一 追问"), ("", "回答 二"))
    assert dialogue_hash(a) != dialogue_hash(b)
    assert prompt_hash(a) == prompt_hash(b)


# -- tokens and ROUGE-L ---------------------------------------------------------------------------


def test_tokens_keep_chinese_one_per_character():
    assert tokenize("用Python写一个Web服务") == ["用", "python", "写", "一", "个", "web", "服", "务"]


def test_rouge_l_is_the_f_measure_of_the_lcs():
    # LCS of 写一首关于X天的诗 (9 tokens each) is 8 -> F = 2*8/18
    assert rouge_l("写一首关于春天的诗", "写一首关于秋天的诗") == pytest.approx(16 / 18)
    # English: "how do i sort a list" vs "how can i sort a list": LCS 5 of 6 and 6
    assert rouge_l("How do I sort a list?", "how can I sort a list") == pytest.approx(10 / 12)
    assert rouge_l("", "anything") == 0.0
    assert rouge_string("中文 text") != ""  # Chinese is not deleted


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _pool_filter(texts: list[str], threshold: float) -> list[bool]:
    kept: list[list[str]] = []
    keep = []
    for t in texts:
        toks = tokenize(t)
        best = max((2 * _lcs(toks, o) / (len(toks) + len(o)) for o in kept if toks and o), default=0.0)
        keep.append(best <= threshold)
        if best <= threshold:
            kept.append(toks)
    return keep


def _near_dup_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    zh = [
        "写一篇关于{}的文章",
        "请解释{}的基本原理",
        "如何学好{}？",
        "给我推荐几本关于{}的书",
        "{}未来的发展趋势是什么？",
    ]
    en = [
        "Write an essay about {}",
        "Explain the basics of {}",
        "How do I get better at {}?",
        "Recommend books on {}",
    ]
    topics = [
        "人工智能",
        "量子计算",
        "中国历史",
        "古典音乐",
        "机器学习",
        "cooking",
        "chess",
        "photography",
        "astronomy",
    ]
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.4:
            t = rng.choice(out)
            t = rng.choice(["请", "帮我", "Please ", ""]) + t + rng.choice(["", "，谢谢", " in detail", "。"])
        else:
            t = rng.choice(zh + en).format(rng.choice(topics) + rng.choice(["", "的应用", " basics", "史"]))
        out.append(t)
    return out


def test_rouge_option_makes_the_pool_filters_decisions():
    texts = _near_dup_prompts(300, seed=3)
    expected = _pool_filter(texts, 0.7)
    idx = NearDupIndex("prompt", method="rouge", threshold=0.7)
    got = [d is None for d in idx.check_and_add_many([str(i) for i in range(len(texts))], texts)]
    agree = sum(a == b for a, b in zip(expected, got, strict=True)) / len(texts)
    assert 0 < sum(expected) < len(texts)  # the set has both kinds
    assert agree >= 0.99


# -- MinHash index ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("写一首关于春天的诗，要求押韵", "写一首关于春天的诗，要押韵"),
        ("请解释一下量子计算的基本原理", "请解释量子计算的基本原理。"),
        ("How do I sort a list in Python?", "how can I sort a list in python"),
        (
            "Write a short story about a brave little dog",
            "Please write a short story about a brave little dog.",
        ),
        ("請解釋一下量子計算的基本原理", "請解釋量子計算的基本原理"),
    ],
)
def test_near_duplicates_are_caught(first, second):
    idx = NearDupIndex("prompt")
    assert idx.check_and_add("a", first) is None
    assert idx.check_and_add("b", second) == "a"
    assert len(idx) == 1  # the duplicate was not added


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("写一首关于春天的诗", "解释一下相对论的基本内容"),
        ("How do I sort a list in Python?", "What is the capital of France?"),
        ("我爱你", "你爱我吗？我们什么时候见面"),
        ("Explain photosynthesis", "解释光合作用"),
    ],
)
def test_distinct_prompts_are_kept(first, second):
    idx = NearDupIndex("prompt")
    assert idx.check_and_add("a", first) is None
    assert idx.check_and_add("b", second) is None
    assert len(idx) == 2


def test_query_does_not_add_and_add_does_not_check():
    idx = NearDupIndex("prompt")
    idx.add("a", "写一首关于春天的诗")
    assert idx.query("写一首关于春天的诗。") == "a"
    assert len(idx) == 1
    idx.add("b", "写一首关于春天的诗")
    assert len(idx) == 2


def test_empty_texts_never_match():
    idx = NearDupIndex("prompt")
    assert idx.check_and_add("a", "") is None
    assert idx.check_and_add("b", "") is None
    assert idx.check_and_add("c", "!!!") is None


def test_dialogue_unit_defaults():
    idx = NearDupIndex("dialogue")
    assert (idx.ngram, idx.threshold) == (3, 0.7)
    long = "机器学习是人工智能的一个分支，它让计算机从数据中学习规律，而不是依靠人写好的规则。" * 3
    assert idx.check_and_add("a", long) is None
    assert idx.check_and_add("b", long.replace("规律", "模式", 1)) == "a"


def test_stream_with_workers_matches_serial_run():
    texts = _near_dup_prompts(400, seed=5)
    items = [(str(i), t) for i, t in enumerate(texts)]
    serial = list(NearDupIndex("prompt").check_and_add_stream(items, workers=1, chunk_size=64))
    parallel = list(NearDupIndex("prompt").check_and_add_stream(items, workers=2, chunk_size=64))
    assert serial == parallel
    assert any(d is not None for _, d in serial)


def test_bad_parameters_raise_config_errors():
    with pytest.raises(ConfigError, match="unit"):
        NearDupIndex("paragraph")
    with pytest.raises(ConfigError, match="method"):
        NearDupIndex(method="simhash")
    with pytest.raises(ConfigError, match="threshold"):
        NearDupIndex(threshold=1.5)


def test_near_dedup_filter_records_the_duplicated_row():
    f = NearDedupFilter()
    rows = [
        conv(("写一首关于春天的诗，要求押韵", "好的……"), id="first"),
        conv(("写一首关于春天的诗，要押韵", "春天来了……"), id="second"),
    ]
    verdicts = f.decide_batch(list(zip(rows, f.prepare_batch(rows), strict=True)))
    assert verdicts[0].keep
    assert isinstance(verdicts[1], Verdict)
    assert (verdicts[1].reason, verdicts[1].duplicate_of) == ("near_duplicate", "first")
