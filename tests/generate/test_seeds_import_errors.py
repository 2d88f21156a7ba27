"""`datagen seeds import` on broken sources: one `Error:` line naming file and line, or a rejected
row, never a traceback and never a silent merge (issue 11)."""

import json

import pytest

from datagen.cli import main
from datagen.seeds import sources as seeds_module
from datagen.seeds.importer import import_seeds
from datagen.seeds.record import read_seeds


def _import(src, out, *flags):
    return main(["seeds", "import", str(src), "--field", "prompt", "--out", str(out), *flags])


def test_csv_unclosed_quote_is_an_error_at_its_line(tmp_path, capsys):
    src = tmp_path / "prompts.csv"
    src.write_text(
        'prompt,lang\nWrite a haiku about rain.,en\n"Explain tides\nsimply,en\n'
        "Name three rivers.,en\nWhat is BM25?,en\n",
        encoding="utf-8",
    )
    out = tmp_path / "seeds.jsonl"
    assert _import(src, out) == 1
    assert capsys.readouterr().err == (
        f"Error: {src}:3: unclosed quote: the quoted field opened in the row starting here runs to the end of "
        "the file\n"
    )
    assert not out.exists()


def test_csv_stray_quote_is_an_error_at_its_line(tmp_path, capsys):
    src = tmp_path / "prompts.csv"
    src.write_text('prompt\nWrite a haiku.\n"Explain" tides\n', encoding="utf-8")
    assert _import(src, tmp_path / "seeds.jsonl") == 1
    assert capsys.readouterr().err == (
        f"Error: {src}:3: malformed CSV in the row starting here (',' expected after '\"'; a quote inside a "
        'quoted field is written "")\n'
    )


def test_csv_quoted_multiline_fields_keep_their_first_line(tmp_path):
    src = tmp_path / "prompts.csv"
    src.write_text('prompt,lang\n"Write a poem\nabout the sea.",en\nShort one here.,en\n', encoding="utf-8")
    result = import_seeds(src, field="prompt", lang_field="lang")
    assert [(s.extra["row"], s.text) for s in result.seeds] == [
        (2, "Write a poem\nabout the sea."),
        (4, "Short one here."),
    ]


def test_csv_field_past_pythons_default_limit_imports(tmp_path, capsys):
    src = tmp_path / "long.csv"
    src.write_text(
        "prompt,context\nSummarise the context.," + "x" * 140_000 + "\n" + "p" * 140_000 + ",none\n",
        encoding="utf-8",
    )
    out = tmp_path / "seeds.jsonl"
    assert _import(src, out) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{src}:3: too_long 140000 > 8000 characters" in err
    assert [s.text for s in read_seeds(out)] == ["Summarise the context."]


def test_csv_field_past_the_limit_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seeds_module, "CSV_FIELD_LIMIT", 1000)
    src = tmp_path / "long.csv"
    src.write_text("prompt\nfine\n" + "x" * 2000 + "\n", encoding="utf-8")
    assert _import(src, tmp_path / "seeds.jsonl") == 1
    assert capsys.readouterr().err == (
        f"Error: {src}:3: a field longer than 1000 characters in the row starting here (an unclosed quote?)\n"
    )


def test_corrupt_parquet_is_one_error_line(tmp_path, capsys):
    src = tmp_path / "prompts.parquet"
    src.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    assert _import(src, tmp_path / "seeds.jsonl") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {src}: not a readable Parquet file (") and err.count("\n") == 1


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_5000_digit_integer_does_not_stop_the_row(tmp_path, capsys, suffix):
    rows = [
        '{"id": ' + "7" * 5000 + ', "prompt": "Explain how tides work."}',
        '{"id": 2, "prompt": ' + "9" * 5000 + "}",
    ]
    src = tmp_path / f"big{suffix}"
    src.write_text(
        ("[" + ",\n".join(rows) + "]") if suffix == ".json" else "\n".join(rows) + "\n", encoding="utf-8"
    )
    out = tmp_path / "seeds.jsonl"
    assert _import(src, out, "--id-field", "id") == 0
    err = capsys.readouterr().err
    assert f"{src}:2: not_text 'prompt' is a number" in err and "Traceback" not in err
    (seed,) = read_seeds(out)
    assert seed.text == "Explain how tides work." and seed.source_id == "7" * 5000


def test_json_nested_too_deeply_is_one_error_line(tmp_path, capsys):
    src = tmp_path / "deep.json"
    src.write_text("[" * 100_000, encoding="utf-8")
    assert _import(src, tmp_path / "seeds.jsonl") == 1
    assert capsys.readouterr().err == f"Error: {src}: not a JSON file (nested too deeply)\n"


def test_jsonl_line_nested_too_deeply_is_a_rejected_row(tmp_path, capsys):
    src = tmp_path / "deep.jsonl"
    src.write_text(
        json.dumps({"prompt": "Name three rivers."}) + "\n" + "[" * 100_000 + "\n", encoding="utf-8"
    )
    out = tmp_path / "seeds.jsonl"
    assert _import(src, out) == 0
    err = capsys.readouterr().err
    assert f"{src}:2: invalid_json nested too deeply" in err and "Traceback" not in err
    assert [s.text for s in read_seeds(out)] == ["Name three rivers."]


def test_sample_per_cell_zero_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "text": "Name three rivers."}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["seeds", "sample", str(seeds), "--per-cell", "0", "--out", str(tmp_path / "s.jsonl")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "datagen seeds sample: error: argument --per-cell: must be at least 1, got 0"
    )


def test_unreadable_datasets_folder_is_one_error_line(tmp_path, capsys):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}", encoding="utf-8")
    assert (
        main(["seeds", "import", str(folder), "--field", "prompt", "--out", str(tmp_path / "o.jsonl")]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {folder}: not a readable `datasets` folder (") and err.count("\n") == 1
