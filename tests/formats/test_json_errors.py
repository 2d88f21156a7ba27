"""JSON that the readers cannot hold (a torn last line, a 5,000-digit number, 100,000 open
brackets) is one problem at its file and line: `validate` reports it, `convert` fails with one
`Error:` line and writes nothing, and no command shows a traceback."""

import json

import pytest

from datagen.cli import main


@pytest.fixture()
def good(moss_samples):
    path = next(p for p in moss_samples if p.stem == "honest_conversation_7")
    return json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False)


@pytest.mark.parametrize("before", [0, 2], ids=["only-line", "last-line"])
def test_torn_last_line_is_an_error_for_validate_and_convert(tmp_path, capsys, good, before):
    path = tmp_path / "cut.jsonl"
    path.write_text("".join(good + "\n" for _ in range(before)) + good[:200], encoding="utf-8")
    line = before + 1
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        f"{path}:{line}: the last line is cut off: no newline at its end and not valid JSON"
    )
    assert out[-1] == f"{before + 1} conversation{'s' if before else ''}, {before} valid, 1 invalid"

    dest = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "--to", "messages", "--out", str(dest)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error: {path}:{line}: the last line is cut off")
    assert not dest.exists()

    assert main(["convert", str(path), "--to", "messages", "--out", str(dest), "--on-error", "warn"]) == (
        0 if before else 1
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"skipped: {path}:{line}: the last line is cut off")
    if before:
        assert err[1:] == [f"converted {before} conversations to messages (1 skipped) -> {dest}"]
        assert len(dest.read_text(encoding="utf-8").splitlines()) == before
    else:  # a conversion that read nothing is not a success, and leaves no empty file
        assert err[1:] == [
            f"Error: {path}: nothing to convert: no readable record (1 unreadable; "
            "`datagen validate` says why)"
        ]
        assert not dest.exists()


def test_converting_an_empty_input_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    dest = tmp_path / "out.jsonl"
    assert main(["convert", str(tmp_path / "empty"), "--to", "moss", "--out", str(dest)]) == 1
    assert (
        capsys.readouterr().err
        == f"Error: {tmp_path / 'empty'}: nothing to convert: the input holds no records\n"
    )
    assert not dest.exists()


BIG_NUMBER = '{"id": "a", "turns": [], "n": ' + "7" * 5000 + "}"
DEEP = "[" * 100_000


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            BIG_NUMBER,
            "invalid JSON: a number too long to read (Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits)",
        ),
        (DEEP, "JSON nested too deeply"),
    ],
    ids=["5000-digits", "deep"],
)
def test_json_too_big_to_hold_is_one_error_line(tmp_path, capsys, suffix, text, reason):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text + "\n", encoding="utf-8")
    commands = [
        ["convert", str(path), "--to", "moss", "--out", str(tmp_path / "o.jsonl")],
        ["filter", str(path), "--out", str(tmp_path / "filtered"), "--workers", "1"],
    ]
    if suffix == ".jsonl":
        commands.append(["seeds", "stats", str(path)])  # datagen.io's reader, behind every stage
    for argv in commands:
        assert main(argv) == 1, argv
        cap = capsys.readouterr()
        assert cap.err.splitlines() == [f"Error: {path}:1: {reason}"], argv
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"{path}:1: {reason}"
