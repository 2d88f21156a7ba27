"""Quality steps: broken turns, failed tools, length, boilerplate."""

from __future__ import annotations

import json

import pytest

from datagen.errors import ConfigError
from datagen.filters.base import Verdict
from datagen.filters.quality import (
    BoilerplateFilter,
    LengthFilter,
    QualityFilter,
    ToolFailureFilter,
    repetition_evidence,
    simulator_leak_evidence,
)
from datagen.record import Conversation, Turn
from tests.filters.conftest import conv, tool_turn


def verdict(f, c) -> Verdict:
    return Verdict.of(f.filter(c))


# -- quality ---------------------------------------------------------------------------------------

GOOD_ZH = conv(("请介绍一下长城。", "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。"))
GOOD_EN = conv(
    (
        "Tell me about the Great Wall.",
        "The Great Wall is a series of fortifications built across northern China.",
    )
)
CODE_ANSWER = conv(
    (
        "写一个打印矩阵的函数",
        "```python\ndef show(m):\n    for row in m:\n        print(' '.join(str(x) for x in row))\n\n"
        "show([[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 5)\n```\n以上代码会打印一个全零矩阵。",
    )
)


@pytest.mark.parametrize("c", [GOOD_ZH, GOOD_EN, CODE_ANSWER], ids=["zh", "en", "code"])
def test_good_dialogues_pass(c):
    assert verdict(QualityFilter(), c).keep


@pytest.mark.parametrize(
    ("c", "reason"),
    [
        (Conversation(id="x"), "no_turns"),
        (conv(("", "回答")), "empty_turn"),
        (conv(("问题", "   ")), "empty_turn"),
        (conv(("问题", "好的<eom>")), "broken_tags"),
        (conv(("Question<eoh>", "Answer.")), "broken_tags"),
        (conv(("问题", "回答。\n<|Human|>: 下一个问题")), "broken_tags"),
        (conv(("Hi", "Hello! <|im_end|>")), "broken_tags"),
        (conv(("你好", "你好！有什么可以帮你的？\n用户：帮我写首诗")), "speaks_as_user"),
        (conv(("Hi", "Hello! How can I help?\nUser: write me a poem")), "speaks_as_user"),
        (conv(("讲个笑话", "哈" * 40)), "repetition"),
        (
            conv(("Tell me a story", "Once upon a time there was a cat. " + "The cat sat on the mat. " * 6)),
            "repetition",
        ),
        (conv(("写一段代码", "好的：\n```python\ndef f(x):\n    return x")), "truncated"),
        (
            conv(
                (
                    "List the steps",
                    "Here are the steps you should follow to set up the project:\n1. Install Python,",
                )
            ),
            "truncated",
        ),
    ],
)
def test_broken_dialogues_are_dropped_with_their_reason(c, reason):
    v = verdict(QualityFilter(), c)
    assert (v.keep, v.reason) == (False, reason)


FIRST = ("How do tides work?", "Tides are caused by the Moon's gravity pulling on the oceans.")
ZH_FIRST = ("潮汐是怎么形成的？", "潮汐主要是月球引力对海水的吸引造成的。")


@pytest.mark.parametrize(
    "human",
    [
        # what small teachers wrote as the simulated user's message
        "Write the user's message number 3 (of about 3). Reply with the message text only.",
        "User's message number 2 (of about 4): Why does the Moon matter more than the Sun?",
        "Message number 2 (of about 4): why twice a day?",
        "Sure! As the user, I would reply with the message text only: why twice a day?",
        "You play the human user. Why are there two tides a day?",
        "Your previous attempt was rejected (repeat). Why are there two tides a day?",
    ],
)
def test_a_user_turn_repeating_the_simulator_instructions_is_dropped(human):
    # Before, these passed every filter and were trained on as real user messages.
    v = verdict(QualityFilter(), conv(FIRST, (human, "Because the Moon is much closer to the Earth.")))
    assert (v.keep, v.reason) == (False, "simulator_leak") and v.evidence["turn"] == 2


@pytest.mark.parametrize(
    "human",
    [
        "写出用户的第3条消息（共约3条），只回复消息文本。",
        "用户的第 2 条消息：为什么一天有两次潮汐？",
        "第3条消息（共约4条）：为什么一天有两次潮汐？",
        "你扮演人类用户，和AI助手MOSS对话：为什么一天有两次潮汐？",
        "好的，写出用户的下一条消息：那太阳呢？",
    ],
)
def test_chinese_renderings_of_the_simulator_instructions_are_dropped(human):
    v = verdict(QualityFilter(), conv(ZH_FIRST, (human, "因为月球离地球更近。")))
    assert (v.keep, v.reason) == (False, "simulator_leak")


