"""MOSS 003 text and SFT records: byte-exact round trips over the 48 released samples, the meta
instruction, turn segments, and the Turn.raw rule (raw only while the fields still match)."""

import copy
import json

import pytest

from datagen.errors import FormatError
from datagen.formats.meta import build_meta_instruction, meta_instruction_for, parse_meta_instruction
from datagen.formats.moss import (
    SFT_KEYS,
    dumps_sft_file,
    from_sft,
    parse_text,
    render_text,
    to_sft,
    turn_segments,
)
from datagen.record import Conversation, ToolCall, ToolResult, Turn
from tests.formats.damage import mutations


def test_all_samples_present(moss_samples):
    assert len(moss_samples) == 48


def _load(path):
    text = path.read_text(encoding="utf-8")
    return text, json.loads(text)


def test_sft_file_roundtrip_is_byte_exact(sample_path):
    text, record = _load(sample_path)
    conv = from_sft(record, path=str(sample_path))
    stored = json.dumps(conv.to_dict(), ensure_ascii=False)  # what a stage writes to JSONL
    back = Conversation.from_dict(json.loads(stored))
    assert dumps_sft_file(to_sft(back)) == text
    assert (sample_path.read_bytes()) == dumps_sft_file(to_sft(back)).encode("utf-8")


def test_text_roundtrip_and_segments(sample_path):
    _, record = _load(sample_path)
    conv = from_sft(record)
    text = render_text(conv)
    assert text == record["meta_instruction"] + "".join(
        seg for turn in record["chat"].values() for seg in turn.values()
    )
    again = parse_text(text, id=conv.id, category=conv.category)
    assert render_text(again) == text
    assert [t.to_dict() for t in again.turns] == [t.to_dict() for t in conv.turns]
    for turn, original in zip(conv.turns, record["chat"].values(), strict=True):
        segs = turn_segments(turn, conv)
        assert [k for k, _ in segs] == list(SFT_KEYS)
        assert dict(segs) == original


def test_parsed_fields(sample_path):
    _, record = _load(sample_path)
    conv = from_sft(record)
    assert conv.id == str(record["conversation_id"])
    assert conv.category == record.get("category")
    assert conv.inner_thoughts == ("Inner thoughts: enabled." in record["meta_instruction"])
    assert meta_instruction_for(conv) == record["meta_instruction"]
    assert conv.meta_instruction is None  # all samples use the canonical text
    for turn, seg in zip(conv.turns, record["chat"].values(), strict=True):
        assert seg["Human"] == f"<|Human|>: {turn.human}<eoh>\n"
        assert seg["MOSS"] == f"<|MOSS|>: {turn.assistant}<eom>\n"
        assert len(turn.results) == len(turn.calls)
        assert ("tool_failed" in turn.flags) == any(not r.ok for r in turn.results)
    if conv.plugins:
        assert isinstance(record["conversation_id"], int)
        assert conv.extra == {
            "conversation_id": str(record["conversation_id"]),
            "conversation_id_type": "int",
        }
    else:
        assert all(t.thoughts is None and not t.calls for t in conv.turns)


@pytest.mark.parametrize(
    ("plugins", "inner"),
    [
        ([], False),
        (["search"], True),
        (["calculator"], True),
        (["solver"], True),
        (["text2image"], True),
        (["search", "calculator"], True),
    ],
)
def test_build_meta_instruction_matches_samples(moss_samples, plugins, inner):
    metas = {json.loads(p.read_text(encoding="utf-8"))["meta_instruction"] for p in moss_samples}
    built = build_meta_instruction(plugins, inner)
    assert built in metas
    assert "mutiple aspects" in built
    info = parse_meta_instruction(built)
    assert (sorted(info.plugins), info.inner_thoughts, info.canonical) == (sorted(plugins), inner, True)


def test_build_meta_instruction_rejects_unknown_plugin():
    with pytest.raises(ValueError, match="unknown plugin"):
        build_meta_instruction(["browser"], False)


