"""The planning call of plugin dialogues (plugin_commands v2: worked examples, the message and the
format in the final user message) and how cut-off or unusable replies are handled, against the fake
teacher server (real HTTP, engine, tools and parsers)."""

from __future__ import annotations

import json

import pytest

from datagen.errors import ConfigError
from datagen.generate.common import PromptRow
from datagen.generate.config import DialogueConfig
from datagen.generate.dialogues import generate_dialogues
from datagen.generate.prompts import PromptBook, copied_calls, parse_examples, plan_examples, plan_messages
from datagen.generate.templates import load_template
from datagen.io import iter_conversations
from datagen.record import Conversation, ToolCall, Turn
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.fakes.openai_server import last_user_text
from tests.generate.scripted_teacher import plan_message, role_of, scripted_teacher
from tests.generate.test_dialogues import _validate

FORMAT_REMINDER = "Write the Inner Thoughts and Commands lines for this message."


def _generate(fake, tmp_path, prompts, kind="plugin", name="out", **options):
    out = tmp_path / f"{name}.jsonl"
    stats = generate_dialogues(
        prompts,
        kind,
        DialogueConfig.from_dict(options, kind=kind),
        make_teacher_config_for(fake),
        out,
        tmp_path / f"{name}.journal.sqlite",
    )
    return out, stats


def _conv(plugins, language="en", cid="plugin-t1"):
    return Conversation(id=cid, language=language, plugins=plugins, inner_thoughts=True)


def test_shipped_examples_cover_every_tool_in_english_and_chinese():
    t = load_template("plugin_commands")
    assert t.id == "plugin_commands.v2"
    for section in ("examples", "examples.zh"):
        examples = parse_examples(t.sections[section], path=t.path, line=t.line_of(section))
        tools = [e.tools for e in examples]
        for cmd in ("Search", "Calculate", "Solve", "Text2Image"):
            assert sum(1 for x in tools if x == {cmd}) >= 2, (section, cmd)
        assert frozenset() in tools  # a `Commands: None` example
    # v1 stays loadable for pinned configs
    assert load_template("plugin_commands", 1).id == "plugin_commands.v1"


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("Inner Thoughts: x\nCommands: None", "must start with a `User:` line", 10),
        ("User: hi\nCommands: None", "needs an `Inner Thoughts:` line", 10),
        (
            'User: hi\nInner Thoughts: x\nCommands: None\n\nUser: a\nInner Thoughts: y\nCommands: Draw("x")',
            "unknown tool in Draw",
            14,
        ),
        (
            "User: ok\nInner Thoughts: x\nCommands: None\n\n\nUser: a\nInner Thoughts: y\nSearch nothing",
            "no_commands_line",
            15,
        ),
    ],
)
def test_bad_examples_name_the_line(text, message, line):
    with pytest.raises(ConfigError, match=message) as info:
        parse_examples(text, path="mine.md", line=10)
    assert info.value.line == line and info.value.path == "mine.md"


def test_examples_are_of_enabled_tools_in_the_dialogue_language_and_vary_per_dialogue():
    book = PromptBook()
    one = plan_examples(book, _conv(["calculator"]))
    tool_examples = [e for e in one if e.tools]
    assert len(tool_examples) == 2 and all(e.tools == {"Calculate"} for e in tool_examples)
    assert not one[0].tools  # the None example comes first, the tool examples nearest the question
    two = plan_examples(book, _conv(["search", "solver"]))
    assert sorted(sorted(e.tools)[0] for e in two if e.tools) == ["Search", "Solve"]
    zh = plan_examples(book, _conv(["text2image"], language="zh"))
    assert all(e.user.endswith(("。", "？", "！")) for e in zh)  # the Chinese examples
    fr = plan_examples(book, _conv(["text2image"], language="fr"))
    assert all(e.user.isascii() for e in fr)  # no French section: the default (English) one
    # deterministic per dialogue and turn, but not the same everywhere
    assert plan_examples(book, _conv(["calculator"])) == one
    picks = {
        tuple(e.user for e in plan_examples(book, _conv(["search"], cid=f"plugin-{i}"))) for i in range(20)
    }
    assert len(picks) > 1


