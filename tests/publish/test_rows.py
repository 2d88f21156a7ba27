"""Parquet rows <-> Conversations: splits, schema, exact round trips (on real MOSS samples too)."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest

from datagen.formats.moss import dumps_sft_file, from_sft, render_text, to_sft
from datagen.io import write_jsonl_atomic
from datagen.publish.build import build_dataset_folder
from datagen.publish.rows import conversation_to_row, dataset_features, row_to_conversation, score_types
from datagen.publish.verify import check_dataset_folder
from datagen.splits import split_for
from tests.publish.runs import hhh, make_run_dir, plugin_calc, sample_conversations


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"conv-{i}" for i in range(4000)]
    first = [split_for(i, 0.1) for i in ids]
    assert first == [split_for(i, 0.1) for i in ids]
    share = first.count("validation") / len(ids)
    assert 0.08 < share < 0.12
    assert {split_for(i, 0.0) for i in ids} == {"train"}
    # growing the fraction only moves rows from train to validation, never back
    wider = [split_for(i, 0.2) for i in ids]
    assert all(w == "validation" for f, w in zip(first, wider, strict=True) if f == "validation")


def test_score_types():
    a, b, c = hhh(1), hhh(2), hhh(3)
    b.scores = {"moss_loss": 2, "judge": "good"}
    c.scores = {"judge": 0.5}
    assert score_types([a, b, c]) == {"judge": "string", "moss_loss": "float64", "moss_ppl": "float64"}
    assert score_types([plugin_calc(1)]) == {}


def test_row_keeps_exact_values_through_parquet(tmp_path):
    conv = hhh(1)
    conv.lineage.params = {"temperature": 0.7, "top_p": 0.95, "seed": 1234567890123}
    conv.scores = {"moss_loss": 0.1 + 0.2, "moss_ppl": 1e-12}
    conv.tags = {"language": {"score": 0.30000000000000004}}
    conv.extra = {"conversation_id": 7, "note": "中文"}
    run = make_run_dir(tmp_path / "run", [conv])
    folder = build_dataset_folder(run, tmp_path / "ds")
    ((config, splits),) = folder.counts.items()
    ((split, _),) = splits.items()
    row = datasets.load_dataset(str(folder.path), config, split=split)[0]
    back = row_to_conversation(row)
    assert back.lineage.params == conv.lineage.params
    assert back.scores == conv.scores and back.tags == conv.tags and back.extra == conv.extra


def test_features_cover_every_row_column():
    conv = plugin_calc(1)
    scores = score_types([conv, hhh(1)])
    row = conversation_to_row(conv, scores)
    assert list(row) == list(dataset_features(scores))
    assert row["turns"][0]["results"][0]["output"] == str(23 * 47 + 1)
    assert [m["role"] for m in row["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    [call] = row["messages"][2]["tool_calls"]
    assert call["function"] == {"name": "Calculate", "arguments": json.dumps({"expression": "23*47+1"})}
    assert row["messages"][1] == {
        "role": "user",
        "content": "What is 23*47+1?",
        "reasoning_content": None,
        "tool_calls": None,
        "tool_call_id": None,
    }
    assert [json.loads(t)["function"]["name"] for t in row["tools"]] == ["Calculate", "Solve"]


def test_moss_samples_round_trip_through_the_dataset(tmp_path, moss_samples):
    """Every released MOSS sample (raw segments, integer ids, noise and all) comes back from the
    published parquet as the identical MOSS text and the identical SFT record."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in moss_samples]
    convs = [from_sft(r) for r in records]
    # released ids repeat across folders (`15` is a writing and a code dialogue); a dataset needs unique ids
    assert len({c.id for c in convs}) < len(convs)
    for conv, path in zip(convs, moss_samples, strict=True):
        conv.id = f"{path.parent.name}-{conv.id}"
    src = tmp_path / "moss.jsonl"
    write_jsonl_atomic(src, convs)
    folder = build_dataset_folder(src, tmp_path / "ds", license="cc-by-nc-4.0", validation_fraction=0.25)
    assert check_dataset_folder(folder) == []
    kinds = Counter(c.kind for c in convs)
    assert {c: sum(s.values()) for c, s in folder.counts.items()} == dict(kinds)
    by_id = {c.id: (c, r) for c, r in zip(convs, records, strict=True)}
    seen = 0
    for config, splits in folder.counts.items():
        for split in splits:
            for row in datasets.load_dataset(str(folder.path), config, split=split):
                conv, record = by_id[row["id"]]
                back = row_to_conversation(row)
                assert render_text(back) == render_text(conv)
                assert dumps_sft_file(to_sft(back)) == dumps_sft_file(to_sft(conv))
                assert {**to_sft(back), "conversation_id": record["conversation_id"]} == record
                seen += 1
    assert seen == len(convs)


@pytest.mark.parametrize("shard_rows, shards", [(1, 4), (3, 2), (50_000, 1)])
def test_shards_roll_over(tmp_path, shard_rows, shards):
    convs = [hhh(i) for i in range(1, 5)]
    folder = build_dataset_folder(
        make_run_dir(tmp_path / "run", convs, validation_fraction=0.0), tmp_path / "ds", shard_rows=shard_rows
    )
    names = sorted(p.name for p in (folder.path / "data/hhh").iterdir())
    assert names == [f"train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    assert folder.counts == {"hhh": {"train": 4}}
    assert datasets.load_dataset(str(folder.path), "hhh", split="train").num_rows == 4


def test_sample_run_has_both_configs_and_splits(tmp_path):
    convs = sample_conversations()
    folder = build_dataset_folder(make_run_dir(tmp_path / "run", convs), tmp_path / "ds", moss_jsonl=True)
    expected = Counter((c.kind, split_for(c.id, 0.3)) for c in convs)
    assert {(c, s): n for c, splits in folder.counts.items() for s, n in splits.items()} == dict(expected)
    lines = (folder.path / "moss/train.jsonl").read_text(encoding="utf-8").splitlines()
    lines += (folder.path / "moss/val.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(x)["conversation_id"] for x in lines) == sorted(c.id for c in convs)