def _sample(moss_samples, stem):
    return next(p for p in moss_samples if p.stem == stem)


def test_trailing_space_on_web_search_line_roundtrips(moss_samples):
    text, record = _load(_sample(moss_samples, "honest_conversation_7"))
    record["meta_instruction"] = record["meta_instruction"].replace(
        "- Web search: disabled.\n", "- Web search: disabled. \n"
    )
    original = dumps_sft_file(record)
    conv = from_sft(json.loads(original))
    assert conv.plugins == [] and conv.meta_instruction == record["meta_instruction"]
    assert dumps_sft_file(to_sft(Conversation.from_dict(conv.to_dict()))) == original
    # enabling a plugin makes the kept text stale: the canonical text wins
    conv.plugins = ["search"]
    assert "- Web search: enabled. API: Search(query)\n" in to_sft(conv)["meta_instruction"]


def test_noise_segments_roundtrip_and_edits_win(moss_samples):
    text, record = _load(_sample(moss_samples, "mix_plugin_conversation_15"))
    t3 = record["chat"]["turn_3"]
    t3["Commands"] = t3["Commands"].replace("<eoc>", ", None<eoc>")
    record["chat"]["turn_1"]["Tool Responses"] = record["chat"]["turn_1"]["Tool Responses"].replace(
        "<|Results|>:\n", "<|Results|>:\n", 1
    )
    record["chat"]["turn_2"]["Inner Thoughts"] = "<|Inner Thoughts|>:x<eot>\n"  # no space after the tag
    original = dumps_sft_file(record)
    conv = Conversation.from_dict(from_sft(json.loads(original)).to_dict())
    assert set(conv.turns[2].raw) == {"Commands"} and set(conv.turns[1].raw) == {"Inner Thoughts"}
    assert conv.turns[2].calls[-1] == ToolCall("Calculate", "29-24.7")
    assert dumps_sft_file(to_sft(conv)) == original
    edited = copy.deepcopy(conv)
    edited.turns[2].calls.pop()
    edited.turns[2].results.pop()
    edited.turns[1].thoughts = "y"
    sft = to_sft(edited)
    assert sft["chat"]["turn_3"]["Commands"] == (
        '<|Commands|>: Search("苹果 欧洲 市场份额"), Search("三星 欧洲 市场份额")<eoc>\n'
    )
    assert sft["chat"]["turn_2"]["Inner Thoughts"] == "<|Inner Thoughts|>: y<eot>\n"


def test_none_forms_are_kept_per_file(moss_samples):
    # plain-chat data written with the plugin-style None (and vice versa) round-trips
    _, record = _load(_sample(moss_samples, "honest_conversation_7"))
    record["chat"]["turn_1"]["Tool Responses"] = "<|Results|>:\nNone\n<eor>\n"
    conv = from_sft(record)
    assert conv.turns[0].raw == {"Tool Responses": "<|Results|>:\nNone\n<eor>\n"}
    assert to_sft(conv) == record
    _, record = _load(_sample(moss_samples, "calculator_plugin_conversation_26"))
    assert record["chat"]["turn_2"]["Tool Responses"] == "<|Results|>:\nNone\n<eor>\n"
    record["chat"]["turn_2"]["Tool Responses"] = "<|Results|>: None<eor>\n"
    assert to_sft(from_sft(record)) == record


