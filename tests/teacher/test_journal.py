"""The SQLite journal: group commits, ok rows never downgraded, ledger sums, many writers."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from datagen.errors import DatagenError
from datagen.teacher.journal import Journal, JournalEntry, canonical_request, key_of


def entry(i: int, status: str = "ok", **kw) -> JournalEntry:
    req = canonical_request("m", [{"role": "user", "content": f"q{i}"}], {"temperature": 0.5}, "v1")
    return JournalEntry(
        key=key_of(req),
        status=status,
        request=req,
        model="m",
        response=f"a{i}" if status == "ok" else None,
        **kw,
    )


def test_rows_round_trip_and_wal_mode(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.put(entry(1, prompt_tokens=3, completion_tokens=4, cost=0.5, paid_cost=0.5, attempts=1))
        j.flush()
        got = j.get(entry(1).key)
        assert got.response == "a1" and got.request["messages"][0]["content"] == "q1"
        assert (got.prompt_tokens, got.completion_tokens, got.cost, got.attempts) == (3, 4, 0.5, 1)
        assert j.get_ok(entry(1).key) is not None and j.get("nope") is None
    conn = sqlite3.connect(tmp_path / "j.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_ok_row_is_never_replaced_by_a_failure_and_paid_work_adds_up(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.put(entry(1, "failed", error="server_error", attempts=3, paid_cost=0.0))
        j.put(entry(1, "ok", attempts=1, paid_prompt_tokens=10, paid_cost=0.1))
        j.put(entry(1, "failed", error="timeout", attempts=2, paid_cost=0.2))
        j.flush()
        got = j.get(entry(1).key)
        assert (got.status, got.error, got.attempts, got.response) == ("ok", None, 4, "a1")
        assert got.paid_cost == pytest.approx(0.1)


def test_failed_rows_are_not_served_as_cached(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.put(entry(2, "failed", error="length", attempts=1))
        j.flush()
        assert j.get_ok(entry(2).key) is None
        assert j.get(entry(2).key).error == "length"


def test_stats_and_failures(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        for i in range(5):
            j.put(
                entry(
                    i,
                    prompt_tokens=10,
                    completion_tokens=5,
                    paid_prompt_tokens=10,
                    paid_completion_tokens=5,
                    cost=0.01,
                    paid_cost=0.01,
                    attempts=1,
                )
            )
        for i in range(5, 8):
            j.put(entry(i, "failed", error="bad_request", detail=f"HTTP 400 #{i}", attempts=1))
        j.put(entry(9, "failed", error="timeout", detail="slow", attempts=6))
        j.flush()
        st = j.stats()
        groups = j.failures()
        assert [e.key for e in j.entries("failed")] == [entry(i).key for i in (5, 6, 7, 9)]
    assert (st.total, st.ok, st.failed, st.attempts) == (9, 5, 4, 14)
    assert (st.prompt_tokens, st.completion_tokens) == (50, 25)
    assert st.cost == pytest.approx(0.05)
    assert str(st).startswith("9 calls: 5 ok, 4 failed")
    assert [(g.error, g.count, g.attempts) for g in groups] == [("bad_request", 3, 3), ("timeout", 1, 6)]
    assert groups[0].example.startswith("HTTP 400 #")


def test_concurrent_awaited_writes_from_one_loop(tmp_path):
    async def main(j):
        await asyncio.gather(*(j.write(entry(i, attempts=1)) for i in range(2000)))
        return j.count("ok")  # every awaited write is committed by now

    with Journal(tmp_path / "j.sqlite") as j:
        assert asyncio.run(main(j)) == 2000


def test_rows_survive_reopening(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        for i in range(100):
            j.put(entry(i))
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.count() == 100 and j.get_ok(entry(42).key).response == "a42"


def test_schema_version_mismatch_is_refused(tmp_path):
    with Journal(tmp_path / "j.sqlite"):
        pass
    conn = sqlite3.connect(tmp_path / "j.sqlite")
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(DatagenError, match="schema version 99"):
        Journal(tmp_path / "j.sqlite").open()


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    (tmp_path / "j.sqlite").write_text("not a database at all" * 100)
    with pytest.raises(DatagenError, match="not a usable journal"):
        Journal(tmp_path / "j.sqlite").open()