def test_v2_messages_put_the_message_transcript_and_format_last():
    book = PromptBook()
    conv = _conv(["calculator"])
    first = plan_messages(book, conv, "What is 6*7?")
    assert [m["role"] for m in first] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "whose name is MOSS" not in first[0]["content"] and "Calculate(expression)" in first[0]["content"]
    assert first[-1]["content"] == f"Message: What is 6*7?\n{FORMAT_REMINDER}"
    assert all(m["content"].startswith("Inner Thoughts:") for m in first if m["role"] == "assistant")
    conv.turns.append(
        Turn(human="What is 6*7?", assistant="It is 42.", thoughts="t", calls=[ToolCall("Calculate", "6*7")])
    )
    second = plan_messages(book, conv, "And divided by 2?", retry="copied_example")
    last = second[-1]["content"]
    assert last.startswith(
        "The conversation so far, for context:\nUser: What is 6*7?\n\nMOSS: It is 42.\n\n"
        "Message: And divided by 2?\n" + FORMAT_REMINDER
    )
    assert last.endswith(
        "Your previous reply was rejected: it copied a command from the examples instead of "
        "writing one for this message. Write the two lines again: Inner Thoughts, then Commands."
    )
    assert "It is 42." not in "".join(m["content"] for m in second[:-1])  # no chat history of the dialogue


def test_copied_calls_are_those_of_an_example_not_asked_for():
    examples = plan_examples(PromptBook(), _conv(["calculator"]))
    ex = next(e for e in examples if e.calls)
    call = ex.calls[0]
    assert copied_calls([ToolCall(call.name, call.arg.replace("*", " * "))], examples, "What is 6*7?") != []
    assert copied_calls([call], examples, ex.user) == []  # the user really asked the example's question
    assert copied_calls([ToolCall("Calculate", "6*7")], examples, "What is 6*7?") == []


def _shipped_examples(section="examples"):
    t = load_template("plugin_commands")
    return parse_examples(t.sections[section], path=t.path, line=t.line_of(section))


@pytest.mark.parametrize(
    ("human", "call"),
    [
        ("Please draw a cat wearing a hat.", ToolCall("Text2Image", "a cat wearing a hat")),
        ("I'd love a picture of a cat wearing a hat!", ToolCall("Text2Image", "a cat wearing a hat")),
        ("Who is the author of Dracula?", ToolCall("Search", "author of Dracula")),
        ("Can you solve x+y=20 and x-y=4 for me?", ToolCall("Solve", "x+y=20;x-y=4")),
        ("what's 17 times 23", ToolCall("Calculate", "17*23")),
        ("What's the square root of 529?", ToolCall("Calculate", "sqrt(529)")),
    ],
)
def test_a_plan_for_what_the_user_asked_is_no_copy(human, call):
    # the argument is in the message, or the message is the example's question in other words
    assert copied_calls([call], _shipped_examples(), human) == []


def test_a_chinese_paraphrase_of_the_example_question_is_no_copy():
    call = ToolCall("Text2Image", "a cat wearing a hat")
    assert copied_calls([call], _shipped_examples("examples.zh"), "请画一只戴帽子的猫") == []
    assert copied_calls([call], _shipped_examples("examples.zh"), "画一条在滑板上的狗") == [call]


@pytest.mark.parametrize(
    ("human", "call"),
    [
        ("Draw a dog riding a skateboard.", ToolCall("Text2Image", "a cat wearing a hat")),
        ("Draw a dog wearing a hat.", ToolCall("Text2Image", "a cat wearing a hat")),
        ("What is 17 times 24?", ToolCall("Calculate", "17*23")),  # close to the example, other numbers
        ("Who wrote Frankenstein?", ToolCall("Search", "author of Dracula")),
    ],
)
def test_the_examples_call_for_another_question_is_a_copy(human, call):
    assert copied_calls([call], _shipped_examples(), human) == [call]


