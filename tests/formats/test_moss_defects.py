"""Released MOSS files outside the grammar (11 of the full release's 1,120; one fixture per kind of
defect, built from real samples in `moss_defects`): every one is read, written back byte for byte,
flagged by `validate`, and exported with each result beside its own call."""

import json

import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from datagen.cli import main
from datagen.formats.messages import from_messages, to_messages
from datagen.formats.moss import dumps_sft_file, from_sft, to_sft
from datagen.formats.sharegpt import from_sharegpt, to_sharegpt
from datagen.formats.validate import format_defect, validate_record
from datagen.record import Conversation
from tests.formats.moss_defects import CALC, DEFECTS, MIX, defect_record, load_samples, write_defects

MALFORMED = [n for n, d in DEFECTS.items() if d.problems]


@pytest.fixture(scope="module")
def samples(moss_samples):
    return load_samples(moss_samples)


@pytest.mark.parametrize("name", list(DEFECTS))
def test_defect_is_read_and_written_back_byte_for_byte(name, samples):
    d = DEFECTS[name]
    rec = defect_record(name, samples)
    text = dumps_sft_file(rec)
    conv = from_sft(json.loads(text))
    turn = conv.turns[d.turn - 1]
    assert set(turn.problems) == set(d.problems)
    for key, start in d.problems.items():
        assert turn.problems[key].startswith(start)
        assert turn.raw[key] == rec["chat"][f"turn_{d.turn}"][key]  # kept verbatim
    assert all(not t.problems for t in conv.turns if t is not turn)
    if d.calls is not None:
        assert [(c.name, c.arg) for c in turn.calls] == d.calls  # what the segment says, for exports
    stored = Conversation.from_dict(json.loads(json.dumps(conv.to_dict(), ensure_ascii=False)))
    assert dumps_sft_file(to_sft(stored)) == text
    for to, back in ((to_messages, from_messages), (to_sharegpt, from_sharegpt)):
        again = back(json.loads(json.dumps(to(stored), ensure_ascii=False)))
        assert again.to_dict() == stored.to_dict()
        assert dumps_sft_file(to_sft(again)) == text


@pytest.mark.parametrize("name", list(DEFECTS))
def test_validate_flags_every_defect_and_filter_has_a_reason(name, samples):
    d = DEFECTS[name]
    conv, issues = validate_record(defect_record(name, samples))
    errors = [i for i in issues if not i.noise]
    assert conv is not None and errors
    assert {i.turn for i in errors} == {d.turn}
    for key, start in d.problems.items():
        assert any(i.field == key and i.reason.startswith(start) and i.recovered for i in errors)
    found = format_defect(conv)
    if d.step == "format":
        assert found is not None and found[0] == d.reason and found[1]["turn"] == d.turn
    else:
        assert found is None  # a tag inside an answer is the quality step's (broken_tags)


def test_validate_cli_on_the_defects(tmp_path, moss_samples, capsys):
    write_defects(tmp_path, moss_samples)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"{len(DEFECTS)} conversations, 0 valid, {len(DEFECTS)} invalid")
    assert any(
        line.startswith(f"{tmp_path}/numbered_commands.json: turn 2: Commands: cannot parse") for line in out
    )


