"""OpenAI messages and ShareGPT: lossless round trips over the samples, and records from other tools."""

import copy
import json

import pytest

from datagen.errors import FormatError
from datagen.formats.messages import from_messages, to_messages
from datagen.formats.moss import dumps_sft_file, from_sft, to_sft
from datagen.formats.sharegpt import from_sharegpt, to_sharegpt
from datagen.record import Conversation, ToolCall, ToolResult, Turn
from tests.formats.damage import mutations


@pytest.mark.parametrize(
    ("to", "back"), [(to_messages, from_messages), (to_sharegpt, from_sharegpt)], ids=["messages", "sharegpt"]
)
def test_roundtrip_is_lossless(sample_path, to, back):
    text = sample_path.read_text(encoding="utf-8")
    conv = from_sft(json.loads(text))
    rec = json.loads(json.dumps(to(conv), ensure_ascii=False))
    again = back(rec)
    assert again.to_dict() == conv.to_dict()
    assert dumps_sft_file(to_sft(again)) == text


def _sample(moss_samples, stem):
    return from_sft(json.loads(next(p for p in moss_samples if p.stem == stem).read_text(encoding="utf-8")))


def test_messages_shape_for_a_plugin_turn(moss_samples):
    conv = _sample(moss_samples, "mix_plugin_conversation_15")
    rec = to_messages(conv)
    msgs = rec["messages"]
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(
        "You are an AI assistant whose name is MOSS."
    )
    # turn 3: user, tool-call message with thoughts, three tool messages, answer
    t3 = msgs[-6:]
    assert [m["role"] for m in t3] == ["user", "assistant", "tool", "tool", "tool", "assistant"]
    assert t3[1]["content"] is None
    assert t3[1]["reasoning_content"] == conv.turns[2].thoughts
    assert [tc["function"]["name"] for tc in t3[1]["tool_calls"]] == ["Search", "Search", "Calculate"]
    # an object, as HF chat templates expect (`tojson` would double-encode a string)
    assert t3[1]["tool_calls"][2]["function"]["arguments"] == {"expression": "29-24.7"}
    assert [m["tool_call_id"] for m in t3[2:5]] == [tc["id"] for tc in t3[1]["tool_calls"]]
    assert t3[3]["content"].startswith("<|2|>: '三星排在第一位")  # numbering continues across searches
    assert t3[4]["content"] == "4.300000000000001"
    assert t3[5] == {"role": "assistant", "content": conv.turns[2].assistant}
    assert [t["function"]["name"] for t in rec["tools"]] == ["Search", "Calculate"]
    assert rec["datagen"] == {
        "category": "tool",
        "plugins": ["search", "calculator"],
        "inner_thoughts": True,
        "extra": {"conversation_id": conv.id, "conversation_id_type": "int"},  # one type in every row
    }


def test_messages_carry_raw_and_flags_only_when_needed(moss_samples):
    conv = _sample(moss_samples, "mix_plugin_conversation_50")
    msgs = to_messages(conv)["messages"]
    answers = [m for m in msgs if m["role"] == "assistant" and "tool_calls" not in m]
    assert "datagen" not in answers[0] and "datagen" not in answers[2]
    assert set(answers[1]["datagen"]) == {"raw"}  # unquoted `No calculation results.` kept verbatim
    bare = to_messages(conv, metadata=False)
    assert "datagen" not in bare and all("datagen" not in m for m in bare["messages"])


def test_mismatched_results_survive(moss_samples):
    conv = _sample(moss_samples, "calculator_plugin_conversation_84")
    conv.turns[1].results.pop()  # two calls, one result
    for to, back in ((to_messages, from_messages), (to_sharegpt, from_sharegpt)):
        again = back(json.loads(json.dumps(to(conv))))
        assert again.turns[1].results == conv.turns[1].results
        assert to_sft(again) == to_sft(conv)


def test_sharegpt_shape(moss_samples):
    conv = _sample(moss_samples, "mix_plugin_conversation_67")
    rec = to_sharegpt(conv)
    froms = [m["from"] for m in rec["conversations"]]
    assert froms == [
        "system",
        "human",
        "function_call",
        "observation",
        "gpt",
        "human",
        "function_call",
        "observation",
        "gpt",
    ]
    fc = rec["conversations"][6]
    assert json.loads(fc["value"]) == [
        {"name": "Search", "arguments": {"query": "鸡蛋价格"}},
        {"name": "Calculate", "arguments": {"expression": "鸡蛋单价*10"}},
    ]
    obs = json.loads(rec["conversations"][7]["value"])
    assert obs[1] == "No result." and obs[0].startswith("<|1|>: ")
    assert rec["conversations"][3]["value"] == "1200.0"  # one call: plain text
    assert [t["function"]["name"] for t in json.loads(rec["tools"])] == ["Search", "Calculate"]


