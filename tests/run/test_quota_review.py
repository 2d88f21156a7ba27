"""A run in waves applies a reviewer's decisions: rows recorded as rejected on the review page of
the run's final.jsonl leave it, their cell counts fewer accepted rows, and the same command again
fills the gap from the reserve (no teacher call) or, when the reserve is short, with new waves that
pay only for the new rows. Edits replace answers and become pairs; a row a filter dropped and the
reviewer accepted comes back and counts in its cell."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from datagen.cli import main
from datagen.record import Conversation
from datagen.review.app import _decision
from datagen.review.decisions import append_decision, content_hash, read_decisions
from datagen.review.index import RunIndex
from datagen.run.config import load_config
from datagen.run.waves import QuotaRun, quota_status
from tests.pipeline.test_quota_run import A, B, _config, responder
from tests.review.conftest import serve
from tests.review.test_server import _form, _request

pytestmark = pytest.mark.slow

EDITED = "A calmer answer, written by the reviewer."


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _in_a(row: dict) -> bool:
    return row["category"] == "writing" and not row["plugins"]


def _cells(rows: list[dict]) -> dict[str, int]:
    return {A: sum(map(_in_a, rows)), B: sum(not _in_a(r) for r in rows)}


def _decide(run: Path, row_id: str, **form: str) -> None:
    """A decision as the review page's POST records it: the row and its hash from the run's review
    index (built over the quota run's final.jsonl), appended to RUN_DIR/review.jsonl."""
    with RunIndex(run) as index:
        rids = index.rids_of(row_id)
        assert rids, f"the review page does not list {row_id}"
        row = index.row(rids[0])
        append_decision(index.decisions_path, _decision({**form, "hash": row.hash}, row, "ana"))


def _journal_keys(run: Path) -> set[str]:
    with sqlite3.connect(run / "journal.sqlite") as db:
        return {k for (k,) in db.execute("select key from calls")}


def test_a_reviewed_quota_run_tops_up_from_the_reserve_then_from_new_waves(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(responder)
    run = tmp_path / "run"
    config = _config(tmp_path, fake_openai, {"writing/en/hhh": 20, B: 5}, {"usd": 1.0})
    QuotaRun(load_config(config), run).run()
    rerun = ["run", str(config), "--out", str(run), "--no-progress"]
    final = _rows(run / "final.jsonl")
    assert _cells(final) == {A: 20, B: 5}
    reserve_a = [r for r in _rows(run / "reserve.jsonl") if _in_a(r)]
    assert len(reserve_a) >= 1, "the scripted run leaves a reserve in A (pick other targets if not)"

    # Reject as many rows of A as the reserve holds, bring back one row the judge dropped, edit one.
    final_a = [r["id"] for r in final if _in_a(r)]
    rejected = final_a[: len(reserve_a)]
    for rid in rejected:
        _decide(run, rid, decision="reject", reason="wrong_answer")
    edited = final_a[-1]
    _decide(run, edited, decision="edit", turn="0", text=EDITED)
    dropped = next(
        r for p in sorted(run.glob("waves/*/filtered/rejected.jsonl")) for r in _rows(p) if _in_a(r)
    )
    rescued = Conversation.from_dict(dropped)
    with RunIndex(run) as index:  # the page lists the reserve, which tops up the cells first
        assert all(index.rids_of(r["id"]) for r in reserve_a)
        rid = index.rids_of(rescued.id)[0]  # and what the waves dropped
    with serve(run) as url:  # `datagen review RUN_DIR` on the run in waves: its pages, a real POST
        status, _, page = _request(url, "GET", "/")
        assert status == 200 and "quota" in page and "judge" in page
        status, location, _ = _request(url, "POST", f"/row/{rid}", {"decision": "accept", **_form(url, rid)})
        assert (status, location) == (303, f"/row/{rid}")
    assert [d.hash for d in read_decisions(run / "review.jsonl")][-1] == content_hash(rescued)
    paid, keys = fake_openai.requests, _journal_keys(run)
    waves = len(json.loads((run / "quota.json").read_text())["waves"])

    # The same command: the reserve covers the rejected rows, so nothing is asked.
    assert main(rerun) == 0
    assert fake_openai.requests == paid and _journal_keys(run) == keys
    assert len(json.loads((run / "quota.json").read_text())["waves"]) == waves
    final = _rows(run / "final.jsonl")
    ids = [r["id"] for r in final]
    assert _cells(final) == {A: 20, B: 5} and len(set(ids)) == 25
    assert not set(rejected) & set(ids)
    reserve = _rows(run / "reserve.jsonl")
    assert rescued.id in ids + [r["id"] for r in reserve]  # counted in A, in final or the reserve
    assert sum(map(_in_a, reserve)) == len(reserve_a) - len(rejected) + 1
    row = next(r for r in final if r["id"] == edited)
    assert row["turns"][0]["assistant"] == EDITED and row["lineage"]["review"]["decision"] == "edited"
    pairs = _rows(run / "review" / "pairs.jsonl")
    assert [p["id"] for p in pairs] == [f"{edited}#0"] and pairs[0]["chosen"][0]["content"] == EDITED
    step = next(s for s in json.loads((run / "funnel.json").read_text())["steps"] if s["step"] == "review")
    assert (step["dropped"], step["reasons"], step["edited"], step["rescued"]) == (
        len(rejected),
        {"wrong_answer": len(rejected)},
        1,
        1,
    )
    status = quota_status(run)
    assert f"| {A} | 20 / 20 (+{sum(map(_in_a, reserve))} reserve)" in status or not sum(map(_in_a, reserve))
    assert f"Review: {len(rejected)} rows rejected, 1 edited, 1 brought back" in status
    assert status.splitlines()[0] in (run / "quota.md").read_text()
    assert "stopped: done" in status

    # The page lists the new final.jsonl; reject more rows of A than the reserve still holds.
    left = sum(map(_in_a, reserve))
    more = [r["id"] for r in final if _in_a(r) and r["id"] not in (edited, rescued.id)][: left + 3]
    for rid in more:
        _decide(run, rid, decision="reject", reason="unhelpful")
    keys = _journal_keys(run)
    paid = fake_openai.requests
    status = quota_status(run)
    assert f"| {A} | 17 / 20 |" in status  # before the rerun: 3 short, with nothing in reserve

    assert main(rerun) == 0
    new = _journal_keys(run) - keys
    assert fake_openai.requests > paid and len(new) == fake_openai.requests - paid  # nothing asked twice
    assert keys <= _journal_keys(run)
    state = json.loads((run / "quota.json").read_text())
    assert len(state["waves"]) > waves and state["plan"]["stop"] == "done"
    final = _rows(run / "final.jsonl")
    ids = {r["id"] for r in final}
    assert _cells(final) == {A: 20, B: 5} and not (set(rejected) | set(more)) & ids
    status = quota_status(run)
    assert f"| {A} | 20 / 20" in status and f"| {B} | 5 / 5" in status
    assert f"Review: {len(rejected) + len(more)} rows rejected" in (run / "quota.md").read_text()
    capsys.readouterr()
