"""`datagen journal stats|failures|export`."""

from __future__ import annotations

import json

from datagen.cli import main
from datagen.teacher.engine import run_requests
from datagen.teacher.types import Request
from tests.fakes.openai_fixtures import make_teacher_config_for


def make_journal(fake, tmp_path):
    fake.set_responder(lambda req: {"content": "fine", "prompt_tokens": 100, "completion_tokens": 50})
    config = make_teacher_config_for(
        fake, max_attempts=2, prices={"fake-teacher": {"input": 1.0, "output": 2.0}}
    )
    prompts = ["one", "two", "FAULT:400 three", "FAULT:500 four"]
    run_requests(
        config,
        [Request(messages=[{"role": "user", "content": p}]) for p in prompts],
        journal_path=tmp_path / "journal.sqlite",
    )
    return tmp_path / "journal.sqlite"


def test_journal_stats(fake_openai, tmp_path, capsys):
    path = make_journal(fake_openai, tmp_path)
    assert main(["journal", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["total"], stats["ok"], stats["failed"], stats["attempts"]) == (4, 2, 2, 5)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (200, 100)
    assert stats["cost"] == round((200 * 1.0 + 100 * 2.0) / 1e6, 6)
    assert main(["journal", "stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok 2, failed 2" in out and "fake-teacher" in out


def test_journal_failures_grouped_by_error(fake_openai, tmp_path, capsys):
    path = make_journal(fake_openai, tmp_path)
    assert main(["journal", "failures", str(path), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert [(g["error"], g["count"], g["attempts"]) for g in groups] in (
        [("bad_request", 1, 1), ("server_error", 1, 2)],
        [("server_error", 1, 2), ("bad_request", 1, 1)],
    )
    assert main(["journal", "failures", str(path)]) == 0
    captured = capsys.readouterr()
    assert "bad_request" in captured.out and "HTTP 400" in captured.out
    assert "Rerun" in captured.err


def test_journal_export_is_the_replay_record(fake_openai, tmp_path, capsys):
    path = make_journal(fake_openai, tmp_path)
    assert main(["journal", "export", str(path), "--status", "ok"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["request"]["messages"][0]["content"] for r in rows) == ["one", "two"]
    assert all(r["response"] == "fine" and r["request"]["model"] == "fake-teacher" for r in rows)


def test_missing_journal_is_one_error_line(tmp_path, capsys):
    assert main(["journal", "stats", str(tmp_path / "nope.sqlite")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "nope.sqlite" in err
