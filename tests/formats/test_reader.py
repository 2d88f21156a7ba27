"""read_conversations / iter_records: files and folders, format detection per record, JSON arrays
streamed in chunks, gzip and zip, error policies, and a 100 MB line."""

import gzip
import json
import logging
import zipfile

import pytest

from datagen.errors import FormatError
from datagen.formats import reader
from datagen.formats.messages import to_messages
from datagen.formats.moss import dumps_sft_file, from_sft, to_sft
from datagen.formats.reader import Location, detect_format, iter_records, read_conversations
from datagen.formats.sharegpt import to_sharegpt


@pytest.fixture(scope="module")
def sample_records(moss_samples):
    return [json.loads(p.read_text(encoding="utf-8")) for p in moss_samples]


def test_reads_the_sample_folder_in_order(shared_dir, moss_samples):
    convs = list(read_conversations(shared_dir / "moss-samples"))
    assert [c.lineage.source for c in convs] == [str(p) for p in moss_samples]
    # upstream numbers conversations per folder, so one-record files are keyed by file name
    assert [c.id for c in convs] == [p.stem for p in moss_samples]
    assert len({json.loads(p.read_text(encoding="utf-8"))["conversation_id"] for p in moss_samples}) < 48
    assert [dumps_sft_file(to_sft(c)) for c in convs] == [p.read_text(encoding="utf-8") for p in moss_samples]


def test_mixed_formats_in_one_jsonl(tmp_path, sample_records):
    convs = [from_sft(r) for r in sample_records[:4]]
    rows = [to_sft(convs[0]), convs[1].to_dict(), to_messages(convs[2]), to_sharegpt(convs[3])]
    assert [detect_format(r) for r in rows] == ["moss", "datagen", "messages", "sharegpt"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n\n" for r in rows), encoding="utf-8")
    got = list(read_conversations(path))
    assert [to_sft(c) for c in got] == sample_records[:4]
    assert [loc.line for loc, _ in iter_records(path)] == [1, 3, 5, 7]  # blank lines skipped, numbers kept


def test_json_array_streams_in_small_chunks(tmp_path, sample_records, monkeypatch):
    monkeypatch.setattr(reader, "_CHUNK", 97)  # force every element across many reads
    path = tmp_path / "all.json"
    path.write_text(json.dumps(sample_records, ensure_ascii=False, indent=2), encoding="utf-8")
    got = list(iter_records(path))
    assert [v for _, v in got] == sample_records
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for loc, _ in got:  # every record is reported at the line it starts on
        assert lines[loc.line - 1] == "  {"
    assert got[0][0] == Location(str(path), 2)


def test_json_named_file_holding_jsonl_with_long_lines(tmp_path, sample_records):
    path = tmp_path / "release.json"  # JSONL under a .json name, first line longer than the sniffing window
    longest = sorted(sample_records, key=lambda r: -len(json.dumps(r, ensure_ascii=False)))[:3]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in longest), encoding="utf-8")
    assert len(path.read_text(encoding="utf-8").split("\n")[0].encode()) > 8192
    assert [(loc.line, v) for loc, v in iter_records(path)] == [
        (1, longest[0]),
        (2, longest[1]),
        (3, longest[2]),
    ]


def test_gzip_and_zip(tmp_path, sample_records):
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample_records[:5]).encode()
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as fh:
        fh.write(body)
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("inner/part.jsonl", body)
        zf.writestr("inner/README.md", "ignored")
    got = list(iter_records(tmp_path))
    assert [v for _, v in got] == sample_records[:5] * 2
    assert got[5][0] == Location(f"{tmp_path}/b.zip/inner/part.jsonl", 1)


