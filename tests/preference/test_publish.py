"""The `preference` config of a published dataset: built from the run's pairs and a reviewer's,
plain Arrow (old `datasets` load it), not the default config, described on the card, and checked."""

from __future__ import annotations

import json
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.preference.export import conversations_of, moss_texts
from datagen.publish.build import build_dataset_folder
from datagen.publish.card import split_card
from datagen.publish.preference import check_preference_split, row_to_pair
from datagen.splits import split_for
from tests.preference.conftest import calc_dialogue, hhh_dialogue
from tests.publish.runs import make_run_dir

OLD_DTYPES = {"string", "bool", "int32", "int64", "float64"}
REVIEW_PAIR = {
    "id": "hhh-2#1",
    "prompt": [
        {"role": "system", "content": "You are an AI assistant whose name is MOSS.\n"},
        {"role": "user", "content": "Shorter, please."},
    ],
    "chosen": [{"role": "assistant", "content": "Leaves fall."}],
    "rejected": [{"role": "assistant", "content": "[good] Leaves fall."}],
    "datagen": {"source_id": "hhh-2", "turn": 1, "who": "ana", "when": "2026-01-02T00:00:00+00:00"},
}


def _plain(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _plain(t.value_type)
    if pa.types.is_struct(t):
        return all(_plain(f.type) for f in t)
    return not isinstance(t, pa.BaseExtensionType) and (
        pa.types.is_string(t) or pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
    )


def _dtypes(node) -> set[str]:
    if isinstance(node, dict):
        return {v for k, v in node.items() if k in ("dtype", "list") and isinstance(v, str)} | {
            d
            for k, v in node.items()
            if not (k in ("dtype", "list") and isinstance(v, str))
            for d in _dtypes(v)
        }
    if isinstance(node, list):
        return {d for v in node for d in _dtypes(v)}
    return set()


@pytest.fixture(scope="module")
def run(tmp_path_factory, pairs_dir):
    root = make_run_dir(
        tmp_path_factory.mktemp("pub") / "run",
        [hhh_dialogue(1), hhh_dialogue(2), calc_dialogue(1), calc_dialogue(2, fail=True)],
        validation_fraction=0.5,
    )
    shutil.copytree(pairs_dir, root / "preference")
    (root / "review").mkdir()
    (root / "review" / "pairs.jsonl").write_text(json.dumps(REVIEW_PAIR) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory):
    return build_dataset_folder(run, tmp_path_factory.mktemp("ds") / "ds")


def test_the_config_holds_the_runs_and_the_reviewers_pairs(folder, pairs_dir):
    judged = len(pairs_dir.joinpath("pairs.jsonl").read_text().splitlines())
    assert sum(folder.pairs.values()) == judged + 1
    ds = datasets.load_dataset(str(folder.path), "preference")
    rows = [r for split in ds.values() for r in split]
    assert len(rows) == judged + 1
    review = next(r for r in rows if r["origin"] == "review")
    assert (review["reviewer"], review["margin"], review["chosen_text"]) == (
        "ana",
        None,
        "<|MOSS|>: Leaves fall.<eom>\n",
    )
    for split, part in ds.items():
        assert {split_for(r["source_id"], 0.5) for r in part} == {
            split
        }  # a pair goes where its dialogue goes
    judged_row = next(r for r in rows if r["contrastive"] == "wrong_command")
    assert judged_row["judge_template"] == "judge.v1" and len(judged_row["judge_scores"]) == 2
    pair = row_to_pair(judged_row)
    assert moss_texts(*conversations_of(pair)) == (
        judged_row["prompt_text"],
        judged_row["chosen_text"],
        judged_row["rejected_text"],
    )
    assert json.loads(pair["tools"])[0]["function"]["name"] == "Calculate"


def test_plain_arrow_and_the_default_config_is_still_the_dialogues(folder):
    shards = sorted(folder.path.glob("data/preference/*.parquet"))
    assert shards
    for shard in shards:
        schema = pq.read_schema(shard)
        assert schema.metadata is None and [f.name for f in schema if not _plain(f.type)] == []
    meta, body = split_card(folder.card_path.read_text(encoding="utf-8"))
    assert [(c["config_name"], c.get("default", False)) for c in meta["configs"]] == [
        ("hhh", True),
        ("plugin", False),
        ("preference", False),
    ]
    info = next(i for i in meta["dataset_info"] if i["config_name"] == "preference")
    assert _dtypes(info["features"]) <= OLD_DTYPES
    assert datasets.load_dataset(str(folder.path), split="train")[0]["id"].startswith("hhh-")
    assert "preference" in meta["tags"] and "dpo" in meta["tags"]
    assert "## Preference pairs" in body and "`wrong_command`" in body and "| review | 1 |" in body
    build = json.loads((folder.path / "datagen" / "build.json").read_text())
    assert build["preference"]["counts"] == folder.pairs and "preference" not in build["counts"]


def test_the_check_reads_every_pair_back(folder):
    seen: dict[str, str] = {}
    for split in folder.pairs:
        ds = datasets.load_dataset(str(folder.path), "preference", split=split)
        assert check_preference_split(ds, f"preference/{split}", 0.5, seen) == []
    ds = datasets.load_dataset(str(folder.path), "preference", split="train")
    bad = ds.map(lambda r, i: {"chosen_text": "x"} if i == 0 else {}, with_indices=True)
    problems = check_preference_split(bad, "preference/train", 0.5, {})
    assert len(problems) == 1 and "do not match the messages" in problems[0]
    problems = check_preference_split(ds, "preference/train", 0.999, {ds[0]["id"]: "elsewhere"})
    assert any("belongs in 'validation'" in p for p in problems)
    assert any("duplicate id (also in elsewhere)" in p for p in problems)


def test_no_preference_config_without_the_stage_unless_asked(run, tmp_path):
    (tmp_path / "run").mkdir()
    for name in ("manifest.json", "funnel.json", "final.jsonl"):
        shutil.copy(run / name, tmp_path / "run" / name)
    shutil.copytree(run / "review", tmp_path / "run" / "review")
    plain = build_dataset_folder(tmp_path / "run", tmp_path / "a")
    assert plain.pairs == {} and not (plain.path / "data" / "preference").exists()
    asked = build_dataset_folder(tmp_path / "run", tmp_path / "b", preference=True)
    assert sum(asked.pairs.values()) == 1


def test_a_folder_with_pairs_passes_the_publish_check(folder):
    """`datagen publish` checks every config before uploading; pairs are checked as pairs."""
    from datagen.publish.verify import check_dataset_folder

    assert check_dataset_folder(folder) == []
