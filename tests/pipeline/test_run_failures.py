"""`datagen run` with teacher calls that fail for good. A few (a 400, a reply that stays empty) are
reported but never leave the stage incomplete, so the run finishes; the next run asks the refused
ones again. When every call fails, the run stops naming the cause, and the rerun after the fix asks
again. Keys the server echoes never reach the run directory, and a broken manifest is one Error line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from datagen.cli import main
from tests.generate.scripted_teacher import role_of, scripted_teacher


def _config(
    tmp_path: Path, fake, seeds: list[tuple[str, str]], teacher: dict | None = None, **hhh_options
) -> Path:
    seed_file = tmp_path / "seeds.jsonl"
    seed_file.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "language": "en", "category": "writing", "plugins": []}) + "\n"
            for i, t in seeds
        ),
        encoding="utf-8",
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "seeds": {"path": str(seed_file)},
                "teacher": {
                    "base_url": fake.base_url,
                    "model": fake.model,
                    "progress": False,
                    "concurrency": 4,
                    **(teacher or {}),
                },
                "expand": {"targets": {"default": 0}},
                "dialogues": {
                    "hhh": {"options": {"turns": {"default": [2]}, **hhh_options}},
                    "plugin": {"enabled": False},
                },
                "dataset": {"enabled": False},
            }
        ),
        encoding="utf-8",
    )
    return config


def _stage(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]["dialogues.hhh"]


def test_a_bad_request_does_not_block_the_run_and_the_next_run_asks_it_again(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("400", times=None, match="limerick")
    config = _config(
        tmp_path,
        fake_openai,
        [
            ("en1", "Write a short story about a lighthouse keeper."),
            ("en2", "Write a limerick about a cat who loves jazz."),
        ],
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    stage = _stage(out)
    assert stage["status"] == "done" and stage["failed_bad_request"] == 1 and stage["retryable_failed"] == 0
    assert stage["retry_next_run"] == 1
    assert [json.loads(line)["id"] for line in (out / "final.jsonl").read_text().splitlines()] == ["hhh-en1"]
    paid = fake_openai.requests
    # The server still refuses it: the rerun asks that one call again (a 400 is not billed), nothing else.
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.requests == paid + 1
    # The server is fixed: the rerun makes it, and the stages after the dialogues see it.
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.count("lighthouse") == 0  # finished calls come from the journal
    assert sorted(json.loads(line)["id"] for line in (out / "final.jsonl").read_text().splitlines()) == [
        "hhh-en1",
        "hhh-en2",
    ]
    assert _stage(out)["retry_next_run"] == 0
    paid = fake_openai.requests
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.requests == paid


def test_a_finished_run_with_refused_calls_does_not_need_the_teacher_to_rerun(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("400", times=None, match="limerick")
    config = _config(
        tmp_path,
        fake_openai,
        [
            ("en1", "Write a short story about a lighthouse keeper."),
            ("en2", "Write a limerick about a cat who loves jazz."),
        ],
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    fake_openai.stop()
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert (
        "dialogues.hhh: done earlier; not asking again for what the server refused, as cannot reach"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("kind", "reason", "example"),
    [
        ("400", "bad_request", "Unsupported parameter: 'top_p'"),
        ("length", "length", "cut at max_tokens"),
        ("empty_text", "empty_text", "the answer has no text"),
    ],
)
def test_every_call_failing_names_the_cause_and_the_rerun_after_the_fix_asks_again(
    fake_openai, tmp_path, capsys, kind, reason, example
):
    """The issue: every call failed for good, the run said `final.jsonl: empty file`, and after the
    server was fixed a rerun sent 0 requests and said it again."""
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject(
        kind, times=None, message="Unsupported parameter: 'top_p' is not supported with this model."
    )
    config = _config(
        tmp_path,
        fake_openai,
        [
            ("en1", "Write a short story about a lighthouse keeper."),
            ("en2", "Write a limerick about a cat who loves jazz."),
        ],
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "Traceback" not in err
    assert "dialogues.hhh: nothing was made" in error[0] and f"{reason} 2" in error[0] and example in error[0]
    assert "empty file" not in err
    assert _stage(out)["status"] == "failed"

    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.requests > 0
    assert sorted(json.loads(line)["id"] for line in (out / "final.jsonl").read_text().splitlines()) == [
        "hhh-en1",
        "hhh-en2",
    ]


def test_a_key_the_server_echoes_is_stored_nowhere(fake_openai, tmp_path, capsys, monkeypatch):
    key = "sk-test-Zq8y3SECRETVALUE0123456789"
    monkeypatch.setenv("DATAGEN_TEST_ECHO_KEY", key)
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("echo_key", times=None)
    config = _config(
        tmp_path,
        fake_openai,
        [
            ("en1", "Write a short story about a lighthouse keeper."),
            ("en2", "Write a limerick about a cat who loves jazz."),
        ],
        teacher={"api_key_env": "DATAGEN_TEST_ECHO_KEY"},
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 1
    assert fake_openai.auth_headers[-1] == f"Bearer {key}"  # the server did get it, and echoed it
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    assert "Authorization: Bearer ***" in captured.err
    stored = [p for p in out.rglob("*") if p.is_file()]
    assert {"manifest.json", "journal.sqlite", "hhh.failed.jsonl"} <= {p.name for p in stored}
    for path in stored:
        assert key.encode() not in path.read_bytes(), path
    with sqlite3.connect(out / "journal.sqlite") as db:
        details = [d for (d,) in db.execute("SELECT detail FROM calls WHERE status = 'failed'")]
    assert details and all("Bearer ***" in d for d in details)


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_truncated_manifest_is_one_error_line_saying_how_to_recover(fake_openai, tmp_path, capsys, command):
    fake_openai.set_responder(scripted_teacher)
    config = _config(tmp_path, fake_openai, [("en1", "Write a short story about a lighthouse keeper.")])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    manifest = out / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    capsys.readouterr()
    argv = ["run", str(config), "--out", str(out)] if command == "run" else ["status", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("Error:")]
    assert f"{manifest}: not valid JSON" in line and f"mv {manifest} {manifest}.bad" in line
    # Following the advice works, and pays for nothing again.
    manifest.rename(out / "manifest.json.bad")
    paid = fake_openai.requests
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.requests == paid
    assert (out / "final.jsonl").read_text().count("hhh-en1") == 1


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("sk-abc def0123456789", "a space at character 7"),
        ("sk-abcdef0123456789\n", "a newline at the end"),
        ("sk-abcdéf0123456789", "a non-ASCII character (U+00E9)"),
    ],
)
def test_a_key_that_cannot_be_sent_is_named_not_a_connection_failure(
    fake_openai, tmp_path, capsys, monkeypatch, key, problem
):
    monkeypatch.setenv("DATAGEN_TEST_BAD_KEY", key)
    config = _config(
        tmp_path,
        fake_openai,
        [("en1", "Write a short story about a lighthouse keeper.")],
        teacher={"api_key_env": "DATAGEN_TEST_BAD_KEY"},
    )
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot reach" not in err
    [line] = [line for line in err.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: $DATAGEN_TEST_BAD_KEY: the API key in it has " + problem)
    assert key.strip() not in err and "abcd" not in err
    assert fake_openai.requests == 0


def test_an_empty_reply_is_not_the_engines_retryable_empty(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "assistant" and "limerick" in json.dumps(req):
            return "MOSS: <eom>"
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    config = _config(
        tmp_path,
        fake_openai,
        [
            ("en1", "Write a short story about a lighthouse keeper."),
            ("en2", "Write a limerick about a cat who loves jazz."),
        ],
        content_retries=0,
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    stage = _stage(out)
    assert stage["status"] == "done" and stage["failed_empty_reply"] == 1 and "failed_empty" not in stage