def test_plain_chat_messages_from_elsewhere():
    rec = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ]
    }
    conv = from_messages(rec)
    assert [(t.human, t.assistant) for t in conv.turns] == [("Hi there", "Hello!"), ("Bye", "Bye!")]
    assert (conv.plugins, conv.inner_thoughts, conv.meta_instruction) == ([], False, None)
    assert len(conv.id) == 16 and from_messages(copy.deepcopy(rec)).id == conv.id  # stable content hash
    sft = to_sft(conv)
    assert sft["chat"]["turn_1"]["Tool Responses"] == "<|Results|>: None<eor>\n"
    assert "- Inner thoughts: disabled.\n" in sft["meta_instruction"]


def test_legacy_function_call_and_plugin_names():
    rec = {
        "id": 7,
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": "I should calculate.",
                "function_call": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
            },
            {"role": "function", "name": "calculator", "content": "4"},
            {"role": "assistant", "content": "4"},
        ],
    }
    conv = from_messages(rec)
    t = conv.turns[0]
    assert conv.id == "7"
    assert (t.thoughts, t.calls, t.results) == (
        "I should calculate.",
        [ToolCall("Calculate", "2+2")],
        [ToolResult("Calculate", "2+2", True, "4")],
    )
    assert conv.plugins == ["calculator"] and conv.inner_thoughts is True
    assert (
        conv.meta_instruction == "You are helpful."
    )  # a custom system prompt is kept as the meta instruction


def test_sharegpt_from_elsewhere_with_top_level_system():
    rec = {
        "system": "sys",
        "conversations": [
            {"from": "human", "value": "draw a fox"},
            {
                "from": "function_call",
                "value": '{"name": "Text2Image", "arguments": {"description": "a fox"}}',
            },
            {"from": "observation", "value": "Image generated successfully."},
            {"from": "gpt", "value": "Here it is."},
        ],
        "tools": '[{"name": "Text2Image", "parameters": {}}]',
    }
    conv = from_sharegpt(rec)
    assert conv.meta_instruction == "sys" and conv.plugins == ["text2image"]
    assert (
        to_sft(conv)["chat"]["turn_1"]["Tool Responses"]
        == "<|Results|>: Image generated successfully.<eor>\n"
    )


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "assistant", "content": "hi"}], "messages[0]: expected a user message, got assistant"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "messages[1]: expected the assistant's answer, got user",
        ),
        (
            [{"role": "user", "content": "a"}],
            "messages[0]: expected the assistant's answer, got the end of the conversation",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
            "messages[1].role: unknown role 'robot'",
        ),
        ([{"role": "user", "content": 5}], "messages[0].content: expected a string, got int"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[0].content: only text content is supported, got part 0 of type image_url",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "Search", "arguments": '{"query": "a"}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "zz", "content": "x"},
            ],
            "messages[2]: tool message for unknown call id 'zz'",
        ),
        ([{"role": "system", "content": "s"}], "messages[0]: no user message"),
    ],
)
def test_messages_errors(messages, error):
    with pytest.raises(FormatError) as exc:
        from_messages({"id": "x", "messages": messages}, path="in.jsonl", line=4)
    assert str(exc.value) == f"in.jsonl:4: {error}"


@pytest.mark.parametrize(
    ("conversations", "error"),
    [
        ([{"from": "bot", "value": "x"}], "conversations[0].from: unknown sender 'bot'"),
        (
            [{"from": "human", "value": "x"}, {"from": "function_call", "value": "not json"}],
            "conversations[1].value: value is not JSON",
        ),
        (
            [
                {"from": "human", "value": "x"},
                {
                    "from": "function_call",
                    "value": '[{"name": "Search", "arguments": {"query": "a"}}, '
                    '{"name": "Search", "arguments": {"query": "b"}}]',
                },
                {"from": "observation", "value": "only one"},
            ],
            "conversations[2].value: 2 calls need a JSON array of 2 results",
        ),
        ([{"from": "human", "value": None}], "conversations[0].value: expected a string, got NoneType"),
    ],
)
def test_sharegpt_errors(conversations, error):
    with pytest.raises(FormatError) as exc:
        from_sharegpt({"conversations": conversations}, path="in.json", line=None)
    assert str(exc.value) == f"in.json: {error}"


def test_metadata_travels():
    conv = Conversation(
        id="a",
        category="writing",
        language="en",
        turns=[Turn(human="h", assistant="a")],
        scores={"moss_loss": 1.5},
        tags={"dedup": "kept"},
    )
    conv.lineage.teacher_model = "m"
    conv.usage.prompt_tokens = 10
    for to, back in ((to_messages, from_messages), (to_sharegpt, from_sharegpt)):
        assert back(json.loads(json.dumps(to(conv)))).to_dict() == conv.to_dict()


def test_damaged_records_survive_the_converters(sample_path):
    """Records with noise (anything from_sft accepts) go through messages and ShareGPT unchanged."""
    import random

    record = json.loads(sample_path.read_text(encoding="utf-8"))
    rng = random.Random(sample_path.stem + "converters")
    for rec in mutations(record, rng, 15):
        try:
            conv = from_sft(rec)
        except FormatError:
            continue
        for to, back in ((to_messages, from_messages), (to_sharegpt, from_sharegpt)):
            again = back(json.loads(json.dumps(to(conv), ensure_ascii=False)))
            assert again.to_dict() == conv.to_dict()
            assert to_sft(again) == rec