def test_conversation_id_type_is_preserved(moss_samples):
    _, plain = _load(_sample(moss_samples, "honest_conversation_7"))
    _, plugin = _load(_sample(moss_samples, "solver_plugin_conversation_2"))
    assert to_sft(from_sft(plain))["conversation_id"] == "7"
    assert plugin["conversation_id"] == 43  # ids are not the file numbers
    assert to_sft(from_sft(plugin))["conversation_id"] == 43
    conv = from_sft(plugin, id="solver_plugin_conversation_2")  # datagen's id need not be MOSS's
    assert conv.id == "solver_plugin_conversation_2" and to_sft(conv)["conversation_id"] == 43
    conv.extra.pop("conversation_id")  # a conversation with no source id is written under its own
    assert to_sft(conv)["conversation_id"] == "solver_plugin_conversation_2"
    plain_conv = from_sft(plain, id="honest_conversation_7")
    assert plain_conv.extra["conversation_id"] == "7" and to_sft(plain_conv)["conversation_id"] == "7"
    assert "conversation_id" not in from_sft(plain).extra  # nothing to remember when the id is the same
    assert "category" not in to_sft(
        from_sft(_load(_sample(moss_samples, "text2img_plugin_conversation_12"))[1])
    )


def test_unknown_top_level_keys_survive(moss_samples):
    _, record = _load(_sample(moss_samples, "honest_conversation_7"))
    record = {"source": "x", **record, "score": 0.5}
    assert list(to_sft(from_sft(record))) == list(record)
    assert to_sft(from_sft(record)) == record


def test_new_conversation_renders_canonically():
    conv = Conversation(
        id="n1",
        plugins=["search", "calculator"],
        inner_thoughts=True,
        turns=[
            Turn(
                human="今天的汇率？",
                thoughts="需要搜索",
                calls=[ToolCall("Search", "汇率"), ToolCall("Calculate", "7.1*2")],
                results=[
                    ToolResult("Search", "汇率", snippets=["'7.1'", "'7.2'"]),
                    ToolResult("Calculate", "7.1*2", output="14.2"),
                ],
                assistant="约7.1<sup><|1|></sup>。",
            ),
            Turn(human="谢谢", assistant="不客气"),
        ],
    )
    segs = turn_segments(conv.turns[0], conv)
    assert segs == [
        ("Human", "<|Human|>: 今天的汇率？<eoh>\n"),
        ("Inner Thoughts", "<|Inner Thoughts|>: 需要搜索<eot>\n"),
        ("Commands", '<|Commands|>: Search("汇率"), Calculate("7.1*2")<eoc>\n'),
        (
            "Tool Responses",
            "<|Results|>:\nSearch(\"汇率\") =>\n<|1|>: '7.1'\n<|2|>: '7.2'\n"
            "Calculate(\"7.1*2\") => '14.2'\n<eor>\n",
        ),
        ("MOSS", "<|MOSS|>: 约7.1<sup><|1|></sup>。<eom>\n"),
    ]
    assert dict(turn_segments(conv.turns[1], conv))["Tool Responses"] == "<|Results|>:\nNone\n<eor>\n"
    assert render_text(conv).startswith(build_meta_instruction(["search", "calculator"], True))
    back = parse_text(render_text(conv), id="n1")
    assert [t.to_dict() for t in back.turns] == [t.to_dict() for t in conv.turns]
    assert (back.plugins, back.inner_thoughts, back.meta_instruction) == (
        ["search", "calculator"],
        True,
        None,
    )


def test_parse_text_accepts_prompts_without_the_triple():
    meta = build_meta_instruction([], False)
    text = meta + "<|Human|>: hi<eoh>\n<|MOSS|>: hello<eom>\n"
    conv = parse_text(text)
    assert conv.turns[0].raw == {"Inner Thoughts": "", "Commands": "", "Tool Responses": ""}
    assert render_text(conv) == text
    assert [s for _, s in turn_segments(conv.turns[0], conv)][1:4] == ["", "", ""]
    conv.turns[0].thoughts = "now set"
    # once one of the absent segments is needed, all three are written
    assert (
        "<|Inner Thoughts|>: now set<eot>\n<|Commands|>: None<eoc>\n<|Results|>: None<eor>\n"
        in render_text(conv)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no turns here", "no `<|Human|>:` segment"),
        ("<|Human|>: hi<eoh>\n<|MOSS|>: x<eom>\n<|MOSS|>: y<eom>\n", "<|MOSS|>: out of order in turn 1"),
        ("<|Human|>: hi<eoh>\n<|MOSS|>: x", "MOSS: missing end tag <eom> after offset 19"),
        ("<|Human|>: hi<eoh>\n<|Commands|>: None<eoc>\n", "turn 1: no <|MOSS|> segment"),
        (
            "<|Human|>: hi<eoh>\ngarbage<|MOSS|>: x<eom>\n",
            "expected a role tag at offset 19: 'garbage<|MOSS|>: x<eom>\\n'",
        ),
    ],
)
def test_parse_text_rejects(text, message):
    with pytest.raises(FormatError) as exc:
        parse_text(text)
    assert str(exc.value).startswith(message)