def test_a_plan_quoting_the_users_request_is_not_asked_again(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "plan":
            return 'Inner Thoughts: The user wants an image.\nCommands: Text2Image("a cat wearing a hat")'
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompt = PromptRow(
        id="d1",
        text="Please draw a cat wearing a hat.",
        language="en",
        category="tool",
        plugins=["text2image"],
    )
    out, stats = _generate(fake_openai, tmp_path, [prompt], turns=1)
    [conv] = list(iter_conversations(out))
    assert conv.turns[0].calls == [ToolCall("Text2Image", "a cat wearing a hat")]
    assert stats.calls == 2 and not stats.by_prefix("shortened_")  # plan and answer, no re-ask


def _small_model(req):
    """A 135M-like teacher: it follows the format only when the final user message asks for it,
    and otherwise just answers the question."""
    if role_of(req) == "plan" and FORMAT_REMINDER not in last_user_text(req):
        return "The answer is 1093."
    return scripted_teacher(req)


def test_a_model_that_ignores_the_system_prompt_plans_with_v2_but_not_v1(fake_openai, tmp_path):
    fake_openai.set_responder(_small_model)
    prompt = PromptRow(
        id="c1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator"]
    )
    out1, stats1 = _generate(
        fake_openai, tmp_path, [prompt], name="v1", turns=1, template_versions={"plugin_commands": 1}
    )
    assert stats1.counts["failed_no_commands_line"] == 1 and not out1.read_text()
    v1_req = next(r for r in fake_openai.received if role_of(r) == "plan")
    assert v1_req["messages"][0]["content"].startswith("You are an AI assistant whose name is MOSS.")
    out2, stats2 = _generate(fake_openai, tmp_path, [prompt], name="v2", turns=1)
    [conv] = list(iter_conversations(out2))
    assert conv.turns[0].calls == [ToolCall("Calculate", "23*47+12")]
    assert conv.turns[0].results[0].output == "1093"  # the real tool ran
    assert "plugin_commands.v2" in conv.lineage.template_version
    _validate(out2)


def test_second_turn_plans_from_the_transcript(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    prompt = PromptRow(
        id="m1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator"]
    )
    out, _ = _generate(fake_openai, tmp_path, [prompt], turns=2)
    [conv] = list(iter_conversations(out))
    assert [len(t.calls) for t in conv.turns] == [1, 0]
    plans = [r for r in fake_openai.received if role_of(r) == "plan"]
    assert len(plans) == 2
    assert "User: What is 23*47+12?\n\nMOSS: Based on the tool results" in last_user_text(plans[1])
    assert plan_message(plans[1]) == conv.turns[1].human


def test_a_copied_example_is_asked_again(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "plan" and "was rejected" not in last_user_text(req):
            shown = [
                m["content"]
                for m in req["messages"][1:-1]
                if m["role"] == "assistant" and "(" in m["content"]
            ]
            return shown[-1]  # the last worked example, word for word
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompt = PromptRow(
        id="k1", text="Solve x+y=10 and x-y=2 for me.", language="en", category="tool", plugins=["solver"]
    )
    out, stats = _generate(fake_openai, tmp_path, [prompt], turns=1)
    [conv] = list(iter_conversations(out))
    assert conv.turns[0].calls == [ToolCall("Solve", "x+y=10;x-y=2")]
    assert stats.calls == 3  # plan, plan again, answer
    retry = [r for r in fake_openai.received if "copied a command from the examples" in last_user_text(r)]
    assert len(retry) == 1


@pytest.mark.parametrize(
    ("cut_reply", "accepted"),
    [
        (
            'Inner Thoughts: I need to compute it.\nCommands: Calculate("23*47+12")\nMessage: What is 2+2?\nInner',
            True,
        ),
        ('Inner Thoughts: I need to compute it.\nCommands: Calculate("23*47+12"), Calcu', False),
    ],
)
def test_a_plan_cut_after_its_commands_line_is_used(fake_openai, tmp_path, cut_reply, accepted):
    def responder(req):
        if role_of(req) == "plan":
            return {"content": cut_reply, "finish_reason": "length"}
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompt = PromptRow(
        id="l1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator"]
    )
    out, stats = _generate(fake_openai, tmp_path, [prompt], turns=1, content_retries=1)
    convs = list(iter_conversations(out))
    if accepted:
        assert [t.calls for t in convs[0].turns] == [[ToolCall("Calculate", "23*47+12")]]
    else:
        assert convs == [] and stats.counts["failed_length"] == 1
        plans = [r for r in fake_openai.received if role_of(r) == "plan"]
        assert len(plans) == 2 and "cut off at the length limit" in last_user_text(plans[1])


