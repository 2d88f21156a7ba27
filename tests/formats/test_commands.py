"""The Commands / Results grammar, including the noise of released MOSS data."""

import pytest

from datagen.errors import FormatError
from datagen.formats.commands import (
    match_results,
    parse_commands,
    parse_results,
    render_commands,
    render_results,
    salvage_commands,
    salvage_results,
    snippet_text,
)
from datagen.record import ToolCall, ToolResult


@pytest.mark.parametrize(
    ("text", "calls", "noise"),
    [
        ("None", [], []),
        ('Search("乔布斯 创办 苹果 想法")', [("Search", "乔布斯 创办 苹果 想法")], []),
        (
            'Search("q1"), Search("q2"), Calculate("6.6%-6.7%")',
            [("Search", "q1"), ("Search", "q2"), ("Calculate", "6.6%-6.7%")],
            [],
        ),
        ('Search("a"), None', [("Search", "a")], ["`None` mixed with commands"]),
        ('None, Calculate("1+1")', [("Calculate", "1+1")], ["`None` mixed with commands"]),
        ('Search("a"),Search("b")', [("Search", "a"), ("Search", "b")], ["separator ',' instead of ', '"]),
        (' Solve("x=1") ', [("Solve", "x=1")], ["surrounding whitespace"]),
        ('Search("he said "hi", then left")', [("Search", 'he said "hi", then left')], []),
        ('Calculate("sqrt((c/a)^2+(c/b)^2)")', [("Calculate", "sqrt((c/a)^2+(c/b)^2)")], []),
        ('Text2Image("a fox, holding a card")', [("Text2Image", "a fox, holding a card")], []),
    ],
)
def test_parse_commands(text, calls, noise):
    issues = []
    got = parse_commands(text, issues=issues)
    assert [(c.name, c.arg) for c in got] == calls
    assert [i.reason for i in issues] == noise
    assert all(i.noise for i in issues)
    if not noise:
        assert render_commands(got) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Commands: empty; MOSS writes `None` when there is no command"),
        (
            "Search(q)",
            "Commands: cannot parse a command at column 1: 'Search(q)' (expected Name(\"argument\") or None)",
        ),
        (
            'Search("a") Search("b")',
            "Commands: cannot parse a command at column 10: '\") Search(\"b' (missing ', '",
        ),
        ('Search("a"), ', "Commands: cannot parse a command at column 12"),
        ('search "x"', "Commands: cannot parse a command at column 1"),
        ('Search("a"), garbage', "Commands: cannot parse a command at column 14"),
    ],
)
def test_parse_commands_rejects(text, message):
    with pytest.raises(FormatError) as exc:
        parse_commands(text)
    assert str(exc.value).startswith(message)


def test_render_commands():
    assert render_commands([]) == "None"
    assert (
        render_commands([ToolCall("Search", "a"), ToolCall("Calculate", "1+2")])
        == 'Search("a"), Calculate("1+2")'
    )


CALC = [ToolCall("Calculate", "24/4")]


@pytest.mark.parametrize(
    ("segment", "calls", "expected"),
    [
        ("<|Results|>: None<eor>\n", [], []),
        ("<|Results|>:\nNone\n<eor>\n", [], []),
        (
            "<|Results|>:\nCalculate(\"24/4\") => '6.0'\n<eor>\n",
            CALC,
            [ToolResult("Calculate", "24/4", True, "6.0")],
        ),
        (
            "<|Results|>:\nCalculate(\"24/4\") => 'No result.'\n<eor>\n",
            CALC,
            [ToolResult("Calculate", "24/4", False, "No result.")],
        ),
        (
            '<|Results|>:\nSolve("x+y=500;5x+8y=4000") =>\nx = 0\ny = 500\n<eor>\n',
            [ToolCall("Solve", "x+y=500;5x+8y=4000")],
            [ToolResult("Solve", "x+y=500;5x+8y=4000", True, "x = 0\ny = 500")],
        ),
        (
            '<|Results|>:\nSolve("x=x+1") =>\nNo result.\n<eor>\n',
            [ToolCall("Solve", "x=x+1")],
            [ToolResult("Solve", "x=x+1", False, "No result.")],
        ),
        (
            "<|Results|>: Image generated successfully.<eor>\n",
            [ToolCall("Text2Image", "a fox")],
            [ToolResult("Text2Image", "a fox", True, "Image generated successfully.")],
        ),
    ],
)
def test_parse_results_roundtrip(segment, calls, expected):
    got = parse_results(segment, calls)
    assert got == expected
    plugin_style = segment != "<|Results|>: None<eor>\n"
    assert render_results(got, plugin_style) == segment


def test_search_numbering_continues_across_a_turn():
    calls = [ToolCall("Search", "a"), ToolCall("Search", "b"), ToolCall("Calculate", "29-24.7")]
    seg = (
        "<|Results|>:\n"
        "Search(\"a\") =>\n<|1|>: 'one'\n<|2|>: 'two'\n"
        "Search(\"b\") =>\n<|3|>: 'three'\n"
        "Calculate(\"29-24.7\") => '4.300000000000001'\n"
        "<eor>\n"
    )
    got = parse_results(seg, calls)
    assert [(r.name, r.first_index, r.snippets) for r in got] == [
        ("Search", 1, ["'one'", "'two'"]),
        ("Search", 3, ["'three'"]),
        ("Calculate", 1, []),
    ]
    assert got[2].output == "4.300000000000001"
    assert render_results(got, True) == seg


def test_search_snippet_with_a_real_newline_and_unclosed_quote():
    seg = '<|Results|>:\nSearch("q") =>\n<|1|>: \'cut off\ncontinued\n<|2|>: "with \'quotes\'"\n<eor>\n'
    got = parse_results(seg, [ToolCall("Search", "q")])
    assert got[0].snippets == ["'cut off\ncontinued", "\"with 'quotes'\""]
    assert render_results(got, True) == seg


