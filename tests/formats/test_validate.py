"""`datagen validate` on the samples and on deliberately broken files: exact problem lines, exit
codes, and no crash on any input."""

import gzip
import json

from datagen.cli import main
from datagen.formats.meta import build_meta_instruction
from datagen.formats.moss import from_sft
from datagen.formats.validate import check_conversation, validate_paths
from datagen.record import ToolCall, ToolResult


def _load(moss_samples, stem):
    return json.loads(next(p for p in moss_samples if p.stem == stem).read_text(encoding="utf-8"))


def _run(capsys, *args):
    rc = main(["validate", *map(str, args)])
    out = capsys.readouterr().out.splitlines()
    return rc, out


def test_samples_are_all_valid(capsys, shared_dir):
    rc, out = _run(capsys, shared_dir / "moss-samples")
    assert rc == 0
    assert out == [
        "48 conversations, 48 valid, 0 invalid "
        "(5 accepted deviations from the canonical form; --strict lists them)"
    ]


def test_strict_lists_the_accepted_deviations(capsys, shared_dir):
    rc, out = _run(capsys, shared_dir / "moss-samples", "--strict")
    assert rc == 1
    path = shared_dir / "moss-samples/conversation_with_plugins/mix/mix_plugin_conversation_50.json"
    assert out[:-1] == [
        f'{path}: turn 2: Tool Responses: Calculate("2^{"1" + "0" * k}") result is not quoted'
        for k in (2, 3, 4, 5, 6)
    ]
    assert out[-1].startswith("48 conversations, 47 valid, 1 invalid")


def _broken_records(moss_samples):
    """(record or raw line, expected problem lines after `file:N: `) — one kind of damage each."""
    honest = _load(moss_samples, "honest_conversation_7")
    mix = _load(moss_samples, "mix_plugin_conversation_15")

    def edit(base, fn):
        r = json.loads(json.dumps(base))
        fn(r)
        return r

    def swap(r):
        t = r["chat"]["turn_1"]
        t["Human"], t["MOSS"] = t["MOSS"], t["Human"]

    def plugin_off(r):
        r["chat"]["turn_1"]["Commands"] = '<|Commands|>: Search("x")<eoc>\n'
        r["chat"]["turn_1"]["Tool Responses"] = "<|Results|>:\nSearch(\"x\") =>\n<|1|>: 'y'\n<eor>\n"

    cut = json.dumps(honest, ensure_ascii=False)[:300]
    return [
        (edit(honest, lambda r: r.pop("chat")), ["chat: missing"]),
        (
            edit(
                honest,
                lambda r: r["chat"]["turn_2"].update(
                    Human=r["chat"]["turn_2"]["Human"].replace("<eoh>", "<eom>")
                ),
            ),
            ["turn 2: Human: missing end tag <eoh>, found <eom>"],
        ),
        (
            edit(honest, swap),
            [
                "turn 1: Human: expected '<|Human|>:', found '<|MOSS|>:' (segments out of order?)",
                "turn 1: MOSS: expected '<|MOSS|>:', found '<|Human|>:' (segments out of order?)",
            ],
        ),
        (edit(honest, lambda r: r.update(num_turns=9)), ["num_turns: is 9 but chat has 4 turns"]),
        (edit(honest, lambda r: r.update(num_turns="4")), ["num_turns: expected an integer, got a string"]),
        (
            edit(mix, lambda r: r["chat"]["turn_1"].update(Commands="<|Commands|>: Search(三星)<eoc>\n")),
            [
                "turn 1: Commands: cannot parse a command at column 1: 'Search(三星)' (expected Name(\"argument\") or None)"
            ],
        ),
        (
            edit(
                mix,
                lambda r: r["chat"]["turn_3"].update(
                    Commands='<|Commands|>: Search("苹果 欧洲 市场份额"), Search("x")<eoc>\n'
                ),
            ),
            [
                "turn 3: Tool Responses: 3 result(s) for 2 command(s)",
                'turn 3: Tool Responses: result 2 is for Search("三星 欧洲 市场份额") but command 2 is Search("x")',
            ],
        ),
        (
            edit(
                mix,
                lambda r: r["chat"]["turn_3"].update(
                    {"Tool Responses": r["chat"]["turn_3"]["Tool Responses"].replace("<|2|>", "<|1|>")}
                ),
            ),
            [
                'turn 3: Tool Responses: snippets of Search("三星 欧洲 市场份额") start at <|1|>, expected <|2|> '
                "(numbering continues across the searches of a turn)"
            ],
        ),
        (
            edit(honest, plugin_off),
            ["turn 1: Commands: Search is used but search is not enabled in the meta instruction"],
        ),
        (
            edit(honest, lambda r: r.update(chat=dict(reversed(list(r["chat"].items()))))),
            ["chat: turn keys are out of order"],
        ),
        (
            edit(honest, lambda r: r["chat"]["turn_1"].update(MOSS="<|MOSS|>: a <eoh> b<eom>\n")),
            ["turn 1: MOSS: contains the MOSS tag '<eoh>' inside the text"],
        ),
        (
            edit(honest, lambda r: r["chat"]["turn_3"].pop("Commands")),
            ["turn 3: missing key(s) ['Commands']"],
        ),
        (
            edit(
                honest,
                lambda r: r.update(
                    meta_instruction=r["meta_instruction"].replace("- Calculator: disabled.\n", "")
                ),
            ),
            ["meta_instruction: missing capability line(s): Calculator"],
        ),
        ("42", ["expected a JSON object, got a number"]),
        (
            '{"foo": 1}',
            [
                "unknown record format (keys: foo); expected datagen (id, turns), MOSS SFT (chat), "
                "OpenAI messages (messages) or ShareGPT (conversations)"
            ],
        ),
        ('{"id": "a", "turns": [{"human": 1, "assistant": ""}]}', ["turn 1: human: expected a string"]),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}',
            ["messages[0]: expected the assistant's answer, got the end of the conversation"],
        ),
        (cut, ["truncated JSON: Invalid control character at (column 301)"]),
    ]


