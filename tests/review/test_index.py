"""The review index: rows of every kind from a run's files, filters, search, staleness, decisions
and the teacher calls behind each dialogue."""

from __future__ import annotations

import json
import os

import pytest

from datagen.errors import InputError
from datagen.io import dumps
from datagen.record import Conversation
from datagen.review.decisions import Decision, append_decision, content_hash
from datagen.review.index import Filters, RunIndex, fts_query
from tests.review.small_run import hhh, make_small_run


@pytest.fixture
def index(tmp_path):
    with RunIndex(make_small_run(tmp_path / "run")) as ix:
        yield ix


def _ids(ix, **filters):
    rows, total = ix.page(Filters(**filters))
    assert total == len(rows)
    return [r.id for r in rows]


def test_every_kind_of_row_with_its_stage_reason_and_evidence(index):
    got = {r.id: (r.status, r.stage, r.reason) for r in index.page(Filters())[0]}
    assert got == {
        "hhh-a": ("kept", "final", None),
        "hhh-b": ("kept", "final", None),
        "hhh-xss": ("kept", "final", None),
        "plugin-calc": ("kept", "final", None),
        "hhh-dup": ("rejected", "near_dedup", "near_dup"),
        "hhh-mixed": ("rejected", "language", "language_drift"),
        "hhh-weak": ("rejected", "moss_check", "loss_above_percentile"),
        "hhh-silent": ("failed", "dialogues.hhh", "empty_text"),
        "prompt:1": ("rejected", "expand", "blacklist"),
    }
    dup = index.row(index.rids_of("hhh-dup")[0])
    assert dup.evidence == {"similarity": 0.93, "duplicate_of": "hhh-a"} and dup.obj["id"] == "hhh-dup"
    failed = index.row(index.rids_of("hhh-silent")[0])
    assert (failed.category, failed.preview) == ("honest", "Do you remember what we talked about yesterday?")
    assert index.facets()["plugin"] == [["calculator", 1]]


def test_filters(index):
    assert _ids(index, stage="near_dedup", reason="near_dup") == ["hhh-dup"]
    assert _ids(index, reason="loss_above_percentile") == ["hhh-weak"]
    assert _ids(index, plugin="calculator") == _ids(index, kind="plugin") == ["plugin-calc"]
    assert _ids(index, language="zh") == ["hhh-b"]
    assert _ids(index, category="code", status="kept") == ["hhh-xss"]
    assert _ids(index, score="moss_loss", lo=1.5, hi=3.0) == ["hhh-b", "hhh-xss"]
    assert _ids(index, score="moss_loss", lo=3.5) == ["hhh-weak"]


def test_full_text_search_finds_words_and_any_run_of_chinese(index):
    assert _ids(index, q="sea night") == ["hhh-a", "hhh-dup"]
    assert _ids(index, q="长城") == _ids(index, q="城有多") == ["hhh-b"]
    assert _ids(index, q="1093") == ["plugin-calc"]  # tool results are searchable
    assert _ids(index, q="tiger bridge") == ["prompt:1"]
    assert _ids(index, q='"unbalanced AND (') == []  # user input never breaks the FTS syntax
    assert fts_query('a"b OR') == '"a b" AND "OR"'
    assert _ids(index, q="+*") == []


def test_pages(index):
    rows, total = index.page(Filters(), offset=2, limit=3)
    assert total == 9 and [r.id for r in rows] == ["hhh-xss", "plugin-calc", "hhh-dup"]


def test_the_index_is_built_once_and_rebuilt_when_a_run_file_changes(tmp_path):
    run = make_small_run(tmp_path / "run")
    with RunIndex(run) as ix:
        assert ix.rebuilt
    built = (run / "review" / "index.sqlite").stat().st_mtime_ns
    with RunIndex(run) as ix:
        assert not ix.rebuilt and not ix.stale()
        with open(run / "final.jsonl", "a", encoding="utf-8") as fh:
            fh.write(dumps(hhh("hhh-new", "Name three rivers.", "Nile, Amazon, Yangtze.").to_dict()) + "\n")
        assert ix.stale()
        ix.refresh()
        assert "hhh-new" in _ids(ix, status="kept")
    assert (run / "review" / "index.sqlite").stat().st_mtime_ns != built


def test_decisions_are_mirrored_and_drive_the_next_unreviewed_row(index):
    kept = Filters(status="kept")
    assert index.cell_progress(kept) == (0, 4)
    order = []
    after = None
    while (rid := index.next_unreviewed(kept, after)) is not None and rid not in order:
        order.append(rid)
        after = index.row(rid)
    assert sorted(index.row(r).id for r in order) == ["hhh-a", "hhh-b", "hhh-xss", "plugin-calc"]

    first = index.row(order[0])
    append_decision(
        index.decisions_path, Decision(id=first.id, hash=first.hash, decision="accept", who="a", when="t")
    )
    append_decision(
        index.decisions_path,
        Decision(id="hhh-b", hash="0" * 16, decision="reject", reason="other", who="a", when="t"),
    )
    index.sync_decisions()
    assert index.cell_progress(kept) == (2, 4)
    assert _ids(index, reviewed="flagged") == ["hhh-b"]
    assert _ids(index, reviewed="accept") == [first.id]
    assert first.id not in _ids(index, reviewed="unreviewed", status="kept")
    assert index.next_unreviewed(kept, first) not in (order[0], index.rids_of("hhh-b")[0])
    assert index.review_counts() == {"accept": 1, "reject": 1, "flagged": 1, "reviewed": 2}
    assert first.hash == content_hash(Conversation.from_dict(first.obj))


def test_teacher_calls_behind_a_dialogue(index):
    calls = index.calls("plugin-calc")
    assert [c["template"] for c in calls] == ["plugin_commands.v2", "plugin_answer.v1"]
    assert calls[0]["model"] == "m" and calls[0]["prompt_tokens"] == 10 and calls[0]["latency"] == 0.5
    assert [c["key"] for c in index.calls("hhh-a")] == ["k2"]  # not the expansion call quoting it


def test_a_bad_line_in_a_run_file_names_the_file_and_line(tmp_path):
    run = make_small_run(tmp_path / "run")
    with open(run / "filtered" / "rejected.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "x", "rejected": {"step": "s", "reason": "r"}}) + "\n{oops\n")
    with pytest.raises(InputError) as err:
        RunIndex(run).open()
    assert str(err.value) == f"{run / 'filtered' / 'rejected.jsonl'}:3: turns: missing required field"
    assert not any(name.endswith(".tmp") for name in os.listdir(run / "review"))


def test_the_loss_histogram_is_counted_once_by_status(index):
    bins = index.facets()["loss_bins"]
    assert (bins["lo"], bins["hi"]) == (1.2, 4.0)
    assert sum(bins["counts"]["kept"]) == 3 and bins["counts"]["rejected"][-1] == 1
    assert len(bins["counts"]["kept"]) == 4  # no more bins than values


def test_a_filter_output_folder_alone_can_be_reviewed(tmp_path):
    from datagen.filters.run import run_filters

    rows = [
        hhh("a", "Write a poem about the sea at night.", "Waves hum softly under the moon tonight."),
        hhh("b", "Write a poem about the sea at night.", "Waves hum softly under the moon tonight."),
    ]
    run_filters(rows, out_dir=tmp_path / "filtered-only")
    with RunIndex(tmp_path / "filtered-only") as ix:
        got = {r.id: (r.status, r.stage, r.reason) for r in ix.page(Filters())[0]}
    assert got["a"] == ("kept", "final", None) and got["b"][0] == "rejected" and got["b"][2]
