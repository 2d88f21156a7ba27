"""`datagen check`: scored rows, report, resume by id, thresholds, and the pipeline's stage."""

from __future__ import annotations

import json

import pytest

from datagen.check.files import run_check, scored_ids
from datagen.cli import main
from datagen.errors import ConfigError
from datagen.formats.moss import from_sft
from datagen.io import iter_conversations, write_jsonl_atomic
from tests.moss.conftest import build_tiny_moss, corpus, sft_record

N = 8


@pytest.fixture()
def conversations_file(tmp_path):
    convs = []
    for i in range(N):
        conv = from_sft(
            sft_record(
                f"c{i}", [(f"Question number {i}?" + " Why?" * i, f"Answer {i}."), ("And then?", "Done.")]
            )
        )
        conv.id = f"c{i}"
        convs.append(conv)
    path = tmp_path / "in.jsonl"
    write_jsonl_atomic(path, convs)
    return path


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_check_scores_reports_and_resumes_after_a_kill(tiny_moss, conversations_file, tmp_path, capsys):
    out = tmp_path / "out" / "scored.jsonl"
    args = [
        "check",
        str(conversations_file),
        "--model",
        str(tiny_moss),
        "--out",
        str(out),
        "--max-length",
        "512",
        "--batch-size",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"scored {N} dialogues" in printed and "loss" in printed
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == sorted(f"c{i}" for i in range(N))
    for r in rows:
        s = r["scores"]
        assert s["moss_fits"] and len(s["moss_turn_losses"]) == 2 and s["moss_loss"] > 0
    report = json.loads((tmp_path / "out" / "scored.report.json").read_text())
    assert report["report"]["scored"] == N and report["scored_now"] == N
    first = {r["id"]: r["scores"] for r in rows}

    # A killed run: three rows and a torn fourth line. The rerun scores only the missing rows.
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:40], encoding="utf-8")
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["resumed"], summary["scored_now"]) == (3, N - 3)
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == sorted(first)  # no duplicates, nothing lost
    for r in rows:
        assert r["scores"]["moss_loss"] == pytest.approx(first[r["id"]]["moss_loss"], abs=1e-5)
    # Nothing left to do: the model is not even loaded.
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scored_now"] == 0