def test_convert_moss_to_datagen_to_moss_is_byte_identical(tmp_path, shared_dir, moss_samples, capsys):
    write_defects(tmp_path / "defects", moss_samples)
    inputs = [str(tmp_path / "defects"), str(shared_dir / "moss-samples")]
    n = len(DEFECTS) + len(moss_samples)
    assert main(["convert", *inputs, "--to", "datagen", "--out", str(tmp_path / "datagen.jsonl")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"converted {n} conversations to datagen -> {tmp_path / 'datagen.jsonl'}",
        f"{len(MALFORMED)} of them have MOSS segments outside the grammar, kept verbatim "
        "(`datagen validate` lists them; `datagen filter` rejects them)",
    ]
    sources = [
        json.loads(line)["lineage"]["source"] for line in (tmp_path / "datagen.jsonl").open(encoding="utf-8")
    ]
    assert len(sources) == n
    chain = [("messages", "datagen"), ("sharegpt", "messages"), ("moss", "sharegpt")]
    for fmt, src in chain:  # on through the exports too: they carry what MOSS needs back
        assert (
            main(
                [
                    "convert",
                    str(tmp_path / f"{src}.jsonl"),
                    "--to",
                    fmt,
                    "--out",
                    str(tmp_path / f"{fmt}.jsonl"),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "convert",
                str(tmp_path / "datagen.jsonl"),
                "--to",
                "moss",
                "--out",
                str(tmp_path / "direct.jsonl"),
            ]
        )
        == 0
    )
    for out in ("direct.jsonl", "moss.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / out).open(encoding="utf-8")]
        assert [dumps_sft_file(r) for r in rows] == [open(s, encoding="utf-8").read() for s in sources]


def _tool_turn(rec, turn_no):
    """(tool_calls, tool messages) of turn `turn_no` in a messages record."""
    msgs = rec["messages"]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    start = users[turn_no - 1]
    end = users[turn_no] if turn_no < len(users) else len(msgs)
    part = msgs[start:end]
    calls = [tc for m in part for tc in m.get("tool_calls") or []]
    return calls, [m for m in part if m["role"] == "tool"]


def test_every_call_is_answered_by_its_own_result(samples):
    good = to_messages(from_sft(samples[MIX]))
    _, want = _tool_turn(good, 3)
    want = [m["content"] for m in want]
    assert want[2] == "4.300000000000001" and want[0].startswith("<|1|>: '(ChinaZ.com)")

    shuffled = to_messages(from_sft(defect_record("results_out_of_order", samples)))
    calls, tools = _tool_turn(shuffled, 3)
    assert [t["tool_call_id"] for t in tools] == [c["id"] for c in calls]
    assert [t["content"] for t in tools] == want  # matched by the call each result echoes

    for name, answered in (("fewer_results", 1), ("no_results", 0)):
        for metadata in (True, False):
            rec = to_messages(from_sft(defect_record(name, samples)), metadata=metadata)
            calls, tools = _tool_turn(rec, 3)
            assert [t["tool_call_id"] for t in tools] == [c["id"] for c in calls]  # none left unanswered
            assert [t["content"] for t in tools] == want[:answered] + ["No result."] * (3 - answered)
            missing = [t.get("datagen") for t in tools[answered:]]
            assert missing == ([{"missing": True}] * (3 - answered) if metadata else [None] * (3 - answered))
        obs = [
            m
            for m in to_sharegpt(from_sft(defect_record(name, samples)))["conversations"]
            if m["from"] == "observation"
        ]
        assert json.loads(obs[-1]["value"]) == want[:answered] + ["No result."] * (3 - answered)

    numbered = to_messages(from_sft(defect_record("numbered_commands", samples)), metadata=False)
    calls, tools = _tool_turn(numbered, 2)
    assert [c["function"]["arguments"] for c in calls] == [{"expression": "7*2"}, {"expression": "14^2"}]
    assert [t["content"] for t in tools] == ["14", "196"]


def test_tool_arguments_object_or_openai_string(tmp_path, shared_dir, capsys):
    one = (
        shared_dir
        / "moss-samples/conversation_with_plugins/calculator/calculator_plugin_conversation_84.json"
    )
    got = {}
    for form in ("object", "string", None):
        out = tmp_path / f"{form}.jsonl"
        extra = ["--tool-arguments", form] if form else []
        assert main(["convert", str(one), "--to", "messages", "--out", str(out), *extra]) == 0
        rec = json.loads(out.read_text(encoding="utf-8"))
        got[form] = [tc["function"]["arguments"] for m in rec["messages"] for tc in m.get("tool_calls") or []]
        assert (
            from_messages(rec).to_dict()
            == from_sft(json.loads(one.read_text(encoding="utf-8")), id=one.stem, path=str(one)).to_dict()
        )
    assert (
        got["object"] == got[None] == [{"expression": "7^2"}, {"expression": "7^2*4"}, {"expression": "14^2"}]
    )
    assert got["string"] == [json.dumps(a) for a in got["object"]]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--tool-arguments {object,string}" in help_text
    assert "Hugging Face chat templates" in help_text and "the OpenAI API wire form" in help_text


def test_exports_have_one_type_per_column(tmp_path, shared_dir, moss_samples, samples):
    """Arrow's JSON reader (what `datasets` 4 loads JSONL with) needs every row to give a field the
    same type: MOSS's conversation_id is an integer in plugin files and a string elsewhere, and
    unknown upstream keys may hold anything."""
    src = tmp_path / "in"
    write_defects(src, moss_samples)
    for i, value in enumerate([1, "high", [1, 2], None]):  # one upstream key, four JSON types
        rec = {**samples[CALC if i % 2 else "honest_conversation_7"], "quality": value}
        (src / f"extra_{i}.json").write_text(dumps_sft_file(rec), encoding="utf-8")
    for fmt in ("datagen", "messages", "sharegpt"):
        out = tmp_path / f"{fmt}.jsonl"
        assert (
            main(["convert", str(src), str(shared_dir / "moss-samples"), "--to", fmt, "--out", str(out)]) == 0
        )
        table = pa_json.read_json(out)  # raises ArrowInvalid on "changed from number to string"
        assert table.num_rows == len(DEFECTS) + 4 + len(moss_samples)
        extra = table.column("extra" if fmt == "datagen" else "datagen").type
        if fmt != "datagen":
            extra = extra.field("extra").type
        assert extra.field("conversation_id").type == pa.string()
    rows = [json.loads(line) for line in (tmp_path / "datagen.jsonl").open(encoding="utf-8")]
    assert (
        main(["convert", str(tmp_path / "datagen.jsonl"), "--to", "moss", "--out", str(tmp_path / "m.jsonl")])
        == 0
    )
    back = [json.loads(line) for line in (tmp_path / "m.jsonl").open(encoding="utf-8")]
    for row, sft in zip(rows, back, strict=True):  # types come back exactly as the source had them
        assert dumps_sft_file(sft) == open(row["lineage"]["source"], encoding="utf-8").read()
    assert {type(r["conversation_id"]).__name__ for r in back} == {"int", "str"}
