"""Parsers of teacher output: numbered prompt batches, chat replies, tool plans."""

import pytest

from datagen.generate.parsing import (
    chinese_numeral,
    clean_reply,
    commands_complete,
    echoes_prompt,
    parse_calls,
    parse_numbered_list,
    parse_plan,
    prompt_fragments,
)
from datagen.record import ToolCall


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. Write a poem.\n2. Explain gravity.", ["Write a poem.", "Explain gravity."]),
        ("1) Write a poem.\n2) Explain gravity.", ["Write a poem.", "Explain gravity."]),
        ("(1) Write a poem.\n(2) Explain gravity.", ["Write a poem.", "Explain gravity."]),
        ("（1）写一首诗。\n（2）解释引力。", ["写一首诗。", "解释引力。"]),
        ("一、写一首诗。\n二、解释引力。\n三、推荐一本书。", ["写一首诗。", "解释引力。", "推荐一本书。"]),
        ("1、写一首诗。\n2、解释引力。", ["写一首诗。", "解释引力。"]),
        ("1．写一首诗。\n2．解释引力。", ["写一首诗。", "解释引力。"]),
        ("1：写一首诗。\n2：解释引力。", ["写一首诗。", "解释引力。"]),
        ("第1条：写一首诗。\n第2条：解释引力。", ["写一首诗。", "解释引力。"]),
        ("**1.** Write a poem.\n**2.** Explain gravity.", ["Write a poem.", "Explain gravity."]),
        ("Prompt 1: Write a poem.\nPrompt 2: Explain gravity.", ["Write a poem.", "Explain gravity."]),
        ('1. "Write a poem."\n2. “解释引力。”', ["Write a poem.", "解释引力。"]),
        ("1. 指令：写一首诗。\n2. Prompt: Explain gravity.", ["写一首诗。", "Explain gravity."]),
    ],
)
def test_numbering_styles(text, expected):
    assert parse_numbered_list(text) == expected


def test_preamble_blank_lines_and_signoff_are_dropped():
    text = (
        "Sure! Here are 3 new prompts in Chinese:\n\n1. 如何提高写作水平？\n\n2. 推荐几本科幻小说。\n\n"
        "3. 用Python写一个冒泡排序。\n\n希望这些对你有帮助！如需更多请告诉我。"
    )
    assert parse_numbered_list(text) == [
        "如何提高写作水平？",
        "推荐几本科幻小说。",
        "用Python写一个冒泡排序。",
    ]


def test_multiline_item_keeps_nested_numbering_and_code():
    text = (
        "1. Fix this function:\n```python\ndef f(x):\n\n    return x +\n```\n"
        "2. Plan a trip with these steps:\n   1. book flights\n   2. pick hotels\n3. Name three rivers."
    )
    items = parse_numbered_list(text)
    assert len(items) == 3
    assert "def f(x):" in items[0] and items[0].endswith("```")
    assert "1. book flights" in items[1] and "2. pick hotels" in items[1]
    assert items[2] == "Name three rivers."


def test_truncated_last_item_is_dropped_only_when_truncated():
    text = "1. Write a haiku about rain.\n2. Explain how vaccines work.\n3. Describe the history of the"
    assert parse_numbered_list(text)[-1] == "Describe the history of the"
    assert parse_numbered_list(text, truncated=True) == [
        "Write a haiku about rain.",
        "Explain how vaccines work.",
    ]


def test_numbers_must_follow_each_other():
    # "3." after "1." is not the next item, so it stays inside item 1
    assert parse_numbered_list("1. Compute 2+2.\n3. is odd\n2. Name a fruit.") == [
        "Compute 2+2.\n3. is odd",
        "Name a fruit.",
    ]


def test_bullets_when_no_numbers_and_nothing_when_no_list():
    assert parse_numbered_list("- Write a poem.\n* Explain gravity.") == ["Write a poem.", "Explain gravity."]
    assert parse_numbered_list("I cannot help with that.") == []
    assert parse_numbered_list("") == []


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("一", 1),
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("九十九", 99),
        ("两", 2),
        ("一百", None),
        ("abc", None),
    ],
)
def test_chinese_numeral(text, n):
    assert chinese_numeral(text) == n


@pytest.mark.parametrize(
    ("raw", "role", "expected"),
    [
        ("MOSS: Hello!", "assistant", "Hello!"),
        ("<|MOSS|>: Hello!<eom>", "assistant", "Hello!"),
        ("Assistant: **Hello!**", "assistant", "**Hello!**"),
        ("Hello!<|im_end|>", "assistant", "Hello!"),
        ("Sure, here it is.\nUser: thanks\nMOSS: welcome", "assistant", "Sure, here it is."),
        ("用户：那我该怎么办？", "user", "那我该怎么办？"),
        ('Human: "What about cats?"', "user", "What about cats?"),
        ("<|Human|>: And then?<eoh>", "user", "And then?"),
        ("Why?\nMOSS: Because.", "user", "Why?"),
    ],
)
def test_clean_reply(raw, role, expected):
    assert clean_reply(raw, role=role) == (expected, None)


@pytest.mark.parametrize("raw", ["", None, "   ", "<eom>", "MOSS:  "])
def test_clean_reply_rejects_empty(raw):
    assert clean_reply(raw) == ("", "empty_reply")


def test_parse_plan_strict_format():
    plan, why = parse_plan('Inner Thoughts: I need to compute this.\nCommands: Calculate("23*47+12")')
    assert why is None
    assert plan.thoughts == "I need to compute this."
    assert plan.calls == [ToolCall("Calculate", "23*47+12")]