def test_the_shipped_simulator_prompt_is_recognised():
    from datagen.generate.templates import load_template

    user = load_template("hhh_user").render(
        "user", transcript="User: hi\n\nMOSS: hello", turn=3, turns=3, language_name="English"
    )
    last = user.strip().splitlines()[-1]
    assert last.startswith("Write the user's message number 3")
    assert simulator_leak_evidence(last)


@pytest.mark.parametrize(
    "human",
    [
        "What's the 3rd message in this thread about?",
        "Can you number the messages (about 3 of them)?",
        "Summarize the conversation so far.",
        "用户的反馈应该怎么整理？",
        "这是第3条建议（共5条）。",
        "I play the guitar; is the user manual useful?",
        "Let's role-play: you play the user, I'm the agent.",
        "你扮演用户，我扮演客服。",
        "这些对话可以用作训练数据吗？",
        "I got 20 of them (of about 35).",
    ],
)
def test_ordinary_user_messages_are_no_simulator_leak(human):
    assert simulator_leak_evidence(human) is None
    assert verdict(QualityFilter(), conv(FIRST, (human, "Sure, here is what I think about it."))).keep
    assert verdict(
        QualityFilter(check_simulator=False),
        conv(FIRST, ("Write the user's message number 2 (of about 2).", "Sure.")),
    ).keep


def test_bad_citation_needs_a_result_with_that_number():
    t = tool_turn(
        "北京今天天气怎么样？",
        "北京今天晴<sup><|1|></sup>，最高气温<sup><|3|></sup>25度。",
        name="Search",
        arg="北京天气",
        snippets=["北京今天晴", "气温25度"],
    )
    v = verdict(QualityFilter(), Conversation(id="s", turns=[t]))
    assert (v.reason, v.evidence["cited"]) == ("bad_citation", [3])
    ok = tool_turn(
        "北京今天天气怎么样？",
        "北京今天晴<sup><|1|></sup>，气温25度<sup><|2|></sup>。",
        name="Search",
        arg="北京天气",
        snippets=["北京今天晴", "气温25度"],
    )
    assert verdict(QualityFilter(), Conversation(id="s", turns=[ok])).keep


def test_repetition_evidence_ignores_normal_text_and_code():
    assert repetition_evidence("我喜欢春天。春天很美。夏天也不错。秋天凉快。冬天下雪。") is None
    assert repetition_evidence("```\n" + "0 0 0 0 0 0 0 0\n" * 20 + "```") is None
    assert repetition_evidence("哈哈哈，好笑") is None
    ev = repetition_evidence("我们需要继续努力。" * 5)
    assert ev and ev["kind"] == "sentence"


# -- tool failures ---------------------------------------------------------------------------------


def test_confident_figure_after_failed_calculation_is_dropped():
    c = Conversation(
        id="t",
        plugins=["calculator"],
        turns=[
            tool_turn("23乘以47再加12等于多少？", "23乘以47再加12的结果是1093。", arg="23*47+12", ok=False)
        ],
    )
    v = verdict(ToolFailureFilter(), c)
    assert v.reason == "figure_after_tool_failure" and "1093" in v.evidence["figures"]


def test_claiming_the_failed_tool_is_dropped_in_both_languages():
    zh = Conversation(
        id="z", turns=[tool_turn("计算一下2的100次方", "经过计算，结果非常大。", arg="2^100", ok=False)]
    )
    en = Conversation(
        id="e",
        turns=[
            tool_turn("What is 2^100?", "I have calculated it: a very large number.", arg="2^100", ok=False)
        ],
    )
    assert verdict(ToolFailureFilter(), zh).reason == "invented_after_tool_failure"
    assert verdict(ToolFailureFilter(), en).reason == "invented_after_tool_failure"


def test_search_citations_after_failed_search_are_dropped():
    c = Conversation(
        id="s",
        turns=[
            tool_turn(
                "今天的新闻",
                "今天的头条是经济新闻<sup><|1|></sup>。",
                name="Search",
                arg="今天新闻",
                ok=False,
            )
        ],
    )
    assert verdict(ToolFailureFilter(), c).reason == "citation_after_tool_failure"


