"""`datagen run` applies a reviewer's decisions: a run against the fake teacher, decisions recorded
the way the review server records them, and a rerun of the same command that makes the `review`
funnel step (rows rejected, edited, brought back) without asking the teacher anything. A decision
on a row that a changed config made anew is flagged, not applied; `datagen publish` warns about
decisions made after final.jsonl."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from datagen.cli import main
from datagen.record import Conversation
from datagen.review.app import _decision
from datagen.review.apply import review_mark
from datagen.review.decisions import append_decision, read_decisions
from datagen.review.index import RunIndex
from tests.fakes.openai_server import FakeOpenAI
from tests.generate.scripted_teacher import scripted_teacher

# en2 is en1 with another final mark: one of their dialogues is an exact duplicate of the other,
# which the filters drop (which one depends on the order the dialogues were finished in).
SEEDS = [
    ("en1", "Write a short story about a lighthouse keeper.", "en"),
    ("en2", "Write a short story about a lighthouse keeper!", "en"),
    ("en3", "Write a limerick about a cat who loves jazz.", "en"),
    ("zh1", "写一首关于春天的小诗，要有花和雨。", "zh"),
]
EDITED = "春雨落在花上，\n小路湿了，心也亮了。"
WARNING = "warning: review.jsonl has decisions newer than final.jsonl; rerun `datagen run` to apply them"


@dataclass(slots=True)
class FirstRun:
    fake: FakeOpenAI
    config: Path
    run: Path
    dup: str  # the row the filters dropped as a duplicate of `twin`
    twin: str


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One finished run (no check stage, dataset folder built, nothing published), made once; the
    fake teacher stays up for the module's reruns."""
    tmp = tmp_path_factory.mktemp("run-review")
    seed_file = tmp / "seeds.jsonl"
    seed_file.write_text(
        "".join(
            json.dumps(
                {"id": i, "text": t, "language": lang, "category": "writing", "plugins": []},
                ensure_ascii=False,
            )
            + "\n"
            for i, t, lang in SEEDS
        ),
        encoding="utf-8",
    )
    fake = FakeOpenAI().start()
    fake.set_responder(scripted_teacher)
    try:
        config = tmp / "run.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": "reviewed",
                    "seeds": {"path": str(seed_file)},
                    "teacher": {
                        "base_url": fake.base_url,
                        "model": fake.model,
                        "progress": False,
                        "concurrency": 4,
                    },
                    "expand": {"targets": {"default": 0}},
                    "dialogues": {
                        "hhh": {"options": {"turns": {"default": [2]}}},
                        "plugin": {"enabled": False},
                    },
                    "publish": {"license": "cc-by-4.0"},
                }
            ),
            encoding="utf-8",
        )
        run = tmp / "run"
        assert main(["run", str(config), "--out", str(run), "--no-progress"]) == 0
        rejected = [
            json.loads(line) for line in (run / "filtered" / "rejected.jsonl").read_text().splitlines()
        ]
        assert [r["rejected"]["reason"] for r in rejected] == ["duplicate_dialogue"]
        dup = rejected[0]["id"]
        twin = ({"hhh-en1", "hhh-en2"} - {dup}).pop()
        assert sorted(c["id"] for c in _final(run)) == sorted([twin, "hhh-en3", "hhh-zh1"])
        yield FirstRun(fake, config, run, dup, twin)
    finally:
        fake.stop()


@pytest.fixture
def run_copy(first_run, tmp_path) -> Path:
    """A private copy of the first run (modification times kept, so the rerun sees it unchanged)."""
    return Path(shutil.copytree(first_run.run, tmp_path / "run", copy_function=shutil.copy2))


def _final(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "final.jsonl").read_text(encoding="utf-8").splitlines()]


def _decide(run: Path, row_id: str, **form: str) -> dict:
    """Record a decision as the review page's POST does: the row and its hash from the run's review
    index, the decision made from the submitted form, appended to review.jsonl. Returns the row as
    the page showed it."""
    with RunIndex(run) as index:
        row = index.row(index.rids_of(row_id)[0])
        append_decision(index.decisions_path, _decision({**form, "hash": row.hash}, row, "ana"))
        index.sync_decisions()
    return row.obj


def _review_step(run: Path) -> dict:
    steps = json.loads((run / "funnel.json").read_text(encoding="utf-8"))["steps"]
    assert [s["step"] for s in steps][-1] == "review"  # applied last, after every filter
    return steps[-1]