def test_search_numbers_out_of_sequence_are_reported():
    issues = []
    seg = "<|Results|>:\nSearch(\"q\") =>\n<|1|>: 'a'\n<|3|>: 'b'\n<eor>\n"
    parse_results(seg, [ToolCall("Search", "q")], issues=issues)
    assert [i.reason for i in issues] == ['snippets of Search("q") are numbered [1, 3], expected [1, 2]']
    assert not issues[0].noise


def test_unquoted_calculate_failure_is_noise_and_a_failure():
    issues = []
    seg = '<|Results|>:\nCalculate("2^100") => No calculation results.\n<eor>\n'
    got = parse_results(seg, [ToolCall("Calculate", "2^100")], issues=issues)
    assert got == [ToolResult("Calculate", "2^100", False, "No calculation results.")]
    assert [(i.reason, i.noise) for i in issues] == [('Calculate("2^100") result is not quoted', True)]
    assert render_results(got, True) != seg  # canonical form quotes it; Turn.raw keeps the original


def test_results_that_do_not_echo_the_calls_still_parse():
    got = parse_results(
        "<|Results|>:\nSearch(\"other\") =>\n<|1|>: 'x'\n<eor>\n", [ToolCall("Search", "asked")]
    )
    assert [(r.name, r.arg) for r in got] == [("Search", "other")]


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("<|Results|>: None", "Tool Responses: missing end tag <eor>"),
        ("<|MOSS|>: None<eor>\n", "Tool Responses: does not start with '<|Results|>:'"),
        (
            "<|Results|>:\nstray text\nCalculate(\"1\") => '1'\n<eor>\n",
            "Tool Responses: text before the first result block: 'stray text'",
        ),
    ],
)
def test_parse_results_rejects(segment, message):
    with pytest.raises(FormatError) as exc:
        parse_results(segment, [ToolCall("Calculate", "1")])
    assert str(exc.value).startswith(message)


def test_failed_result_without_text_renders_as_no_result():
    seg = render_results([ToolResult("Solve", "x", ok=False)], True)
    assert seg == '<|Results|>:\nSolve("x") =>\nNo result.\n<eor>\n'
    assert parse_results(seg, [ToolCall("Solve", "x")])[0].ok is False


def test_snippet_text_is_python_repr_cut():
    assert snippet_text("it's\nhere") == '"it\'s\\nhere"'
    assert snippet_text("abcdef", limit=4) == "'abc"


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        (
            '1. Calculate("20/2")  # 计算半径\n2. Calculate("3.14*10**2")  # 用 Area(r) 算面积',
            [("Calculate", "20/2"), ("Calculate", "3.14*10**2")],
        ),
        ("None. 这个问题不需要工具。", []),
        ("None (This question doesn't require any tool.)\nI will answer directly.", []),
        ('Calculate("({} - 1)**2".format(14.69))', [("Calculate", '"({} - 1)**2".format(14.69)')]),
        ('Calculate(str(7*2) + "^2")', [("Calculate", 'str(7*2) + "^2"')]),
        ('Search("a")Search("b"), Count(\'x\')', [("Search", "a"), ("Search", "b"), ("Count", "x")]),
        ('Search("he said "hi (twice)", then left")', [("Search", 'he said "hi (twice)", then left')]),
        ('Search("unclosed (\nCalculate("1+1")', [("Search", '"unclosed ('), ("Calculate", "1+1")]),
    ],
)
def test_salvage_commands_recovers_the_calls_of_text_outside_the_grammar(text, calls):
    assert [(c.name, c.arg) for c in salvage_commands(text)] == calls


def test_salvage_results_finds_headers_the_grammar_refuses():
    seg = (
        "<|Results|>:\n计算结果如下：\n"
        "Calculate(\"({} - 1)**2\".format(14.69)) => '187.4161'\n"
        "Search(\"q\") =>\n<|1|>: 'a'\n<eor>\n"
    )
    got = salvage_results(
        seg, [ToolCall("Calculate", '"({} - 1)**2".format(14.69)'), ToolCall("Search", "q")]
    )
    assert [(r.name, r.arg, r.output, r.snippets) for r in got] == [
        ("", "", "计算结果如下：", []),
        ("Calculate", '"({} - 1)**2".format(14.69)', "187.4161", []),
        ("Search", "q", "", ["'a'"]),
    ]
    assert salvage_results("<|Results|>:\nNone\n<eor>\n") == []
    assert salvage_results("no tag at all", [ToolCall("Text2Image", "x")]) == [
        ToolResult("Text2Image", "x", True, "no tag at all")
    ]


def test_match_results_pairs_each_result_with_the_call_it_echoes():
    a, b, c = ToolCall("Search", "a"), ToolCall("Search", "b"), ToolCall("Calculate", "1+1")
    ra, rb, rc = (ToolResult(x.name, x.arg) for x in (a, b, c))
    assert match_results([a, b, c], [ra, rb, rc]) == [0, 1, 2]
    assert match_results([a, b, c], [rc, rb, ra]) == [2, 1, 0]  # another order
    assert match_results([a, b, c], [rb]) == [None, 0, None]  # fewer: the others are unanswered
    assert match_results([a, b], []) == [None, None]
    assert match_results([a, c], [ToolResult("Search", "other"), rc]) == [0, 1]  # same name, other argument
    assert match_results([c], [ToolResult("", "", output="2")]) == [0]  # a lone result without a header
    assert match_results([a, c], [ToolResult("", ""), ra]) == [1, 0]