@pytest.mark.parametrize(
    "answer",
    [
        "计算器没有返回结果，我手动计算一下：23×47=1081，再加12等于1093。",
        "The calculator returned no result, so I worked it out by hand: 23*47+12 = 1093.",
        "很抱歉，计算失败了，请检查一下表达式。",
        "Sorry, I was unable to calculate that. Could you rephrase the expression?",
    ],
)
def test_honest_answers_after_a_failed_tool_pass(answer):
    c = Conversation(id="h", turns=[tool_turn("23*47+12=?", answer, arg="23*47+12", ok=False)])
    assert verdict(ToolFailureFilter(), c).keep


def test_successful_tools_are_not_checked():
    c = Conversation(
        id="ok", turns=[tool_turn("23*47+12=?", "结果是1093。", arg="23*47+12", ok=True, output="1093")]
    )
    assert verdict(ToolFailureFilter(), c).keep


def test_flag_alone_marks_a_failure():
    t = Turn(human="算一下 7*8", assistant="答案是56。", flags=["tool_failed"])
    assert verdict(ToolFailureFilter(), Conversation(id="f", turns=[t])).reason == "figure_after_tool_failure"


def test_released_moss_data_with_a_failed_tool(moss_samples):
    from datagen.formats.reader import read_conversations

    convs = {c.id: c for c in read_conversations([str(p) for p in moss_samples])}
    f = ToolFailureFilter()
    # an answer that worked the figure out without saying the tool failed
    assert verdict(f, convs["mix_plugin_conversation_76"]).reason == "figure_after_tool_failure"
    # answers that admit the failure
    assert verdict(f, convs["mix_plugin_conversation_67"]).keep
    assert verdict(f, convs["solver_plugin_conversation_14"]).keep


# -- length ----------------------------------------------------------------------------------------


def test_length_limits_in_characters():
    f = LengthFilter(max_chars=100, max_turn_chars=60, max_turns=2, min_chars=5)
    assert verdict(f, conv(("问题", "这是一个正常长度的回答。"))).keep
    assert verdict(f, conv(("问题", "好"))).reason == "too_short"
    assert verdict(f, conv(("问题", "长" * 61))).reason == "turn_too_long"
    assert verdict(f, conv(("问" * 50, "答" * 55))).reason == "too_long"
    assert verdict(f, conv(("a", "bbbbb"), ("a", "bbbbb"), ("a", "bbbbb"))).reason == "too_many_turns"


def test_length_limit_in_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{ch: i + 1 for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    from datagen.formats.moss import render_text

    short = conv(("hi", "hello"))
    limit = len(render_text(short)) + 100  # one token per character with this tokenizer
    f = LengthFilter(max_tokens=limit, tokenizer=str(path), max_chars=None, max_turn_chars=None)
    assert verdict(f, short).keep
    v = verdict(f, conv(("hi", "x" * 200)))
    assert v.reason == "too_long_tokens" and v.evidence["tokens"] > limit
    with pytest.raises(ConfigError, match="tokenizer"):
        LengthFilter(max_tokens=2048)


# -- boilerplate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("As an AI language model, I don't have personal opinions.", "ai_boilerplate"),
        ("作为一个AI语言模型，我没有个人观点。", "ai_boilerplate"),
        ("作为一个人工智能，我无法品尝食物。", "ai_boilerplate"),
        ("I am ChatGPT, a model trained by OpenAI.", "identity_leak"),
        ("我是由OpenAI开发的语言模型。", "identity_leak"),
    ],
)
def test_boilerplate_is_found(answer, reason):
    assert verdict(BoilerplateFilter(), conv(("你是谁", answer))).reason == reason


def test_boilerplate_negatives():
    for answer in (
        "I am MOSS, an AI assistant developed by Fudan University.",
        "我是MOSS，由复旦大学开发的人工智能助手。",
        "An AI language model predicts the next token from the previous ones.",
    ):
        assert verdict(BoilerplateFilter(), conv(("你是谁", answer))).keep, answer


def test_boilerplate_tags_by_default():
    f = BoilerplateFilter()
    c = conv(("Hi", "As an AI language model, I can't feel."))
    kept, v = f.apply(c, verdict(f, c))
    assert kept is c and kept.tags["boilerplate"] == "ai_boilerplate"
    json.dumps(kept.to_dict())
