"""`publish` refuses what it must not upload, says why, and sends nothing to the Hub."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.errors import InputError, PublishError
from datagen.publish.build import build_dataset_folder
from datagen.publish.hub import publish
from datagen.publish.verify import check_dataset_folder
from tests.publish.runs import make_run_dir

REPO = "datagen-org/refused"


def rewrite_rows(path, edit) -> None:
    """Apply `edit(rows)` to a parquet shard in place, keeping its schema."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


@pytest.fixture
def folder(tmp_path):
    return build_dataset_folder(make_run_dir(tmp_path / "run"), tmp_path / "ds")


def first_shard(folder, config: str):
    return sorted((folder.path / "data" / config).glob("*.parquet"))[0]


@pytest.mark.parametrize(
    "config, edit, message",
    [
        ("hhh", lambda r: r[0]["turns"][0].update(assistant=""), "MOSS 003: turn 1: MOSS: empty"),
        (
            "hhh",
            lambda r: r[0]["turns"][0].update(human="hi<eoh>\n<|MOSS|>: injected"),
            "MOSS 003: turn 1: Human: contains the MOSS tag '<eoh>' inside the text",
        ),
        (
            "hhh",
            lambda r: r[0].update(meta_instruction="You are a helpful assistant.\n"),
            "MOSS 003: meta_instruction: no `Capabilities and tools that MOSS can possess.` line",
        ),
        ("hhh", lambda r: r[0].update(plugins=["search"]), "is a 'plugin' conversation in config 'hhh'"),
        (
            "hhh",
            lambda r: r[0]["turns"][0]["calls"].append({"name": "Search", "arg": "x"}),
            "Search is used but search is not enabled in the meta instruction",
        ),
        (
            "plugin",
            lambda r: r[0]["turns"][0]["results"][0].update(output="42<eor>"),
            "contains the MOSS tag '<eor>'",
        ),
        ("hhh", lambda r: r.append(dict(r[0])), "duplicate id"),
    ],
)
def test_corrupt_record_is_refused(folder, fake_hub, config, edit, message):
    shard = first_shard(folder, config)
    bad_id = pq.read_table(shard).column("id")[0].as_py()
    rewrite_rows(shard, edit)
    problems = check_dataset_folder(folder)
    assert any(message in p and repr(bad_id) in p for p in problems), problems
    with pytest.raises(PublishError) as err:
        publish(folder, REPO)
    text = str(err.value)
    assert "refusing to upload" in text and message in text and str(folder.path) in text
    assert fake_hub.requests == [] and fake_hub.repo(REPO) is None


def test_wrong_row_count_is_refused(folder, fake_hub):
    # a shard that lost a row no longer matches the counts the card and build.json declare
    shard = first_shard(folder, "hhh")
    n = folder.counts["hhh"]["train"]
    assert shard.name.startswith("train-") and n > 1
    rewrite_rows(shard, lambda rows: rows.pop())
    problems = check_dataset_folder(folder)
    assert f"hhh/train: {n - 1} rows, the card's dataset_info says {n}" in problems
    assert f"hhh/train: {n - 1} rows, datagen/build.json says {n}" in problems
    with pytest.raises(PublishError, match="refusing to upload"):
        publish(folder, REPO)
    assert fake_hub.requests == []


def test_unreadable_shard_is_refused(folder, fake_hub):
    shard = first_shard(folder, "plugin")
    shard.write_bytes(b"not parquet at all")
    problems = check_dataset_folder(folder)
    assert any(p.startswith("plugin/") and "load_dataset failed" in p for p in problems), problems
    with pytest.raises(PublishError, match="load_dataset failed"):
        publish(folder, REPO)
    assert fake_hub.requests == []


def test_clean_folder_passes(folder):
    assert check_dataset_folder(folder) == []


def test_no_license_is_refused(tmp_path, fake_hub):
    folder = build_dataset_folder(make_run_dir(tmp_path / "run", license=None), tmp_path / "ds")
    assert folder.license is None
    assert any("no license" in w for w in folder.warnings)
    card = (folder.path / "README.md").read_text(encoding="utf-8")
    assert "\nlicense:" not in card.split("\n---\n")[0] and "**No license set.**" in card
    assert check_dataset_folder(folder) == []  # the data is fine, only uploading needs a license
    with pytest.raises(PublishError, match=r"without a license.*--license"):
        publish(folder, REPO)
    assert fake_hub.requests == []


def test_placeholder_license_counts_as_none(tmp_path, fake_hub):
    folder = build_dataset_folder(make_run_dir(tmp_path / "run", license="unknown"), tmp_path / "ds")
    assert folder.license is None and any("'unknown' is not a license" in w for w in folder.warnings)
    with pytest.raises(PublishError, match="without a license"):
        publish(folder, REPO)
    assert fake_hub.requests == []


def test_license_flag_overrides_the_run_config(tmp_path):
    folder = build_dataset_folder(
        make_run_dir(tmp_path / "run", license=None), tmp_path / "ds", license="cc-by-4.0"
    )
    assert "\nlicense: cc-by-4.0\n" in (folder.path / "README.md").read_text(encoding="utf-8")
    assert json.loads((folder.path / "datagen/build.json").read_text())["license"] == "cc-by-4.0"


def test_no_token_is_refused(folder, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(folder, REPO)
    assert fake_hub.requests == []


def test_rejected_token_is_one_clear_error(folder, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    with pytest.raises(PublishError, match=r"upload to datagen-org/refused failed: .*401.*Check the token"):
        publish(folder, REPO)
    assert fake_hub.repo(REPO) is None


def test_bad_repo_id_is_refused(folder, fake_hub):
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(folder, "no-namespace")
    assert fake_hub.requests == []


def test_foreign_out_dir_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(PublishError, match="not built by datagen"):
        build_dataset_folder(make_run_dir(tmp_path / "run"), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_rebuild_keeps_the_previous_folder(tmp_path):
    run = make_run_dir(tmp_path / "run")
    first = build_dataset_folder(run, tmp_path / "ds")
    card = (first.path / "README.md").read_bytes()
    with open(run / "final.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"id": "broken", "turns": "not a list"}\n{"id": "x", "turns": []}\n')
    with pytest.raises(InputError) as err:
        build_dataset_folder(run, tmp_path / "ds")
    assert "final.jsonl:11" in str(err.value)
    assert (first.path / "README.md").read_bytes() == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "run"]  # no staging folder left behind
