"""The exported pairs: TRL's conversational format that `datasets` and TRL load as they are, the
same pairs as MOSS text, and reviewers' pairs brought to the same schema."""

from __future__ import annotations

import json

import datasets
import pytest

from datagen.formats.moss import parse_text, render_text
from datagen.preference.export import PAIR_KEYS, conversations_of, moss_texts, review_row


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_pairs_load_with_datasets_in_trls_conversational_form(pairs_dir):
    ds = datasets.load_dataset("json", data_files=str(pairs_dir / "pairs.jsonl"), split="train")
    rows = _lines(pairs_dir / "pairs.jsonl")
    assert ds.num_rows == len(rows) > 10 and ds.column_names == list(PAIR_KEYS)
    for row in ds:
        assert row["prompt"][0]["role"] == "system" and row["chosen"][-1]["role"] == "assistant"
        assert row["rejected"][-1]["role"] == "assistant" and row["chosen"] != row["rejected"]
        assert row["margin"] >= 1.0
        if row["datagen"]["kind"] == "plugin":
            assert [t["function"]["name"] for t in json.loads(row["tools"])] == ["Calculate", "Solve"]
        else:
            assert row["tools"] is None


def test_moss_pairs_are_the_same_pairs_as_moss_text(pairs_dir):
    trl_rows, moss_rows = _lines(pairs_dir / "pairs.jsonl"), _lines(pairs_dir / "pairs.moss.jsonl")
    assert [r["id"] for r in trl_rows] == [r["id"] for r in moss_rows]
    kinds = set()
    for trl, moss in zip(trl_rows, moss_rows, strict=True):
        assert moss_texts(*conversations_of(trl)) == (moss["prompt"], moss["chosen"], moss["rejected"])
        for side in ("chosen", "rejected"):
            text = moss["prompt"] + moss[side]
            assert render_text(parse_text(text)) == text  # MOSS 003 text, byte for byte
            assert moss[side].endswith("<eom>\n")
        kinds.add(moss["chosen"].split(":", 1)[0] if "wrong_command" not in moss["id"] else "commands")
        if "wrong_command" in moss["id"]:
            assert moss["rejected"].startswith('<|Commands|>: Solve("') and "<|Results|>:" in moss["rejected"]
    assert kinds == {"<|MOSS|>", "commands"}


def test_reviewers_pairs_join_the_schema():
    pair = {
        "id": "hhh-zh1#1",
        "prompt": [
            {"role": "system", "content": "You are an AI assistant whose name is MOSS.\n"},
            {"role": "user", "content": "Hi"},
        ],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Hi."}],
        "datagen": {"source_id": "hhh-zh1", "turn": 1, "who": "ana", "when": "2026-01-01T00:00:00Z"},
    }
    row = review_row(pair)
    assert row["datagen"]["origin"] == "review" and row["margin"] is None and row["tools"] is None
    assert row["datagen"]["chosen_source"] == "review_edit" and row["datagen"]["who"] == "ana"
    assert moss_texts(*conversations_of(row))[1] == "<|MOSS|>: Hello!<eom>\n"
    # tool-call arguments as objects (the review page's form) become JSON strings
    calls = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "Calculate", "arguments": {"expression": "1+1"}},
            }
        ],
    }
    plugin = {
        **pair,
        "prompt": [*pair["prompt"], calls, {"role": "tool", "tool_call_id": "c1", "content": "2"}],
        "tools": [{"type": "function", "function": {"name": "Calculate"}}],
    }
    row = review_row(plugin)
    assert row["prompt"][2]["tool_calls"][0]["function"]["arguments"] == '{"expression": "1+1"}'
    assert json.loads(row["tools"])[0]["function"]["name"] == "Calculate"


@pytest.mark.slow
def test_trl_takes_the_export_as_it_is(pairs_dir, tiny_model, tmp_path):
    from trl.data_utils import is_conversational

    from tests.preference.trl_check import trl_trainer

    rows = datasets.load_dataset("json", data_files=str(pairs_dir / "pairs.jsonl"), split="train")
    assert all(is_conversational(row) for row in rows)
    trainer = trl_trainer(pairs_dir / "pairs.jsonl", tiny_model, tmp_path / "trl")
    prepared = trainer.train_dataset
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(prepared.column_names)
    first = prepared[0]
    assert trainer.processing_class.decode(first["chosen_ids"]).strip().startswith("[good]")
    assert trainer.train().global_step == 1