def test_an_answer_echoing_the_prompt_is_asked_again(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "answer" and "was rejected" not in last_user_text(req):
            return "MOSS's answer: Your inner thoughts: The user needs a calculation.\nTool results: 1093"
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompt = PromptRow(
        id="e1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator"]
    )
    out, _ = _generate(fake_openai, tmp_path, [prompt], turns=1)
    [conv] = list(iter_conversations(out))
    assert conv.turns[0].assistant.startswith("Based on the tool results (")
    retry = [r for r in fake_openai.received if role_of(r) == "answer"][1]
    assert "it repeated these instructions instead of answering the user" in last_user_text(retry)


def test_a_cut_off_hhh_answer_is_retried_with_a_budget_and_never_kept(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "assistant":
            last = last_user_text(req)
            if "STUCK" in last or "Note for MOSS" not in last:  # rambles until told to be brief
                return {"content": "An answer that goes on and on", "finish_reason": "length"}
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompts = [
        PromptRow(id="r1", text="Tell me about rivers.", language="en"),
        PromptRow(id="r2", text="STUCK tell me about lakes.", language="en"),
    ]
    out, stats = _generate(fake_openai, tmp_path, prompts, kind="hhh", turns=2, max_tokens=256)
    [conv] = list(iter_conversations(out))
    assert conv.id == "hhh-r1" and len(conv.turns) == 2
    assert all("goes on and on" not in t.assistant for t in conv.turns)
    retries = [
        last_user_text(r)
        for r in fake_openai.received
        if role_of(r) == "assistant"
        and "Note for MOSS" in last_user_text(r)
        and last_user_text(r).startswith("Tell me about rivers.")
    ]
    assert retries[0] == (
        "Tell me about rivers.\n\n(Note for MOSS: your previous reply to this message was "
        "rejected: it was cut off at the length limit; write a complete reply that is much "
        "shorter (at most about 150 words). Write the reply again, in English.)"
    )
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert [(f["id"], f["reason"], f["turn"]) for f in failed] == [("hhh-r2", "length", 1)]
    assert stats.counts["failed_length"] == 1


def test_a_later_cut_off_turn_ends_the_dialogue_with_the_turns_done(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "assistant" and "Follow-up number 2" in last_user_text(req):
            return {"content": "This one never ends", "finish_reason": "length"}
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    out, stats = _generate(
        fake_openai, tmp_path, [PromptRow(id="p1", text="Explain tides.", language="en")], kind="hhh", turns=3
    )
    [conv] = list(iter_conversations(out))
    assert len(conv.turns) == 1 and conv.extra["generation"]["stopped"] == "assistant:length"
    assert stats.counts["shortened_length"] == 1
    _validate(out)


def test_echo_fragments_cover_the_retry_note_but_not_short_reasons():
    from datagen.generate.parsing import echoes_prompt
    from datagen.generate.prompts import prompt_echo_fragments

    fragments = prompt_echo_fragments(PromptBook(), "plugin_answer")
    assert echoes_prompt("Your previous answer was rejected: it was cut off at the length limit.", fragments)
    assert echoes_prompt(
        "MOSS: it was cut off at the length limit; write a complete reply that is much shorter", fragments
    )
    assert echoes_prompt("I opened the box and it was empty, so the request was refused.", fragments) is None


def test_a_power_in_a_bold_plan_reaches_the_tool_unchanged(fake_openai, tmp_path):
    # Before, the plan parser deleted every `**` as Markdown bold: `2**10` ran as 210 and was
    # stored as a successful call.
    def responder(req):
        if role_of(req) == "plan":
            return '**Inner Thoughts:** I should compute 2 to the power 10.\n**Commands:** Calculate("2**10")'
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompt = PromptRow(
        id="p1", text="What is 2 to the power of 10?", language="en", category="tool", plugins=["calculator"]
    )
    out, _ = _generate(fake_openai, tmp_path, [prompt], turns=1)
    [conv] = list(iter_conversations(out))
    assert conv.turns[0].thoughts == "I should compute 2 to the power 10."
    assert conv.turns[0].calls == [ToolCall("Calculate", "2**10")]
    assert conv.turns[0].results[0].ok and conv.turns[0].results[0].output == "1024"
    _validate(out)
