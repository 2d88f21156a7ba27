"""The review page in a real headless browser (Debian's chromium driven by playwright; no browser
download): open a run, filter by a reason, open a plugin dialogue, reject one row, edit another,
accept one the check dropped; then check review.jsonl and what applying it does. Screenshots of the
main views are taken every time; they replace docs/review/ (the README shows them) only with
DATAGEN_UPDATE_SCREENSHOTS=1, so a test run leaves the tree as it was."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from datagen.io import iter_conversations
from datagen.review.apply import apply_decisions, review_mark
from datagen.review.decisions import content_hash, read_decisions
from tests.review.conftest import REPO, XSS, serve

pytestmark = pytest.mark.slow
SHOTS = (
    REPO / "docs" / "review"
    if os.environ.get("DATAGEN_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="datagen-review-shots-"))
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("the browser tests need Debian's chromium: apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # As root, Chromium refuses to start without --no-sandbox.
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    try:
        yield pg
    finally:
        context.close()


def _conv(run: Path, rel: str, row_id: str):
    return next(c for c in iter_conversations(run / rel) if c.id == row_id)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_review_a_run_in_the_browser(page, run_copy):
    run = run_copy
    funnel = json.loads((run / "funnel.json").read_text(encoding="utf-8"))
    check_step = next(s for s in funnel["steps"] if s["step"] == "moss_check")
    ((check_reason, n_dropped),) = check_step["reasons"].items()
    dropped_ids = [c.id for c in iter_conversations(run / "checked" / "rejected.jsonl")]
    assert len(dropped_ids) == n_dropped > 0
    assert "plugin-s-en-calc-1" not in dropped_ids  # the plugin dialogue this test rejects is a kept one

    with serve(run) as url:
        # The funnel: plots and every step, a reason links to its rows.
        page.goto(url + "/")
        assert page.locator("svg.funnel").count() == 2 and page.locator("svg.hist").count() == 1
        assert page.locator("#steps").get_by_role("link", name="moss_check", exact=True).is_visible()
        _shot(page, "funnel")

        # Filter the table by the check's reason: exactly its dropped rows, with their evidence.
        page.goto(url + "/rows")
        page.select_option("select[name=reason]", check_reason)
        page.click("#filters button[type=submit]")
        assert page.inner_text("#count").startswith(f"{n_dropped} rows")
        ids = page.locator("#rows a.rowlink").all_inner_texts()
        assert sorted(ids) == sorted(dropped_ids)
        assert page.locator("#rows .evidence").first.inner_text().find("moss_loss") >= 0
        _shot(page, "rows")

        # A plugin dialogue: inner thoughts, the command, the tool's real result, the teacher calls.
        page.goto(url + "/rows?" + "kind=plugin&q=23")
        page.get_by_role("link", name="plugin-s-en-calc-1").click()
        dialogue = page.locator("#dialogue")
        assert "The user needs a calculation." in dialogue.locator(".thoughts").first.inner_text()
        assert dialogue.locator("code.call").first.inner_text() == 'Calculate("23*47+12")'
        assert "1093" in dialogue.locator(".results").first.inner_text()
        calls = page.locator("#calls tbody tr")
        assert calls.count() >= 2 and "fake-teacher" in calls.first.inner_text()
        assert "plugin_commands" in page.inner_text("#calls")
        assert "seed_id" in page.inner_text("#lineage")
        _shot(page, "dialogue")

        # Reject it, with a reason.
        page.select_option("#reject-reason", "wrong_answer")
        page.fill("#reject-note", "the sum is fine but the answer never states it")
        page.click("#reject")
        assert "wrong_answer" in page.inner_text("#decisions")

        # Edit another row's first answer.
        page.goto(url + "/rows?q=landlord&status=kept")
        page.get_by_role("link", name="hhh-s-en-writing-2").click()
        page.locator("#turn-0 details.edit summary").click()
        page.fill(
            "#edit-text-0", "Dear landlord,\nthe heating has been broken since Monday. Could you fix it?"
        )
        page.click("#save-edit-0")
        assert "the heating has been broken since Monday" in page.inner_text("#edit-0")

        # Accept a row the check dropped: a reviewer overrules the threshold.
        page.goto(url + f"/rows?reason={check_reason}")
        page.get_by_role("link", name=dropped_ids[0], exact=True).click()
        page.click("#accept")
        assert "accept" in page.inner_text("#decisions")

        # The next unreviewed row of the cell, with counts.
        page.goto(url + "/rows?q=landlord&status=kept")
        page.get_by_role("link", name="hhh-s-en-writing-2").click()
        reviewed, total = page.inner_text("#cell-progress").split()[0::2]
        page.click("#next-unreviewed")
        assert page.inner_text("#row-id") != "hhh-s-en-writing-2"
        assert page.locator("#decisions").count() == 0
        assert page.inner_text("#cell").startswith("Cell kept · writing · en · hhh")
        assert (reviewed, total) == (
            "1",
            str(
                sum(
                    1
                    for c in iter_conversations(run / "final.jsonl")
                    if (c.category, c.language, c.kind) == ("writing", "en", "hhh")
                )
            ),
        )

        # Row content is text: a dialogue holding a <script> tag shows it and runs nothing.
        page.goto(url + "/rows?q=pwned")
        page.locator("#rows a.rowlink").first.click()
        assert XSS in page.locator("#turn-0 .human .text").inner_text()
        assert page.locator("main script").count() == 0 and page.dialogs == []

        page.goto(url + "/pairs")
        assert page.locator("#pending .pair").count() == 1
        assert "the heating has been broken since Monday" in page.inner_text("#pending .side.chosen")
        _shot(page, "pairs")

    # review.jsonl: who, when, row id, content hash, decision.
    decisions = read_decisions(run / "review.jsonl")
    assert [(d.id, d.decision) for d in decisions] == [
        ("plugin-s-en-calc-1", "reject"),
        ("hhh-s-en-writing-2", "edit"),
        (dropped_ids[0], "accept"),
    ]
    assert all(d.who == "tester" and d.when for d in decisions)
    assert decisions[0].reason == "wrong_answer" and decisions[1].turn == 0
    edited_before = _conv(run, "final.jsonl", "hhh-s-en-writing-2")
    assert decisions[1].hash == content_hash(edited_before)
    assert decisions[0].hash == content_hash(_conv(run, "final.jsonl", "plugin-s-en-calc-1"))

    # Applying it the way a run's review step does: from the check's kept rows, with the rows
    # earlier steps dropped.
    kept_in = list(iter_conversations(run / "checked" / "kept.jsonl"))
    dropped = itertools.chain(
        iter_conversations(run / "filtered" / "rejected.jsonl"),
        iter_conversations(run / "checked" / "rejected.jsonl"),
    )
    rows, stats = apply_decisions(kept_in, run / "review.jsonl", dropped=dropped)
    ids = [c.id for c in rows]
    assert "plugin-s-en-calc-1" not in ids and dropped_ids[0] in ids
    assert len(rows) == len(kept_in) - 1 + 1
    edited = next(c for c in rows if c.id == "hhh-s-en-writing-2")
    assert edited.turns[0].assistant.startswith("Dear landlord,\nthe heating")
    assert review_mark(edited)["edited_turns"] == [0] and review_mark(edited)["who"] == ["tester"]
    step = stats.to_step()
    assert (step["step"], step["dropped"], step["rescued"], step["edited"], step["flagged"]) == (
        "review",
        1,
        1,
        1,
        0,
    )
    assert step["reasons"] == {"wrong_answer": 1} and step["kept"] == len(rows) == step["in"] - 1
    (pair,) = stats.pairs
    assert pair["chosen"][0]["content"].startswith("Dear landlord") and pair["prompt"][-1]["role"] == "user"
    assert pair["rejected"][0]["content"] == edited_before.turns[0].assistant
