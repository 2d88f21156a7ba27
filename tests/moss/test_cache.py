"""The token cache is reused only when data, tokenizer, length, options and version all match."""

from __future__ import annotations

import json
import logging

import pytest

from datagen.model.cache import tokenize_cached
from datagen.model.loading import load_tokenizer
from datagen.model.tokenize import tokenize_record
from tests.moss.conftest import sft_record


@pytest.fixture(scope="module")
def tokenizer(tiny_moss):
    return load_tokenizer(tiny_moss)[0]


def _records():
    return [sft_record(str(i), [(f"Question {i}?", f"Answer {i}."), ("More?", "Yes.")]) for i in range(4)]


def _same(tset, records, tokenizer, **kw):
    expected = [tokenize_record(r, tokenizer, **kw) for r in records]
    expected = [e for e in expected if not e.empty]
    assert len(tset) == len(expected)
    for i, e in enumerate(expected):
        ids, mask = tset[i]
        assert ids.tolist() == e.input_ids and mask.tolist() == e.loss_mask


def test_hit_then_rebuild_naming_what_changed(tokenizer, tmp_path, caplog):
    folder = tmp_path / "cache"
    records = _records()
    first = tokenize_cached(records, tokenizer, folder, max_length=64)
    assert not first.from_cache and (folder / "meta.json").is_file()
    again = tokenize_cached(records, tokenizer, folder, max_length=64)
    assert again.from_cache and again.stats == first.stats
    _same(again, records, tokenizer, max_length=64)

    for part, kw in [
        ("max_length", {"max_length": 48}),
        ("options", {"max_length": 64, "assistant_only": True}),
    ]:
        tokenize_cached(records, tokenizer, folder, max_length=64)  # back to the base key
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="datagen.model.cache"):
            rebuilt = tokenize_cached(records, tokenizer, folder, **kw)
        assert not rebuilt.from_cache
        assert f"stale ({part} changed)" in caplog.text
        _same(rebuilt, records, tokenizer, **kw)


def test_changed_data_and_tokenizer_rebuild(tokenizer, tiny_moss, tmp_path, caplog):
    folder = tmp_path / "cache"
    records = _records()
    tokenize_cached(records, tokenizer, folder, max_length=64)
    edited = json.loads(json.dumps(records))
    edited[1]["chat"]["turn_1"]["MOSS"] = "<|MOSS|>: A different answer.<eom>\n"
    with caplog.at_level(logging.WARNING, logger="datagen.model.cache"):
        rebuilt = tokenize_cached(edited, tokenizer, folder, max_length=64)
    assert not rebuilt.from_cache and "stale (data changed)" in caplog.text
    _same(rebuilt, edited, tokenizer, max_length=64)

    other, _ = load_tokenizer(tiny_moss)
    other.add_tokens(["Answer"])  # same files, one more added token: different ids
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="datagen.model.cache"):
        again = tokenize_cached(edited, other, folder, max_length=64)
    assert not again.from_cache and "stale (tokenizer changed)" in caplog.text
    _same(again, edited, other, max_length=64)


def test_dialogues_that_do_not_fit_are_counted_not_cached(tokenizer, tmp_path):
    records = _records() + [sft_record("long", [("word " * 200, "ok")])]
    tset = tokenize_cached(records, tokenizer, tmp_path / "c", max_length=64)
    assert len(tset) == 4 and tset.stats.dropped == 1 and tset.stats.dialogues == 5
    assert tokenize_cached(records, tokenizer, tmp_path / "c", max_length=64).stats.dropped == 1
