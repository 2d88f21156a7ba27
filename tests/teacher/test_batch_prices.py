"""Prices that match the invoice: cached input, batch prices and their defaults, the ledger reading
`usage.prompt_tokens_details.cached_tokens`, and the batch settings' validation."""

from __future__ import annotations

import re
import sqlite3

import pytest

from datagen.errors import ConfigError
from datagen.teacher.config import BatchSettings, TeacherConfig
from datagen.teacher.engine import run_requests
from datagen.teacher.journal import Journal
from datagen.teacher.types import Request
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for

MINI = {"input": 0.15, "cached_input": 0.075, "output": 0.60, "batch_input": 0.075, "batch_output": 0.30}


def test_cached_tokens_cost_the_cached_price_and_batch_lines_the_batch_price():
    config = TeacherConfig(prices={"gpt-4o-mini": MINI})
    # 1M prompt tokens of which 400k cached, 1M completion tokens
    assert config.price_of("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert config.price_of("gpt-4o-mini", 1_000_000, 1_000_000, cached_tokens=400_000) == pytest.approx(
        0.6 * 0.15 + 0.4 * 0.075 + 0.60
    )
    # batch: the listed batch prices; the batch cached price defaults to the cache discount applied to them
    assert config.price_of("gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.375)
    assert config.price_of("gpt-4o-mini", 1_000_000, 0, cached_tokens=1_000_000, batch=True) == pytest.approx(
        0.0375
    )
    # cached tokens never exceed the prompt
    assert config.price_of("gpt-4o-mini", 10, 0, cached_tokens=50) == config.price_of(
        "gpt-4o-mini", 10, 0, cached_tokens=10
    )


def test_missing_prices_default_to_no_cache_discount_and_half_price_batches():
    config = TeacherConfig(
        prices={
            "m": {"input": 2.0, "output": 4.0},
            "x": {"input": 1.0, "batch_input": 0.9, "batch_cached_input": 0.1},
        }
    )
    assert config.prices["m"] == {"input": 2.0, "output": 4.0}  # the table keeps what was written
    assert config.price_of("m", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(2.0)
    assert config.price_of("m", 1_000_000, 1_000_000, batch=True) == pytest.approx(3.0)
    assert config.price_of("x", 1_000_000, 0, cached_tokens=500_000, batch=True) == pytest.approx(0.45 + 0.05)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"prices": {"m": {"input": 1, "batch": 0.5}}}, "teacher.prices.m", "unknown key"),
        ({"prices": {"m": {"batch_output": -1}}}, "teacher.prices.m.batch_output", ">= 0"),
        ({"mode": "offline"}, "teacher.mode", "online, batch"),
        ({"batch": {"max_line": 5}}, "teacher.batch.max_line", "unknown key"),
        ({"batch": {"max_lines": 0}}, "teacher.batch.max_lines", "at least 1"),
        ({"batch": {"transport": "ftp"}}, "teacher.batch.transport", "api, files"),
        ({"batch": {"poll_interval": 0}}, "teacher.batch.poll_interval", "> 0"),
        ({"batch": "fast"}, "teacher.batch", "mapping"),
    ],
)
def test_bad_mode_batch_and_price_fields_are_named(data, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        TeacherConfig.from_dict({"model": "m", **data})
    assert info.value.field == field


def test_mode_and_batch_settings_are_runtime_fields_and_round_trip():
    from datagen.teacher.config import RUNTIME_FIELDS

    assert {"mode", "batch"} <= RUNTIME_FIELDS  # switching to batch mode must not look like a new dataset
    config = TeacherConfig.from_dict(
        {"model": "m", "mode": "batch", "batch": {"max_lines": 7, "transport": "files"}}
    )
    assert config.batch == BatchSettings(max_lines=7, transport="files")
    assert TeacherConfig.from_dict(config.to_dict()) == config


def test_the_ledger_reads_cached_tokens_and_prices_them(tmp_path):
    """Two calls sharing a long prefix: the second one's cached tokens are journaled and cost less."""
    prefix = " ".join(f"w{i}" for i in range(64))
    with FakeBatchOpenAI(cache_block=16, cache_min=32) as fake:
        fake.set_responder(lambda req: {"content": "ok", "prompt_tokens": 1000, "completion_tokens": 10})
        config = make_teacher_config_for(fake, concurrency=1, prices={fake.model: MINI})
        requests = [
            Request(messages=[{"role": "system", "content": prefix}, {"role": "user", "content": q}])
            for q in ("first question", "second question")
        ]
        first, second = run_requests(config, requests, journal_path=tmp_path / "j.sqlite")
    assert (first.cached_tokens, second.cached_tokens) == (0, 64)
    assert first.cost == pytest.approx((1000 * 0.15 + 10 * 0.60) / 1e6)
    assert second.cost == pytest.approx((936 * 0.15 + 64 * 0.075 + 10 * 0.60) / 1e6)
    with Journal(tmp_path / "j.sqlite") as j:
        row = j.get(second.key)
        assert (row.cached_tokens, row.paid_cached_tokens, row.mode) == (64, 64, "online")
        assert row.paid_cost == pytest.approx(second.cost)
        assert j.stats().cached_tokens == 64


def test_a_journal_written_before_the_cache_columns_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE calls (key TEXT PRIMARY KEY, status TEXT NOT NULL, model TEXT, request TEXT NOT NULL,
            response TEXT, finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,
            paid_prompt_tokens INTEGER NOT NULL DEFAULT 0, paid_completion_tokens INTEGER NOT NULL DEFAULT 0,
            paid_cost REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, detail TEXT,
            latency REAL, created REAL NOT NULL, updated REAL NOT NULL);
        INSERT INTO calls (key, status, model, request, response, created, updated)
            VALUES ('k1', 'ok', 'm', '{}', 'old answer', 0, 0);
    """)
    conn.commit()
    conn.close()
    with Journal(path) as j:
        row = j.get("k1")
        assert (row.response, row.cached_tokens, row.mode) == ("old answer", 0, None)
        assert j.query("SELECT count(*) FROM batches")[0][0] == 0


def test_a_stage_says_what_it_will_cost_online_and_in_batch_mode_after_its_first_calls(
    fake_openai, tmp_path, caplog
):
    import logging

    config = make_teacher_config_for(fake_openai, prices={fake_openai.model: MINI})
    requests = [Request(messages=[{"role": "user", "content": f"question {i}"}]) for i in range(64)]
    with caplog.at_level(logging.INFO, logger="datagen.teacher"):
        run_requests(config, requests, journal_path=tmp_path / "j.sqlite", desc="judge")
    [line] = [r.getMessage() for r in caplog.records if "projected" in r.getMessage()]
    online, batch = (float(x) for x in re.findall(r"\$([0-9.]+)", line))
    assert line.startswith("judge: projected for the 64 calls announced:") and "first 32 paid calls" in line
    assert batch == pytest.approx(online / 2, rel=0.01) and online > 0
    [summary] = [r.getMessage() for r in caplog.records if "cost at online prices" in r.getMessage()]
    assert "prompt cache 0% of" in summary