def test_check_refuses_to_mix_settings(tiny_moss, conversations_file, tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    base = ["check", str(conversations_file), "--model", str(tiny_moss), "--out", str(out), "--no-progress"]
    assert main([*base, "--max-length", "512", "--max-rows", "2"]) == 0
    capsys.readouterr()
    assert main([*base, "--max-length", "256"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "other settings" in err and str(out) in err


def test_check_threshold_writes_kept_and_rejected(tiny_moss, conversations_file, tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "check",
                str(conversations_file),
                "--model",
                str(tiny_moss),
                "--out",
                str(out),
                "--max-length",
                "512",
                "--percentile",
                "50",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "moss_check: kept" in capsys.readouterr().out
    kept = list(iter_conversations(tmp_path / "scored.kept.jsonl"))
    rejected = _rows(tmp_path / "scored.rejected.jsonl")
    assert len(kept) + len(rejected) == N and rejected
    cutoff = max(c.scores["moss_loss"] for c in kept)
    for r in rejected:
        assert r["rejected"]["step"] == "moss_check" and r["rejected"]["reason"] == "loss_above_percentile"
        assert r["scores"]["moss_loss"] > cutoff


def test_pipeline_stage_writes_its_folder(tiny_moss, conversations_file, tmp_path):
    out_dir = tmp_path / "checked"
    info = run_check(
        conversations_file,
        out_dir,
        model=str(tiny_moss),
        batch_size=4,
        max_length=512,
        max_loss=100.0,
        progress=False,
    )
    for name in ("scored.jsonl", "kept.jsonl", "rejected.jsonl", "report.json"):
        assert (out_dir / name).is_file(), name
    assert info["count"] == N and info["in"] == N
    assert info["funnel_step"] == {
        "step": "moss_check",
        "in": N,
        "kept": N,
        "dropped": 0,
        "tagged": 0,
        "reasons": {},
    }
    assert len(list(iter_conversations(out_dir / "kept.jsonl"))) == N


def test_repeated_ids_are_counted(tiny_moss, tmp_path, capsys):
    conv = from_sft(sft_record("same", [("Hi.", "Hello!")]))
    inp = tmp_path / "dup.jsonl"
    write_jsonl_atomic(inp, [conv, conv])
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "check",
                str(inp),
                "--model",
                str(tiny_moss),
                "--out",
                str(out),
                "--max-length",
                "256",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["duplicate_ids"] == 1 and "repeat an id" in captured.err
    assert len(_rows(out)) == 1


# --------------------------------------------------------------------------- max_length (the model's context)


@pytest.fixture(scope="module")
def short_moss(tmp_path_factory, moss_records):
    """A tiny MOSS checkpoint whose context (256) is shorter than MOSS's 2048."""
    folder = tmp_path_factory.mktemp("short-moss")
    build_tiny_moss(folder, corpus(moss_records), n_positions=256)
    return folder


def test_unset_max_length_is_the_models_context(short_moss, conversations_file, tmp_path):
    info = run_check(conversations_file, tmp_path / "checked", model=str(short_moss), progress=False)
    assert info["settings"]["max_length"] == 256 and info["count"] == N


def test_max_length_beyond_the_context_fails_in_one_line_before_loading(
    short_moss, conversations_file, tmp_path
):
    config_only = tmp_path / "config-only"  # no weights: loading the model would fail differently
    config_only.mkdir()
    (config_only / "config.json").write_text((short_moss / "config.json").read_text())
    with pytest.raises(ConfigError) as err:
        run_check(
            conversations_file, tmp_path / "checked", model=str(config_only), max_length=2048, progress=False
        )
    assert err.value.field == "check.max_length"
    assert "2048 is beyond the model's context (256 tokens)" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "checked" / "scored.jsonl").exists()


# --------------------------------------------------------------------------- torn tails


def test_torn_tail_is_not_done_but_a_row_that_lost_its_newline_is(tmp_path):
    out = tmp_path / "scored.jsonl"
    rows = [json.dumps({"id": f"c{i}", "turns": [], "scores": {"moss_loss": 1.0}}) for i in range(3)]
    out.write_text(rows[0] + "\n" + rows[1] + "\n" + rows[2][:20], encoding="utf-8")  # killed mid-row
    assert scored_ids(out) == {"c0", "c1"}
    # Killed between the row and its newline: the row is whole, and AppendWriter keeps it.
    out.write_text(rows[0] + "\n" + rows[1] + "\n" + rows[2], encoding="utf-8")
    assert scored_ids(out) == {"c0", "c1", "c2"}


def test_a_non_utf8_line_mid_file_names_file_and_line(tmp_path):
    from datagen.errors import InputError

    out = tmp_path / "scored.jsonl"
    rows = [json.dumps({"id": f"c{i}", "turns": [], "scores": {"moss_loss": 1.0}}).encode() for i in range(3)]
    latin1 = rows[1].replace(b'"c1"', b'"c1-caf\xe9"')  # a Latin-1 byte inside a string
    out.write_bytes(rows[0] + b"\n" + latin1 + b"\n" + rows[2] + b"\n")
    with pytest.raises(InputError, match="UTF-8") as info:
        scored_ids(out)
    assert info.value.path == str(out) and info.value.line == 2
    # the same bytes on a last line without its newline are a torn tail (killed mid-character)
    out.write_bytes(rows[0] + b"\n" + rows[2] + b"\n" + rows[1][:10] + b"\xe4\xb8")
    assert scored_ids(out) == {"c0", "c2"}


def test_kept_rows_end_with_a_newline_when_the_scored_file_lost_its_last_one(
    tiny_moss, conversations_file, tmp_path
):
    out_dir = tmp_path / "checked"
    run_check(
        conversations_file,
        out_dir,
        model=str(tiny_moss),
        max_length=512,
        max_loss=100.0,
        max_rows=3,
        progress=False,
    )
    scored = out_dir / "scored.jsonl"
    scored.write_bytes(scored.read_bytes().rstrip(b"\n"))  # killed between the last row and its newline
    info = run_check(
        conversations_file,
        out_dir,
        model=str(tiny_moss),
        max_length=512,
        max_loss=100.0,
        max_rows=3,
        progress=False,
    )
    assert info["scored_now"] == 0 and info["count"] == N
    kept = out_dir / "kept.jsonl"
    assert kept.read_bytes().count(b"\n") == N
    assert [c.id for c in iter_conversations(kept)] == [f"c{i}" for i in range(N)]


def test_check_reads_an_input_with_a_torn_tail(tiny_moss, conversations_file, tmp_path, capsys):
    torn = tmp_path / "torn.jsonl"
    text = conversations_file.read_text(encoding="utf-8")
    torn.write_text(
        text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").rsplit("\n", 1)[1][:50],
        encoding="utf-8",
    )
    out = tmp_path / "scored.jsonl"
    assert (
        main(
            [
                "check",
                str(torn),
                "--model",
                str(tiny_moss),
                "--out",
                str(out),
                "--max-length",
                "512",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["scored_now"] == N - 1
    assert len(_rows(out)) == N - 1


# --------------------------------------------------------------------------- max_rows and streaming


def test_max_rows_passes_the_unscored_rows_through_to_kept(tiny_moss, conversations_file, tmp_path):
    out_dir = tmp_path / "checked"
    info = run_check(
        conversations_file,
        out_dir,
        model=str(tiny_moss),
        max_length=512,
        max_loss=100.0,
        max_rows=3,
        progress=False,
    )
    assert info["funnel_step"] == {
        "step": "moss_check",
        "in": N,
        "kept": N,
        "dropped": 0,
        "tagged": 0,
        "reasons": {},
        "unscored": N - 3,
    }
    assert (info["in"], info["count"], info["unscored"]) == (N, N, N - 3)
    kept = _rows(out_dir / "kept.jsonl")
    assert [r["id"] for r in kept] == [f"c{i}" for i in range(N)]
    assert all("moss_loss" in r["scores"] for r in kept[:3])
    originals = {r["id"]: r for r in _rows(conversations_file)}
    assert kept[3:] == [originals[f"c{i}"] for i in range(3, N)]  # unchanged, no scores
    assert len(_rows(out_dir / "scored.jsonl")) == 3


def test_max_rows_with_a_percentile_judges_only_the_scored_rows(tiny_moss, conversations_file, tmp_path):
    info = run_check(
        conversations_file,
        tmp_path / "checked",
        model=str(tiny_moss),
        max_length=512,
        percentile=50,
        max_rows=4,
        progress=False,
    )
    step = info["funnel_step"]
    assert step["dropped"] == 2 and step["unscored"] == N - 4 and step["kept"] == N - 2 and step["in"] == N
    rejected = _rows(tmp_path / "checked" / "rejected.jsonl")
    assert {r["id"] for r in rejected} <= {f"c{i}" for i in range(4)}


def test_the_input_is_parsed_once(tiny_moss, conversations_file, tmp_path, monkeypatch):
    from datagen.formats import reader

    calls = []
    real = reader.iter_records

    def counting(*args, **kwargs):
        calls.append(args)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(reader, "iter_records", counting)
    info = run_check(
        conversations_file,
        tmp_path / "checked",
        model=str(tiny_moss),
        max_length=512,
        percentile=90,
        progress=False,
    )
    assert info["in"] == N and len(calls) == 1
    scored = (tmp_path / "checked" / "scored.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    kept = (tmp_path / "checked" / "kept.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    assert set(kept) <= set(scored) and len(kept) == N - 1  # kept rows are copied byte for byte