def test_parse_plan_tolerates_moss_tags_fences_and_single_quotes():
    text = "```\n<|Inner Thoughts|>: 需要搜索<eot>\n<|Commands|>: Search(\"北京天气\"), Search('上海天气')<eoc>\n```"
    plan, why = parse_plan(text, allowed={"Search"})
    assert why is None and plan.thoughts == "需要搜索"
    assert [c.arg for c in plan.calls] == ["北京天气", "上海天气"]


def test_parse_plan_none_and_disallowed():
    plan, _ = parse_plan("Inner Thoughts: None\nCommands: None")
    assert plan.thoughts is None and plan.calls == []
    plan, _ = parse_plan('Inner Thoughts: x\nCommands: Solve("x+1=2"), Foo("y")', allowed={"Calculate"})
    assert plan.calls == [] and plan.dropped == ['Solve("x+1=2")', 'Foo("y")']


def test_parse_plan_bare_calls_and_failures():
    plan, why = parse_plan("Calculate(2+3*(4-1))")
    assert why is None and plan.calls == [ToolCall("Calculate", "2+3*(4-1)")]
    assert parse_plan("") == (None, "empty_reply")
    assert parse_plan("I think the answer is 42.") == (None, "no_commands_line")


def test_parse_plan_ignores_commentary_after_commands():
    plan, _ = parse_plan(
        'Inner Thoughts: t\nCommands: Calculate("1+1")\n\nNote: I could also Calculate("2+2").'
    )
    assert plan.calls == [ToolCall("Calculate", "1+1")]


def test_parse_calls_normalises_names_and_quotes():
    calls, dropped = parse_calls('calculate("2*3"), text2image("a red fox"), SEARCH(“天气”)')
    assert calls == [
        ToolCall("Calculate", "2*3"),
        ToolCall("Text2Image", "a red fox"),
        ToolCall("Search", "天气"),
    ]
    assert dropped == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The conversation so far:\nUser: I want more tips.", "I want more tips."),
        ("User: old question\n\nMOSS: old answer\n\nUser: a new question?", "a new question?"),
    ],
)
def test_clean_user_reply_drops_an_echoed_transcript(raw, expected):
    assert clean_reply(raw, role="user") == (expected, None)


def test_parse_plan_stops_at_the_next_labelled_part():
    # a small model continuing the few-shot pattern after its commands
    text = 'Inner Thoughts: t\nCommands: Search("Nile length")\nMessage: How long is the Amazon?\nCommands: Search("x")'
    plan, _ = parse_plan(text, allowed={"Search"})
    assert plan.calls == [ToolCall("Search", "Nile length")]


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ('Inner Thoughts: t\nCommands: Search("a")\nMessage: more', True),
        ("Inner Thoughts: t\nCommands: None\n", True),
        ('<|Inner Thoughts|>: t<eot>\n<|Commands|>: Search("a")<eoc>', True),
        ('Inner Thoughts: t\nCommands: Search("a"), Sear', False),
        ('Inner Thoughts: t\nCommands: Search("a")', False),
        ("Inner Thoughts: the user wants", False),
    ],
)
def test_commands_complete(text, complete):
    assert commands_complete(text) is complete


@pytest.mark.parametrize(
    "prefix", ["MOSS's answer: ", "MOSS’s reply to the user: ", "**Assistant's response:** "]
)
def test_clean_reply_strips_possessive_labels(prefix):
    assert clean_reply(prefix + "It is 42.") == ("It is 42.", None)


def test_prompt_fragments_and_echoes():
    fragments = prompt_fragments(
        "$meta\nYou are MOSS. Answer from $results only.\n- Tool results:\n$results\nOK $x",
        "Costs $$5 in total",
    )
    assert fragments == ["You are MOSS. Answer from", "Tool results:", "Costs $5 in total"]
    assert echoes_prompt("Sure. Tool results: 42", fragments) == "Tool results:"
    assert echoes_prompt("Based on the tool results: 42", fragments) is None  # prose, lower case


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        # Before, every `**` was deleted as Markdown bold: 2**10 was stored as 210 and x**2 as x2,
        # wrong results kept as successes.
        ('Inner Thoughts: compute it\nCommands: Calculate("2**10")', [ToolCall("Calculate", "2**10")]),
        ('**Inner Thoughts:** solve it\n**Commands:** Solve("x**2-4=0")', [ToolCall("Solve", "x**2-4=0")]),
        ("Inner Thoughts: t\nCommands: **Calculate('3**2+1')**", [ToolCall("Calculate", "3**2+1")]),
        ("Inner Thoughts: t\nCommands: Calculate(2**10)", [ToolCall("Calculate", "2**10")]),
        (
            '<|Inner Thoughts|>: t<eot>\n<|Commands|>: Calculate("2**3"), Search("**bold** words")<eoc>',
            [ToolCall("Calculate", "2**3"), ToolCall("Search", "**bold** words")],
        ),
        ('Calculate("1.05**12")', [ToolCall("Calculate", "1.05**12")]),
    ],
)
def test_parse_plan_keeps_double_stars_inside_arguments(text, calls):
    plan, why = parse_plan(text)
    assert why is None and plan.calls == calls
    assert plan.thoughts is None or "**" not in plan.thoughts


def test_bold_is_still_stripped_outside_the_calls():
    plan, _ = parse_plan(
        '**Inner Thoughts**: I need **the power** (of two)\n**Commands**: Calculate("2**10")'
    )
    assert plan.thoughts == "I need the power (of two)"
    assert plan.calls == [ToolCall("Calculate", "2**10")]
    assert commands_complete('**Inner Thoughts:** t\n**Commands:** Calculate("2**10")\n**Note**: done')
