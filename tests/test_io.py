"""The shared file helpers other modules write through: `io.atomic_write`, `io.write_json_atomic`,
`io.iter_conversations`, `paths.portable` and `paths.file_identity`."""

import json
import os
import stat

import pytest

from datagen.io import atomic_path, atomic_write, iter_conversations, write_json_atomic, write_jsonl_atomic
from datagen.paths import file_identity, portable
from datagen.record import Conversation, Turn
from datagen.teacher.redact import remember_secret


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(("mode", "payload"), [("w", "héllo\n"), ("wb", b"\x00\xff")])
def test_atomic_write_replaces_the_file_whole(tmp_path, mode, payload):
    path = tmp_path / "sub" / "out.bin"
    with atomic_write(path, mode) as fh:
        fh.write(payload)
        assert not path.exists()  # nothing visible until the block ends
    assert (path.read_text(encoding="utf-8") if mode == "w" else path.read_bytes()) == payload
    assert _leftovers(path.parent) == []


def test_atomic_write_keeps_the_old_file_and_no_temp_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json") as fh:
            fh.write("{}")
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "b.json").stat().st_mode
    )


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sort_keys": True},
        {"ensure_ascii": True, "newline": False},
        {"indent": None},
    ],
)
def test_write_json_atomic_writes_what_json_dumps_does(tmp_path, kwargs):
    data = {"b": 1, "a": ["中文", 2.5, None]}
    newline = kwargs.pop("newline", True)
    write_json_atomic(tmp_path / "x.json", data, newline=newline, **kwargs)
    expected = json.dumps(
        data, ensure_ascii=kwargs.pop("ensure_ascii", False), indent=kwargs.pop("indent", 2), **kwargs
    ) + ("\n" if newline else "")
    assert (tmp_path / "x.json").read_text(encoding="utf-8") == expected


def test_write_json_atomic_redacts_a_key(tmp_path):
    remember_secret("sk-test-0123456789abcdef")
    write_json_atomic(tmp_path / "m.json", {"error": "HTTP 401: bad key sk-test-0123456789abcdef"})
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert "sk-test-0123456789abcdef" not in text
    assert "***" in text


def test_iter_conversations_streams_a_datagen_file(tmp_path):
    convs = [Conversation(id=f"c{i}", turns=[Turn(human="hi", assistant="hello")]) for i in range(2)]
    write_jsonl_atomic(tmp_path / "c.jsonl", convs)
    assert [c.id for c in iter_conversations(tmp_path / "c.jsonl")] == ["c0", "c1"]


def test_portable_makes_paths_relative_to_the_first_base_that_holds_them(tmp_path):
    run = tmp_path / "run"
    (run / "prompts").mkdir(parents=True)
    info = {
        "out": str(run / "prompts" / "x.jsonl"),
        "elsewhere": ["/srv/data/seeds.jsonl"],
        "url": "http://host/a/b",
        "api": "/v1",
        "rel": "data/x.jsonl",
        "n": 3,
    }
    assert portable(info, bases=(run, tmp_path)) == {
        "out": "prompts/x.jsonl",
        "elsewhere": ["seeds.jsonl"],
        "url": "http://host/a/b",
        "api": "/v1",
        "rel": "data/x.jsonl",
        "n": 3,
    }
    assert portable(str(run / "prompts" / "x.jsonl"), bases=(tmp_path, run)) == "run/prompts/x.jsonl"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/home/ann/data/seeds.jsonl", "seeds.jsonl"),
        ("~/data.jsonl", "data.jsonl"),
        ("file:///srv/models/m.gguf", "m.gguf"),
        ("C:\\data\\x.jsonl", "x.jsonl"),
        ("/v1", "/v1"),
        ("models/m.gguf", "models/m.gguf"),
    ],
)
def test_portable_without_bases_keeps_only_the_file_name(value, expected):
    assert portable(value) == expected


def test_file_identity_changes_with_the_file(tmp_path):
    f = tmp_path / "seeds.jsonl"
    f.write_text("a\n")
    first = file_identity(str(f))
    assert first == file_identity(str(f))
    f.write_text("b\n")
    assert file_identity(str(f)) != first
    assert file_identity("smollm2") == "smollm2"
    assert file_identity(None) == ""
    folder_id = file_identity(str(tmp_path))
    (tmp_path / "more.jsonl").write_text("c\n")
    assert file_identity(str(tmp_path)) != folder_id


def test_atomic_path_gives_a_name_for_writers_that_open_it_themselves(tmp_path):
    import sqlite3

    path = tmp_path / "index.sqlite"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        conn = sqlite3.connect(tmp)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError), atomic_path(path) as tmp:
        sqlite3.connect(tmp).execute("SELECT * FROM missing")
    assert _leftovers(tmp_path) == []
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (0,)