def test_error_policies(tmp_path, sample_records, caplog):
    path = tmp_path / "x.jsonl"
    bad = dict(sample_records[0], num_turns=99)
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in [sample_records[0], bad, "s", sample_records[1]])
        + "\n"
    )
    with pytest.raises(FormatError) as exc:
        list(read_conversations(path))
    assert (exc.value.path, exc.value.line, exc.value.field) == (str(path), 2, "num_turns")
    assert str(exc.value) == f"{path}:2: num_turns: is 99 but chat has {len(bad['chat'])} turns"
    assert len(list(read_conversations(path, on_error="skip"))) == 2
    seen = []
    assert len(list(read_conversations(path, on_error=seen.append))) == 2
    assert [e.line for e in seen] == [2, 3]
    with caplog.at_level(logging.WARNING, logger="datagen.formats"):
        assert len(list(read_conversations(path, on_error="warn"))) == 2
    assert [r.getMessage() for r in caplog.records] == [f"skipped: {seen[0]}", f"skipped: {seen[1]}"]


def test_missing_path():
    with pytest.raises(FormatError, match="no such file or folder"):
        list(read_conversations("does/not/exist.jsonl"))


def test_long_lines(tmp_path, sample_records):
    path = tmp_path / "huge.jsonl"
    good = json.dumps(sample_records[0], ensure_ascii=False).encode()
    with open(path, "wb") as fh:
        fh.write(b'{"junk": "' + b"x" * (100 * 1024 * 1024) + b'"}\n')  # a 100 MB line
        fh.write(good + b"\n")
    got = list(iter_records(path))
    assert [(loc.line, type(v).__name__) for loc, v in got] == [(1, "dict"), (2, "dict")]
    assert len(got[0][1]["junk"]) == 100 * 1024 * 1024 and got[1][1] == sample_records[0]
    del got
    # over the limit: reported and skipped without holding the line
    got = list(iter_records(path, max_line_bytes=1024 * 1024))
    assert isinstance(got[0][1], FormatError)
    assert str(got[0][1]) == f"{path}:1: line longer than 1048576 bytes; skipped"
    assert got[1] == (Location(str(path), 2), sample_records[0])


def test_one_line_file_with_a_bom_and_no_final_newline(tmp_path, sample_records, caplog):
    # Windows tools write both: the BOM must not make the only row look cut off.
    path = tmp_path / "one.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(sample_records[0], ensure_ascii=False).encode("utf-8"))
    with caplog.at_level(logging.WARNING, logger="datagen.formats"):
        got = list(iter_records(path))
    assert got == [(Location(str(path), 1), sample_records[0])] and not caplog.records


@pytest.mark.parametrize("complete", [False, True], ids=["cut-mid-row", "row-without-newline"])
def test_last_line_without_newline(tmp_path, sample_records, caplog, complete):
    # A writer killed mid-line leaves a cut-off last line: an error at its line by default (validate
    # and convert must say so), skipped with a warning for readers of files still being appended to.
    # A whole last row that only lacks its newline (many tools write files so) is a record.
    path = tmp_path / "dialogues.jsonl"
    rows = [json.dumps(r, ensure_ascii=False) for r in sample_records[:3]]
    tail = rows[2] if complete else rows[2][: len(rows[2]) // 2]
    path.write_text(rows[0] + "\n" + rows[1] + "\n" + tail, encoding="utf-8")
    want = 3 if complete else 2
    gz = tmp_path / "dialogues.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    for src in (path, gz):
        got = list(iter_records(src))
        assert [v for _, v in got[:want]] == sample_records[:want]
        if complete:
            assert len(got) == 3
        else:
            ((loc, err),) = got[2:]
            assert loc == Location(str(src), 3) and not loc.whole_file
            assert str(err).startswith(
                f"{src}:3: the last line is cut off: no newline at its end and not valid JSON ("
            )
            assert str(err).endswith("(left by a killed writer?)")
            with pytest.raises(FormatError, match=":3: the last line is cut off"):
                list(read_conversations(src))
        with caplog.at_level(logging.WARNING, logger="datagen.formats"):
            caplog.clear()
            got = list(read_conversations(src, torn_tail="skip"))
        assert [to_sft(c) for c in got] == sample_records[:want]
        assert [r.getMessage() for r in caplog.records] == (
            [] if complete else [f"{src}:3: the last line is cut off (left by a killed writer?); skipped"]
        )
