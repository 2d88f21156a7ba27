"""A published folder is plain Arrow and has a default config, so trainers' pinned `datasets`
(3.6, 4.0; LLaMA-Factory) load it as it is.

The real check in old `datasets` versions needs the package index and lives in
bench/publish_compat.py; here, offline, the properties it rests on: no extension type (`Json`) in
any shard, no `huggingface` features metadata (datasets 3.x cannot read 4.x's `List` in it), only
dtypes every version knows in the card, and `load_dataset(folder)` without a config name."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.errors import PublishError
from datagen.publish.build import build_dataset_folder
from datagen.publish.card import split_card
from datagen.publish.rows import message_row
from tests.publish.runs import make_run_dir, plugin_calc, plugin_search, sample_conversations

#: The `Value` dtypes of datasets 3.6 this schema may use.
OLD_DTYPES = {"string", "bool", "int32", "int64", "float64"}


def _plain(t: pa.DataType) -> bool:
    if isinstance(t, pa.BaseExtensionType):
        return False
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _plain(t.value_type)
    if pa.types.is_struct(t):
        return all(_plain(f.type) for f in t)
    return (
        pa.types.is_string(t) or pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
    )


def _dtypes(features) -> set[str]:
    """Every `dtype` and `list: <dtype>` named in a card's YAML features."""
    out: set[str] = set()
    if isinstance(features, dict):
        for key, value in features.items():
            if key in ("dtype", "list") and isinstance(value, str):
                out.add(value)
            else:
                out |= _dtypes(value)
    elif isinstance(features, list):
        for value in features:
            out |= _dtypes(value)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compat")
    return build_dataset_folder(make_run_dir(tmp / "run", sample_conversations()), tmp / "ds")


def test_shards_hold_only_plain_arrow_types(folder):
    shards = sorted(folder.path.glob("data/*/*.parquet"))
    assert len(shards) == 4
    for shard in shards:
        schema = pq.read_schema(shard)
        assert schema.metadata is None, shard  # no `huggingface` key for old datasets to choke on
        assert [f.name for f in schema if not _plain(f.type)] == [], shard


def test_card_features_use_only_dtypes_old_datasets_know(folder):
    meta, _ = split_card(folder.card_path.read_text(encoding="utf-8"))
    for info in meta["dataset_info"]:
        assert _dtypes(info["features"]) <= OLD_DTYPES, info["config_name"]


def test_default_config_loads_without_a_name(folder):
    meta, _ = split_card(folder.card_path.read_text(encoding="utf-8"))
    assert [(c["config_name"], c.get("default", False)) for c in meta["configs"]] == [
        ("hhh", True),
        ("plugin", False),
    ]
    ds = datasets.load_dataset(str(folder.path), split="train")
    assert ds.num_rows == folder.counts["hhh"]["train"]
    assert {row["id"].split("-")[0] for row in ds} == {"hhh"}


def test_a_plugin_only_dataset_defaults_to_plugin(tmp_path):
    folder = build_dataset_folder(
        make_run_dir(tmp_path / "run", [plugin_search(1), plugin_calc(1)], validation_fraction=0.0),
        tmp_path / "ds",
    )
    meta, _ = split_card(folder.card_path.read_text(encoding="utf-8"))
    assert [(c["config_name"], c.get("default")) for c in meta["configs"]] == [("plugin", True)]
    assert datasets.load_dataset(str(folder.path), split="train").num_rows == 2


def test_messages_are_typed_structs(folder):
    ds = datasets.load_dataset(str(folder.path), "plugin", split="validation")
    feature = ds.features["messages"]
    assert set(feature.feature) == {"role", "content", "reasoning_content", "tool_calls", "tool_call_id"}
    calls = [c for row in ds for m in row["messages"] for c in m["tool_calls"] or []]
    assert calls and all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)


def test_a_message_key_the_schema_lacks_is_refused_not_dropped():
    assert message_row({"role": "user", "content": "hi"})["tool_calls"] is None
    with pytest.raises(PublishError, match=r"\['name'\]"):
        message_row({"role": "user", "content": "hi", "name": "ann"})
    with pytest.raises(PublishError, match="tool call 0"):
        message_row(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}, "x": 1}],
            }
        )
