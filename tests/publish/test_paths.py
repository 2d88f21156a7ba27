"""No path of the building machine reaches a published folder: the build keeps file names only, and
the check reports any absolute path left in the card, the `datagen/` files or a row's metadata."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from datagen.io import write_jsonl_atomic
from datagen.paths import absolute_paths_in_text, is_absolute_path, portable
from datagen.publish.build import build_dataset_folder
from datagen.publish.verify import check_dataset_folder
from tests.publish.runs import make_run_dir, manifest, sample_conversations


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/home/ann/data/seeds.jsonl", True),
        ("~/seeds.jsonl", True),
        ("C:\\data\\seeds.jsonl", True),
        ("file:///srv/x/seeds.jsonl", True),
        ("https://example.com/v1/chat", False),
        ("data/hhh/train-*", False),
        ("/v1", False),
        ("/", False),
        ("seeds.jsonl", False),
        ("line one\n/home/a/b", False),
        (3, False),
    ],
)
def test_is_absolute_path(value, expected):
    assert is_absolute_path(value) is expected


def test_portable_paths_keep_the_file_name_only():
    cfg = {
        "seeds": {"path": "/home/ann/private/seeds.jsonl"},
        "teacher": {"base_url": "https://x.org/v1/a"},
        "tools": [{"index": "C:\\Users\\ann\\index.jsonl"}, "relative/x.jsonl"],
        "seed": 3,
    }
    assert portable(cfg) == {
        "seeds": {"path": "seeds.jsonl"},
        "teacher": {"base_url": "https://x.org/v1/a"},
        "tools": [{"index": "index.jsonl"}, "relative/x.jsonl"],
        "seed": 3,
    }


def test_paths_in_card_text_skip_urls_and_relative_globs():
    text = (
        "Load `data/hhh/train-*` from https://huggingface.co/datasets/me/x; seeds from "
        "`/home/ann/private/seeds.jsonl`; n<1K; 1/2/3."
    )
    assert absolute_paths_in_text(text) == ["/home/ann/private/seeds.jsonl"]


def _run_with_machine_paths(tmp_path):
    """A run whose rows and manifest name absolute paths of this machine, as a real run does when the
    seeds were imported from an absolute path and the config was loaded by its absolute path."""
    private = tmp_path / "private" / "source.jsonl"
    convs = sample_conversations()
    for c in convs:
        c.lineage.source = str(private)
    run = make_run_dir(tmp_path / "run", convs)
    m = manifest()
    m["config"]["seeds"] = {"path": str(tmp_path / "seeds.jsonl")}
    m["config_file"] = str(tmp_path / "run.yaml")
    m["stages"]["seeds"] = {"status": "done", "source": str(tmp_path / "seeds.jsonl")}
    (run / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    return run


def test_build_publishes_no_absolute_path_of_the_machine(tmp_path):
    run = _run_with_machine_paths(tmp_path)
    folder = build_dataset_folder(run, license="mit", moss_jsonl=True)
    root = str(tmp_path)
    for f in folder.path.rglob("*"):
        if f.is_file() and f.suffix != ".parquet":
            assert root not in f.read_text(encoding="utf-8"), f
    published = json.loads((folder.path / "datagen" / "manifest.json").read_text(encoding="utf-8"))
    assert published["config"]["seeds"]["path"] == "seeds.jsonl" and published["config_file"] == "run.yaml"
    sources = set()
    for shard in folder.path.glob("data/*/*.parquet"):
        table = pq.read_table(shard)
        sources |= {lin["source"] for lin in table.column("lineage").to_pylist()}
        assert root.encode() not in shard.read_bytes()
    assert sources == {"source.jsonl"}
    assert check_dataset_folder(folder) == []


def test_build_makes_every_row_field_the_check_reads_portable(tmp_path):
    # vLLM serves a model under its --model path by default, so the teacher model is often one.
    model = "/data/models/Qwen2.5-7B-Instruct"
    convs = sample_conversations()
    for c in convs:
        c.lineage.teacher_model = model
        c.lineage.params = {**c.lineage.params, "lora": str(tmp_path / "adapters" / "sft")}
        c.tags = {"from": str(tmp_path / "private" / "batch1.jsonl")}
        c.extra = {"generation": {"log": str(tmp_path / "logs" / "gen.log")}, "note": "kept"}
    src = tmp_path / "convs.jsonl"
    write_jsonl_atomic(src, convs)
    folder = build_dataset_folder(src, license="mit", validation_fraction=0.0)
    assert check_dataset_folder(folder) == []
    card = (folder.path / "README.md").read_text(encoding="utf-8")
    assert "Qwen2.5-7B-Instruct" in card and model not in card and str(tmp_path) not in card
    rows = [r for shard in folder.path.glob("data/*/*.parquet") for r in pq.read_table(shard).to_pylist()]
    assert {r["lineage"]["teacher_model"] for r in rows} == {"Qwen2.5-7B-Instruct"}
    assert {json.loads(r["lineage"]["params"])["lora"] for r in rows} == {"sft"}
    assert {r["tags"] for r in rows} == {json.dumps({"from": "batch1.jsonl"})}
    assert {r["extra"] for r in rows} == {json.dumps({"generation": {"log": "gen.log"}, "note": "kept"})}


def _put_extra(folder, row_id: str, extra: dict) -> None:
    """Rewrite one published row's `extra` in place (what a hand-edited or foreign folder may hold)."""
    import pyarrow as pa

    for shard in folder.path.glob("data/*/*.parquet"):
        table = pq.read_table(shard)
        ids = table.column("id").to_pylist()
        if row_id in ids:
            column = table.column("extra").to_pylist()
            column[ids.index(row_id)] = json.dumps(extra)
            i = table.schema.get_field_index("extra")
            table = table.set_column(i, table.schema.field(i), pa.array(column, table.schema.field(i).type))
            pq.write_table(table, shard)
            return
    raise AssertionError(f"no row {row_id}")


def test_check_reports_paths_left_in_files_and_rows(tmp_path):
    convs = sample_conversations()
    src = tmp_path / "convs.jsonl"
    write_jsonl_atomic(src, convs)
    folder = build_dataset_folder(src, license="mit", validation_fraction=0.0)
    _put_extra(folder, "hhh-1", {"imported_from": str(tmp_path / "private" / "dump.jsonl")})
    build = folder.path / "datagen" / "build.json"
    data = json.loads(build.read_text(encoding="utf-8"))
    data["source"] = str(src)
    build.write_text(json.dumps(data), encoding="utf-8")
    card = folder.path / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + f"\nBuilt from `{src}`.\n", encoding="utf-8")

    problems = check_dataset_folder(folder)
    assert any("build.json: source is the absolute path" in p and str(src) in p for p in problems)
    assert any("README.md:" in p and str(src) in p for p in problems)
    assert any("(id 'hhh-1')" in p and "extra.imported_from" in p and "dump.jsonl" in p for p in problems)