def test_broken_jsonl_reports_every_problem_with_its_line(capsys, tmp_path, moss_samples):
    cases = _broken_records(moss_samples)
    path = tmp_path / "broken.jsonl"
    good = json.dumps(_load(moss_samples, "honest_conversation_7"), ensure_ascii=False)
    lines = (
        [good] + [c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c, _ in cases] + [good]
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, out = _run(capsys, path)
    expected = [f"{path}:{n}: {msg}" for n, (_, msgs) in enumerate(cases, start=2) for msg in msgs]
    assert out[:-1] == expected
    assert out[-1] == f"{len(cases) + 2} conversations, 2 valid, {len(cases)} invalid"
    assert rc == 1


def test_unreadable_files(capsys, tmp_path, moss_samples):
    sample = next(p for p in moss_samples if p.stem == "honest_conversation_7").read_text(encoding="utf-8")
    d = tmp_path / "data"
    d.mkdir()
    (d / "a_empty.jsonl").write_bytes(b"")
    (d / "b_blank.json").write_bytes(b"  \n\n")
    cut = sample.index('"chat": {') + len('"chat": {')
    (d / "c_truncated.json").write_text(sample[:cut], encoding="utf-8")
    (d / "d_latin1.json").write_bytes(sample.encode("utf-8").replace("你".encode(), "é".encode("latin-1"), 1))
    (d / "e_latin1.jsonl").write_bytes(b'{"id": "x", "turns": []}\n{"id": "caf\xe9", "turns": []}\n')
    (d / "f_binary.json").write_bytes(bytes(range(256)) * 8)
    (d / "g_utf16.json").write_bytes(sample.encode("utf-16"))
    (d / "h_array.json").write_text(
        '[{"id": "a", "turns": [{"human": "h", "assistant": "a"}]},\n 7,\n {"id": ', encoding="utf-8"
    )
    (d / "i_extra.json").write_text('{"id": "a", "turns": []} }', encoding="utf-8")
    (d / "j_garbage.jsonl").write_bytes(b"\x89PNG\r\n" + b"not json at all\n" * 30)
    (d / ".hidden.jsonl").write_bytes(b"garbage")  # hidden files are skipped
    (d / "notes.txt").write_bytes(b"garbage")  # and non-JSON extensions inside folders
    rc, out = _run(capsys, d)
    latin_byte = sample.encode("utf-8").index("你".encode()) + 1
    trunc_line = sample[:cut].count("\n") + 1
    assert out == [
        f"{d}/a_empty.jsonl: empty file",
        f"{d}/b_blank.json: empty file (only whitespace)",
        f"{d}/c_truncated.json:{trunc_line}: truncated JSON: Expecting property name enclosed in double quotes "
        f"(column {len(sample[:cut].rsplit(chr(10), 1)[-1]) + 1})",
        f"{d}/d_latin1.json: not UTF-8 (invalid continuation byte at byte {latin_byte})",
        f"{d}/e_latin1.jsonl:1: turns: no turns",
        f"{d}/e_latin1.jsonl:2: not UTF-8 (invalid continuation byte at byte 12)",
        f"{d}/f_binary.json: binary file (NUL bytes); expected UTF-8 JSON",
        f"{d}/g_utf16.json: UTF-16 file; convert it to UTF-8",
        f"{d}/h_array.json:2: expected a JSON object, got a number",
        f"{d}/h_array.json:3: truncated JSON: Expecting value (column 9)",
        f"{d}/i_extra.json:1: turns: no turns",
        f"{d}/i_extra.json:1: invalid JSON: extra data after the JSON value (column 26)",
        f"{d}/j_garbage.jsonl:1: not UTF-8 (invalid start byte at byte 1)",
        *[f"{d}/j_garbage.jsonl:{n}: invalid JSON: Expecting value (column 1)" for n in range(2, 21)],
        f"{d}/j_garbage.jsonl:20: gave up after 20 unreadable lines and none readable (not a JSONL file?)",
        # conversations: 2 in e, 2 in h (one valid), 1 in i, 20 lines of j
        "25 conversations, 1 valid, 24 invalid, 9 unreadable files",
    ]
    assert rc == 1


def test_odd_inputs_never_crash(capsys, tmp_path):
    deep = tmp_path / "deep.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    deep.write_text("[" * 100_000 + "\n" + json.dumps(chat) + "\n", encoding="utf-8")
    deep_doc = tmp_path / "deep.json"
    deep_doc.write_text('{"a": ' * 100_000 + "\n", encoding="utf-8")
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    missing = tmp_path / "missing.jsonl"
    rc, out = _run(capsys, deep, deep_doc, gz, missing)
    assert out == [
        f"{deep}:1: JSON nested too deeply",
        f"{deep_doc}:1: JSON nested too deeply",
        f"{gz}: cannot read: Not a gzipped file (b'no')",
        f"{missing}: no such file or folder",
        "2 conversations, 1 valid, 1 invalid, 3 unreadable files",  # line 2 of deep.jsonl: bare messages
    ]
    assert rc == 1


def test_check_conversation_on_built_records():
    conv = from_sft(
        json.loads(
            json.dumps(
                {
                    "conversation_id": 1,
                    "meta_instruction": build_meta_instruction(["calculator"], True),
                    "num_turns": 1,
                    "chat": {
                        "turn_1": {
                            "Human": "<|Human|>: 2*3?<eoh>\n",
                            "Inner Thoughts": "<|Inner Thoughts|>: calc<eot>\n",
                            "Commands": '<|Commands|>: Calculate("2*3")<eoc>\n',
                            "Tool Responses": "<|Results|>:\nCalculate(\"2*3\") => '6'\n<eor>\n",
                            "MOSS": "<|MOSS|>: 6<eom>\n",
                        }
                    },
                }
            )
        )
    )
    assert check_conversation(conv) == []
    conv.turns[0].results.append(ToolResult("Calculate", "9", output="9"))
    conv.turns[0].calls.append(ToolCall("Search", "q"))
    assert [i.format() for i in check_conversation(conv)] == [
        "turn 1: Commands: Search is used but search is not enabled in the meta instruction",
        'turn 1: Tool Responses: result 2 is for Calculate("9") but command 2 is Search("q")',
    ]
    conv.turns[0].results.clear()
    conv.turns[0].thoughts = "None"
    assert [i.format() for i in check_conversation(conv)][
        -1
    ] == "turn 1: Tool Responses: 2 command(s) but no results"
    conv.turns[0].calls.pop()
    conv.turns[0].results = [ToolResult("Calculate", "2*3", output="6")]
    assert [i.format() for i in check_conversation(conv)] == [
        "turn 1: Inner Thoughts: renders to text that parses back differently"  # the literal thought "None"
    ]


def test_validate_paths_api_counts(tmp_path, moss_samples):
    lines = []
    good = json.dumps(_load(moss_samples, "honest_conversation_7"))
    (tmp_path / "a.jsonl").write_text(good + "\n{}\n", encoding="utf-8")
    summary = validate_paths(tmp_path, report=lines.append)
    assert (summary.conversations, summary.valid, summary.invalid, summary.unreadable_files) == (2, 1, 1, 0)
    assert lines == [
        f"{tmp_path}/a.jsonl:2: unknown record format (keys: none); expected datagen (id, turns), "
        "MOSS SFT (chat), OpenAI messages (messages) or ShareGPT (conversations)"
    ]
    assert not summary.ok


def test_gzip_input_validates(capsys, tmp_path, moss_samples):
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(_load(moss_samples, "mix_plugin_conversation_15")) + "\n")
    assert _run(capsys, path) == (0, ["1 conversation, 1 valid, 0 invalid"])
