"""JSONL hand-off between stages: streaming reads with file:line errors, torn tails, atomic and
append-only writes, and the Conversation record's round trip through them."""

import json

import pytest

from datagen.errors import InputError
from datagen.io import AppendWriter, iter_conversations, iter_json_lines, write_jsonl_atomic
from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn, Usage


def make_conv(i: int) -> Conversation:
    return Conversation(
        id=f"c{i}",
        category="tool",
        language="zh",
        plugins=["calculator"],
        inner_thoughts=True,
        turns=[
            Turn(
                human="23*47+12 等于多少？",
                thoughts="需要计算",
                calls=[ToolCall("Calculate", "23*47+12")],
                results=[ToolResult("Calculate", "23*47+12", output="1093", extra={"k": 1})],
                assistant="等于 1093。",
                flags=["x"],
            )
        ],
        lineage=Lineage(seed_id="s1", teacher_model="m", params={"temperature": 0.7}, parents=["a", "b"]),
        usage=Usage(prompt_tokens=10, completion_tokens=5, cost=0.001, calls=2),
        scores={"moss_loss": 1.5},
        tags={"boilerplate": "ai_boilerplate"},
        extra={"src": "x"},
    )


def test_conversation_round_trips_through_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    convs = [make_conv(i) for i in range(3)]
    assert write_jsonl_atomic(path, convs) == 3
    back = list(iter_conversations(path))
    assert [c.to_dict() for c in back] == [c.to_dict() for c in convs]
    assert back[0].turns[0].results[0].extra == {"k": 1}
    assert back[0].kind == "plugin"
    assert "等于" in path.read_text(encoding="utf-8")  # readable UTF-8, not \\u escapes


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(InputError) as exc:
        list(iter_json_lines(path))
    assert str(exc.value).startswith(f"{path}:3: invalid JSON")


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "torn.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"', encoding="utf-8")
    assert [obj["a"] for _, obj in iter_json_lines(path)] == [1, 2]


def test_non_utf8_line_is_an_input_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(InputError) as exc:
        list(iter_json_lines(path))
    assert f"{path}:2: not UTF-8" in str(exc.value)


def test_missing_field_names_it(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        list(iter_conversations(path))
    assert str(exc.value) == f"{path}:1: turns: missing required field"


def test_append_writer_repairs_a_torn_tail_and_appends(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "x', encoding="utf-8")  # killed mid-write
    with AppendWriter(path) as w:
        w.write({"id": 3})
        w.write(make_conv(4))
    rows = [obj for _, obj in iter_json_lines(path)]
    assert [r["id"] for r in rows] == [1, 3, "c4"]
    assert w.count == 2


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"id": 1}])

    def rows():
        yield {"id": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, rows())
    assert [obj for _, obj in iter_json_lines(path)] == [{"id": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_append_writer_keeps_a_whole_last_row_that_lost_only_its_newline(tmp_path):
    # A long row reached the disk but the kill came before its newline: readers count it as done,
    # so the writer must keep it (and add the newline), not cut it off.
    path = tmp_path / "out.jsonl"
    big = {"id": "long", "text": "x" * 20000}
    path.write_text(json.dumps({"id": "a"}) + "\n" + json.dumps(big), encoding="utf-8")
    assert [obj["id"] for _, obj in iter_json_lines(path)] == ["a", "long"]
    with AppendWriter(path) as w:
        w.write({"id": "b"})
    assert [obj["id"] for _, obj in iter_json_lines(path)] == ["a", "long", "b"]


def test_torn_tail_cut_inside_a_multibyte_character_is_skipped(tmp_path):
    path = tmp_path / "zh.jsonl"
    whole = json.dumps({"id": "a", "text": "你好"}, ensure_ascii=False).encode()
    torn = json.dumps({"id": "b", "text": "春天"}, ensure_ascii=False).encode()
    path.write_bytes(whole + b"\n" + torn[: torn.index("春".encode()) + 1])  # cut mid-character
    assert [obj["id"] for _, obj in iter_json_lines(path)] == ["a"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"n": ' + "7" * 5000 + "}",
            "invalid JSON: a number too long to read (Exceeds the limit (4300 digits) "
            "for integer string conversion: value has 5000 digits)",
        ),
        ("[" * 100_000, "JSON nested too deeply"),
    ],
    ids=["5000-digits", "deep"],
)
def test_json_python_cannot_hold_is_an_input_error_at_its_line(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        list(iter_json_lines(path))
    assert str(exc.value) == f"{path}:2: {reason}"
    # as a torn tail (no newline) it is skipped like any other, and the writer cuts it off
    path.write_text('{"a": 1}\n' + line, encoding="utf-8")
    assert [obj for _, obj in iter_json_lines(path)] == [{"a": 1}]
    with AppendWriter(path) as w:
        w.write({"a": 2})
    assert [obj for _, obj in iter_json_lines(path)] == [{"a": 1}, {"a": 2}]


def test_a_row_dict_is_a_copy_in_field_order():
    """Writing a row must not hand out the record's own lists and dicts (a stage that edits the dict
    would change the record), and the keys keep the fields' order, which the golden files pin."""
    conv = make_conv(0)
    conv.lineage.review = {"by": "ana", "changed": ["assistant"]}
    d = conv.to_dict()
    assert list(d["lineage"]) == ["seed_id", "teacher_model", "params", "parents", "review"]
    assert list(d["usage"]) == ["prompt_tokens", "completion_tokens", "cost", "calls"]
    d["lineage"]["params"]["temperature"] = 0.1
    d["lineage"]["parents"].append("c")
    d["lineage"]["review"]["changed"].append("thoughts")
    assert conv.lineage.params == {"temperature": 0.7} and conv.lineage.parents == ["a", "b"]
    assert conv.lineage.review["changed"] == ["assistant"]