def test_a_rerun_applies_the_decisions_without_asking_the_teacher(first_run, run_copy, capsys):
    run = run_copy
    _decide(run, "hhh-en3", decision="reject", reason="unhelpful", note="says nothing about jazz")
    original = _decide(run, "hhh-zh1", decision="edit", turn="1", text=EDITED)
    _decide(run, first_run.dup, decision="accept")  # dropped by exact_dedup, kept by the reviewer
    assert [d.decision for d in read_decisions(run / "review.jsonl")] == ["reject", "edit", "accept"]
    paid = first_run.fake.requests
    capsys.readouterr()

    assert main(["run", str(first_run.config), "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert first_run.fake.requests == paid
    for stage in ("seeds", "expand", "dialogues.hhh", "filter"):
        assert f"{stage}: done earlier, skipped" in err
    for stage in ("review", "final", "dataset"):
        assert f"{stage}: running" in err
    assert "not applied" not in err and WARNING not in err

    final = {c["id"]: c for c in _final(run)}
    assert sorted(final) == ["hhh-en1", "hhh-en2", "hhh-zh1"]  # en3 rejected, the duplicate back
    edited = final["hhh-zh1"]
    assert [t["assistant"] for t in edited["turns"]] == [original["turns"][0]["assistant"], EDITED]
    mark = edited["lineage"]["review"]
    assert mark["decision"] == "edited" and mark["edited_turns"] == [1] and mark["who"] == ["ana"]
    assert review_mark(Conversation.from_dict(final[first_run.dup]))["decision"] == "accepted"
    assert final[first_run.dup]["tags"]["review"] == "accepted"
    assert review_mark(Conversation.from_dict(final[first_run.twin])) is None  # no decision, left alone

    step = _review_step(run)
    assert {
        k: step[k]
        for k in ("in", "kept", "dropped", "tagged", "reasons", "accepted", "rescued", "edited", "flagged")
    } == {
        "in": 4,
        "kept": 3,
        "dropped": 1,
        "tagged": 1,
        "reasons": {"unhelpful": 1},
        "accepted": 1,
        "rescued": 1,
        "edited": 1,
        "flagged": 0,
    }
    assert json.loads((run / "funnel.json").read_text())["kept"] == 3
    card = (run / "dataset" / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^\| review \| 4 \| 3 \| 1 \| 1 \| .* unhelpful \(1\) \|$", card, re.M), card
    assert "nobody reviewed rows by hand" not in card
    assert "1 rejected, 1 edited, 1 accepted" in card
    build = json.loads((run / "dataset" / "datagen" / "build.json").read_text())
    assert sum(n for splits in build["counts"].values() for n in splits.values()) == 3

    pairs = [json.loads(line) for line in (run / "review" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["id"] == "hhh-zh1#1" and pair["datagen"]["who"] == "ana"
    assert pair["chosen"] == [{"role": "assistant", "content": EDITED}]
    assert pair["rejected"] == [{"role": "assistant", "content": original["turns"][1]["assistant"]}]
    assert pair["prompt"][-1] == {"role": "user", "content": original["turns"][1]["human"]}

    # The same command again: nothing new to apply, so nothing runs again.
    assert main(["run", str(first_run.config), "--out", str(run), "--no-progress"]) == 0
    assert "review: done earlier, skipped" in capsys.readouterr().err
    assert first_run.fake.requests == paid


def test_decisions_on_rows_made_anew_are_flagged_not_applied(first_run, run_copy, capsys):
    run = run_copy
    before = _decide(run, "hhh-en3", decision="reject", reason="unhelpful")
    _decide(run, "hhh-zh1", decision="edit", turn="0", text=EDITED)
    capsys.readouterr()

    # Three turns instead of two: every dialogue is made again, so the decisions are about rows
    # that no longer exist.
    assert (
        main(
            [
                "run",
                str(first_run.config),
                "--out",
                str(run),
                "--no-progress",
                "--set",
                "dialogues.hhh.options.turns={default: [3]}",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "review: hhh-en3: the row changed since this decision; not applied" in err
    assert "review: hhh-zh1: the row changed since this decision; not applied" in err
    final = {c["id"]: c for c in _final(run)}
    assert "hhh-en3" in final and len(final) == 3
    assert len(final["hhh-en3"]["turns"]) == 3 and final["hhh-en3"]["turns"][0] == before["turns"][0]
    assert EDITED not in json.dumps(final, ensure_ascii=False)
    assert all(not c["lineage"].get("review") for c in final.values())
    step = _review_step(run)
    assert (step["in"], step["kept"], step["dropped"], step["edited"], step["flagged"]) == (3, 3, 0, 0, 2)
    assert (run / "review" / "pairs.jsonl").read_text() == ""


def test_publish_warns_when_decisions_are_newer_than_final(first_run, run_copy, tmp_path, capsys):
    run = run_copy
    publish = ["publish", str(run), "--dry-run", "--out", str(tmp_path / "folder")]
    assert main(publish) == 0
    assert WARNING not in capsys.readouterr().err  # no review.jsonl

    _decide(run, "hhh-en3", decision="reject", reason="unhelpful")
    assert main(publish) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if WARNING in line] == [f"[datagen publish] {WARNING}"]

    assert main(["run", str(first_run.config), "--out", str(run), "--no-progress"]) == 0
    assert main(publish) == 0
    assert WARNING not in capsys.readouterr().err  # applied now