def test_from_sft_errors_name_path_line_and_field(moss_samples):
    _, record = _load(_sample(moss_samples, "honest_conversation_7"))
    record["chat"]["turn_2"].pop("MOSS")  # a broken structure (not a broken segment) is an error
    with pytest.raises(FormatError) as exc:
        from_sft(record, path="f.jsonl", line=3)
    assert str(exc.value) == "f.jsonl:3: turn 2: missing key(s) ['MOSS']"
    assert (exc.value.path, exc.value.line) == ("f.jsonl", 3)


def test_a_segment_that_does_not_parse_is_kept_with_its_problem(moss_samples):
    _, record = _load(_sample(moss_samples, "honest_conversation_7"))
    bad = record["chat"]["turn_2"]["MOSS"].replace("<eom>", "<eoh>")
    record["chat"]["turn_2"]["MOSS"] = bad
    conv = from_sft(record, path="f.jsonl", line=3)
    turn = conv.turns[1]
    assert turn.problems == {"MOSS": "missing end tag <eom>, found <eoh>"}
    assert turn.raw == {"MOSS": bad}
    assert turn.assistant == bad[len("<|MOSS|>: ") : -len("<eoh>\n")]  # what it says, for exports
    assert to_sft(Conversation.from_dict(json.loads(json.dumps(conv.to_dict())))) == record
    turn.assistant = "edited"  # an edit makes the canonical form win, as for any raw segment
    assert to_sft(conv)["chat"]["turn_2"]["MOSS"] == "<|MOSS|>: edited<eom>\n"


def test_damaged_records_roundtrip_or_fail_loudly(sample_path):
    """Whatever the damage, from_sft either raises FormatError or reproduces the record exactly:
    it never silently changes data."""
    import random

    record = json.loads(sample_path.read_text(encoding="utf-8"))
    rng = random.Random(sample_path.stem)
    parsed = 0
    for rec in mutations(record, rng, 60):
        try:
            conv = from_sft(rec)
        except FormatError:
            continue
        parsed += 1
        back = Conversation.from_dict(json.loads(json.dumps(conv.to_dict())))
        assert dumps_sft_file(to_sft(back)) == dumps_sft_file(rec)
    assert parsed > 0


@pytest.mark.parametrize(
    "edit",
    [
        {"conversation_id": None},
        {"conversation_id": 7},
        {"category": None, "x": 1},
        {"score": 0.5, "tags": ["a"]},
    ],
    ids=["null-id", "int-id", "null-category", "extra-keys"],
)
def test_source_fields_come_back_with_their_types_and_are_stored_as_strings(moss_samples, edit):
    _, record = _load(_sample(moss_samples, "honest_conversation_7"))
    record = {**record, **edit}
    conv = from_sft(record, id="honest_conversation_7")
    # what datagen writes holds strings only, so that rows from int-id and str-id files load together
    assert all(isinstance(v, str) for k, v in conv.extra.items() if k != "sft_key_order")
    back = Conversation.from_dict(json.loads(json.dumps(conv.to_dict())))
    assert dumps_sft_file(to_sft(back)) == dumps_sft_file(record)
