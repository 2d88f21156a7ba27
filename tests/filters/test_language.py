"""Language detection: script first, a seeded detector only where script cannot decide."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.filters.base import Verdict
from datagen.filters.language import LanguageFilter
from datagen.text.language import detect_dialogue, detect_language, detect_language_tag, detect_turn
from datagen.text.script import detect_script_variant, strip_non_language
from tests.filters.conftest import conv

DATA = Path(__file__).parent / "data" / "language_turns.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def _correct(row: dict, language: str, variant: str | None) -> bool:
    label = row["label"]
    if label is None:
        return False
    if label.startswith("zh"):
        return language == "zh" and variant in (None, label)
    return language == label


def test_labelled_set_is_big_and_diverse():
    rows = _rows()
    kinds = Counter(r["kind"] for r in rows)
    labels = Counter(r["label"] for r in rows)
    assert len(rows) >= 400
    assert labels["zh-Hans"] >= 100 and labels["zh-Hant"] >= 50 and labels["en"] >= 100 and labels["ja"] >= 40
    assert kinds["code_only"] >= 15 and kinds["short"] >= 20 and kinds["code_mixed"] + kinds["mixed"] >= 30


def test_accuracy_on_turns_with_a_verdict_is_at_least_99_percent():
    rows = _rows()
    judged = wrong = 0
    errors = []
    for r in rows:
        v = detect_turn(r["text"])
        if v.language is None:
            continue
        judged += 1
        if not _correct(r, v.language, v.variant):
            wrong += 1
            errors.append((r["label"], v.language, v.variant, r["text"][:60]))
    assert judged >= 0.85 * len(rows), "too many turns without a verdict"
    assert (judged - wrong) / judged >= 0.99, errors


def test_traditional_and_simplified_are_told_apart_by_characters():
    rows = [r for r in _rows() if r["label"] in ("zh-Hans", "zh-Hant") and r["kind"] == "sentence"]
    decided = [(r["label"], detect_script_variant(r["text"])) for r in rows]
    decided = [(lab, var) for lab, var in decided if var is not None]
    assert len(decided) >= 0.9 * len(rows)
    assert sum(lab == var for lab, var in decided) / len(decided) >= 0.99


def test_code_only_turns_get_no_verdict():
    rows = [r for r in _rows() if r["kind"] == "code_only"]
    assert all(detect_language(r["text"]) is None for r in rows), [
        (r["text"][:40], detect_language(r["text"])) for r in rows if detect_language(r["text"])
    ]


@pytest.mark.parametrize("text", ["好的", "谢谢", "OK", "Thanks!", "嗯", "yes", "👍", "123"])
def test_very_short_turns_get_no_verdict(text):
    assert detect_language(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("請問這個問題怎麼解決？我已經試了很多方法。", "zh-Hant"),
        ("请问这个问题怎么解决？我已经试了很多方法。", "zh-Hans"),
        ("日本語の勉強を始めたばかりです。", "ja"),
        ("東京大学に行きます。", "ja"),
        ("日语中的ありがとう是什么意思？", "zh-Hans"),  # a Japanese word quoted in Chinese
        ("What does 你好 mean in Chinese?", "en"),  # a Chinese word quoted in English
        ("请解释一下 async/await 在 JavaScript 中的工作原理", "zh-Hans"),
        ("안녕하세요, 만나서 반갑습니다. 잘 부탁드립니다.", "ko"),
    ],
)
def test_mixed_script_turns(text, expected):
    assert detect_language_tag(text) == expected


def test_traditional_chinese_is_never_korean():
    # langdetect alone calls most Traditional Chinese `ko`
    rows = [r for r in _rows() if r["label"] == "zh-Hant"]
    assert not [r["text"] for r in rows if detect_language(r["text"]) == "ko"]


def test_answers_are_deterministic():
    text = "Explain quicksort algorithm complexity quickly please now"
    assert len({detect_language(text) for _ in range(20)}) == 1


def test_strip_removes_code_urls_numbers_and_formulas():
    text = "看这里 https://example.com/a?b=1 ```python\nprint('hello world')\n``` 公式 $x^2$ 数字 12345"
    stripped = strip_non_language(text)
    for gone in ("https", "print", "hello", "x^2", "12345"):
        assert gone not in stripped
    assert "看这里" in stripped


def test_strip_removes_email_addresses_but_not_their_neighbours():
    stripped = strip_non_language("请联系 ann.lee+moss@mail.example.com 或者 bob@example.org，谢谢")
    assert "ann" not in stripped and "example" not in stripped and "bob" not in stripped
    assert "请联系" in stripped and "谢谢" in stripped


# A generous bound: linear scans take well under a second; the quadratic e-mail pattern took 91 s.
@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("中" * 200_000, "zh"),
        ("中" * 100_000 + "@" + "中" * 100_000, "zh"),
    ],
)
def test_long_runs_of_word_characters_are_detected_in_linear_time(text, expected):
    assert detect_language(text) == expected


@pytest.mark.timeout(20)
def test_a_long_latin_run_keeps_its_text_and_loses_the_address():
    run = "x" * 200_000
    stripped = strip_non_language(f"{run}. Write to ann@example.com or {run}@nowhere")
    assert stripped.count(run) == 2 and "ann" not in stripped and "example.com" not in stripped


def test_code_heavy_answer_is_judged_by_its_prose():
    code = (
        "```python\n"
        + "\n".join(f"def function_{i}(value):\n    return value * {i}" for i in range(30))
        + "\n```"
    )
    assert detect_language("下面是实现代码，每个函数返回输入乘以一个常数：\n" + code) == "zh"
    assert (
        detect_language("Here is the code; each function multiplies its input by a constant:\n" + code)
        == "en"
    )


def test_dialogue_language_is_weighted_by_length():
    c = conv(
        ("好的", "Here is a long English answer about the history of the Roman Empire and its fall."),
        ("ok", "Sure, the empire split into east and west and the western half fell in 476."),
    )
    d = detect_dialogue(c)
    assert d.language == "en"
    assert d.verdicts[0][1].language is None  # "好的" is too short to judge on its own


def test_drift_is_flagged_except_when_switching_or_translating():
    drift = conv(
        (
            "请介绍一下北京的历史和文化。",
            "Beijing has a history of over three thousand years and was the capital of many dynasties.",
        )
    )
    assert detect_dialogue(drift).drift_turns == [1]
    switching = conv(*drift_pairs(drift), category="switching")
    assert not detect_dialogue(switching).drift
    translate = conv(
        (
            "请把这句话翻译成英文：今天天气很好，我们去公园散步吧。",
            "The weather is nice today, let's go for a walk in the park.",
        )
    )
    assert not detect_dialogue(translate).drift


def drift_pairs(c):
    return [(t.human, t.assistant) for t in c.turns]


def test_language_filter_reasons_and_language_field():
    f = LanguageFilter(languages=["zh", "en"])
    fr = conv(
        ("Bonjour, pouvez-vous m'aider à écrire une lettre ?", "Bien sûr, voici une lettre pour vous aider.")
    )
    v = Verdict.of(f.filter(fr))
    assert (v.keep, v.reason) == (False, "language_fr")
    zh = conv(("請問台北有哪些好玩的地方？", "台北有很多好玩的地方，例如故宮博物院、士林夜市和陽明山。"))
    v = Verdict.of(f.filter(zh))
    assert v.keep and v.updates == {"language": "zh-Hant"}
    drift = conv(
        (
            "请介绍一下北京的历史和文化。",
            "Beijing has a history of over three thousand years and many palaces.",
        )
    )
    v = Verdict.of(f.filter(drift))
    assert (v.keep, v.reason) == (False, "language_drift")
    assert v.evidence["turns"] == [{"turn": 1, "human": "zh", "assistant": "en"}]
    only_hant = LanguageFilter(languages=["zh-Hant"])
    assert not Verdict.of(
        only_hant.filter(conv(("请问北京有哪些好玩的地方？", "北京有故宫、长城和颐和园等景点。")))
    ).keep


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Chinese framing a quoted (or bare) Japanese / Korean word
        ("韩语里的“감사합니다”怎么发音?", "zh"),
        ("감사합니다 和 고맙습니다 有什么区别?", "zh"),
        ("日语「いただきます」是吃饭前说的话吗?", "zh"),
        ("請問日文的「おはよう」是什麼意思?", "zh"),
        ("안녕하세요 是什麼意思?", "zh"),
        # ... and the other way round, and Han that is no Chinese
        ("中国語の「你好」はどういう意味ですか?", "ja"),
        ("経済学的な観点から見ると、この政策は効果的だと思います。", "ja"),
        ("중국어로 '你好'는 무슨 뜻인가요?", "ko"),
        ("大韓民國의 首都는 서울입니다.", "ko"),
        # Chinese naming English terms vs English prose naming Chinese words
        ("npm install 的时候一直卡在 resolving dependencies 怎么办", "zh"),
        ("我用的是 Ubuntu 22.04, Python 3.10, CUDA 11.8, 报错 CUDA out of memory", "zh"),
        ("In Chinese, 我是中国人 means I am Chinese.", "en"),
        ("My favourite dishes are 宫保鸡丁, 麻婆豆腐 and 红烧肉.", "en"),
        ("In Japanese, you say ありがとうございます to thank someone politely.", "en"),
        # quotes and apostrophes in Latin text
        ("Don't worry, it's fine: the users' data is safe and 'backup' runs nightly.", "en"),
        ('He said "Je ne sais pas" and walked away from the meeting.', "en"),
    ],
)
def test_the_language_that_frames_a_mixed_turn_decides(text, expected):
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Jak mogę nauczyć się programowania w Pythonie w ciągu miesiąca?", "pl"),
        ("Jak se mohu naučit programovat v Pythonu za jeden měsíc?", "cs"),
        ("Làm thế nào để học tiếng Anh hiệu quả hơn mỗi ngày?", "vi"),
        ("Bagaimana cara belajar bahasa Inggris dengan cepat di rumah?", "id"),
        ("Miten voin parantaa englannin kielen ääntämistäni nopeasti?", "fi"),
        ("İngilizce telaffuzumu nasıl geliştirebilirim, bana yardım eder misin?", "tr"),
        ("Hvordan kan jeg lære at spille guitar hurtigt derhjemme?", "da"),
        ("Kan du hjälpa mig att skriva ett brev till min hyresvärd?", "sv"),
        # foreign names and pinyin in English stay English
        ("She moved from Kraków to Łódź last year and loves it there.", "en"),
        ("I love Dvořák's symphonies and Chopin's nocturnes.", "en"),
        ("Nǐ hǎo means hello; xièxie means thank you in Mandarin.", "en"),
    ],
)
def test_latin_languages_outside_the_vote_are_named_not_defaulted_to_english(text, expected):
    assert detect_language(text) == expected


def test_tracebacks_and_log_lines_carry_no_language():
    trace = (
        'Traceback (most recent call last):\n  File "app.py", line 7, in <module>\n    main()\n'
        "KeyError: 'user_id'"
    )
    assert detect_language(trace) is None
    assert (
        detect_language(
            "[2024-01-01 10:00:00] INFO Server started on port 8080\n"
            "[2024-01-01 10:00:01] WARN Disk usage at 91%"
        )
        is None
    )
    assert (
        detect_language(
            "java.lang.NullPointerException: Cannot invoke a method on null\n"
            "    at com.example.App.main(App.java:5)"
        )
        is None
    )
    assert detect_language("运行的时候报错:\n" + trace + "\n这是什么原因?") == "zh"
    assert detect_language("I got this error when I start the app:\n" + trace + "\nHow can I fix it?") == "en"
    assert detect_language("Error handling is an important part of writing robust software.") == "en"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("今天的平均价格是多少", "zh-Hans"),  # 价格 -> 價格 only at phrase level
        ("面包店在哪里", "zh-Hans"),  # 面包 -> 麵包, 哪里 -> 哪裏
        ("所以答案是", None),  # nothing tells the variants apart
        ("他去了公司後面", "zh-Hant"),
    ],
)
def test_variant_falls_back_to_opencc_phrases_when_characters_are_silent(text, expected):
    assert detect_script_variant(text) == expected
