"""`datagen convert` and `datagen stats` through `datagen.cli.main`."""

import json
from collections import Counter

import pytest

from datagen.cli import main
from datagen.formats.moss import dumps_sft_file, from_sft, to_sft
from datagen.formats.reader import read_conversations


@pytest.fixture(scope="module")
def samples(moss_samples):
    return [(p, p.read_text(encoding="utf-8")) for p in moss_samples]


def test_convert_chain_is_lossless(tmp_path, shared_dir, samples, capsys):
    src = shared_dir / "moss-samples"
    steps = [
        ("datagen", src),
        ("messages", tmp_path / "datagen.jsonl"),
        ("sharegpt", tmp_path / "messages.jsonl"),
        ("moss", tmp_path / "sharegpt.jsonl"),
    ]
    for fmt, inp in steps:
        assert main(["convert", str(inp), "--to", fmt, "--out", str(tmp_path / f"{fmt}.jsonl")]) == 0
        assert (
            capsys.readouterr().err == f"converted 48 conversations to {fmt} -> {tmp_path / f'{fmt}.jsonl'}\n"
        )
    rows = [json.loads(line) for line in (tmp_path / "moss.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [dumps_sft_file(r) for r in rows] == [text for _, text in samples]


def test_convert_to_stdout_without_metadata(shared_dir, capsys):
    one = (
        shared_dir
        / "moss-samples/conversation_with_plugins/calculator/calculator_plugin_conversation_84.json"
    )
    assert main(["convert", str(one), "--to", "messages", "--out", "-", "--no-metadata"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    rec = json.loads(out[0])
    assert set(rec) == {"id", "messages", "tools"}
    assert [m["role"] for m in rec["messages"]][:6] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


def test_convert_fails_or_skips_bad_records(tmp_path, samples, capsys):
    good = json.loads(samples[0][1])
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(good) + "\n" + '{"chat": 1}\n' + json.dumps(good) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(src), "--to", "moss", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"Error: {src}:2: conversation_id: missing\n"
    assert not out.exists()  # atomic: nothing half-written
    assert main(["convert", str(src), "--to", "moss", "--out", str(out), "--on-error", "warn"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"skipped: {src}:2: conversation_id: missing",
        f"converted 2 conversations to moss (1 skipped) -> {out}",
    ]
    assert [json.loads(x) for x in out.read_text().splitlines()] == [good, good]
    assert main(["convert", str(src), "--to", "moss", "--out", str(out), "--on-error", "skip"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"converted 2 conversations to moss (1 skipped) -> {out}"]


def test_stats_json_counts(shared_dir, samples, capsys):
    assert main(["stats", str(shared_dir / "moss-samples"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    records = [json.loads(text) for _, text in samples]
    assert st["conversations"] == 48
    assert st["turns"] == sum(r["num_turns"] for r in records)
    assert st["category"] == dict(Counter(r.get("category", "(none)") for r in records))
    assert st["num_turns"] == {str(k): v for k, v in sorted(Counter(r["num_turns"] for r in records).items())}
    n_calls = Counter()
    for r in records:
        conv = from_sft(r)
        for t in conv.turns:
            n_calls.update(c.name for c in t.calls)
    assert st["calls"] == dict(n_calls)
    assert st["kind"] == {"hhh": 28, "plugin": 20}
    lengths = sorted(sum(len(s) for t in r["chat"].values() for s in t.values()) for r in records)
    assert (st["chars"]["min"], st["chars"]["max"]) == (lengths[0], lengths[-1])
    assert sum(st["language"].values()) == 48 and st["language_guessed"] == 48


def test_stats_table_and_unreadable(tmp_path, samples, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(json.loads(samples[0][1])) + "\nnot json\n", encoding="utf-8")
    assert main(["stats", str(src)]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[:3] == [
        "conversations           1",
        "turns                   2",
        "unreadable              1  (run `datagen validate` for details)",
    ]
    assert "category\n  tool  " in cap.out
    assert cap.err == "1 records could not be read; run `datagen validate` for details.\n"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("validate", "convert", "stats"):
        assert cmd in out


def test_reader_output_feeds_to_sft(tmp_path, samples):
    # the contract other stages rely on: read_conversations -> to_sft
    assert [to_sft(c) for c in read_conversations([p for p, _ in samples])] == [
        json.loads(t) for _, t in samples
    ]
