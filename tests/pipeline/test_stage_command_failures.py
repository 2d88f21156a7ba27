"""`datagen generate` and `datagen expand` when teacher calls fail for good: exit 0 only when every
prompt has its output, name the main cause with an example, and stop paying when every call fails."""

from __future__ import annotations

import json

from datagen.cli import main
from datagen.generate.dialogues import GIVE_UP_AFTER
from tests.generate.scripted_teacher import scripted_teacher

PROMPTS = [
    ("en1", "Write a short story about a lighthouse keeper."),
    ("en2", "Write a limerick about a cat who loves jazz."),
]


def _prompts(tmp_path, rows=PROMPTS):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "language": "en", "category": "writing"}) + "\n" for i, t in rows
        ),
        encoding="utf-8",
    )
    return path


def _generate(fake, tmp_path, prompts, *extra):
    return [
        "generate",
        str(prompts),
        "--kind",
        "hhh",
        "--out",
        str(tmp_path / "hhh.jsonl"),
        "--turns",
        "1",
        "--base-url",
        fake.base_url,
        "--model",
        fake.model,
        "--api-key-env",
        "DATAGEN_TEST_TEACHER_KEY",
        "--no-progress",
        *extra,
    ]


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("Error:")]
    return line


def test_generate_that_made_nothing_exits_1_naming_the_cause(fake_openai, tmp_path, capsys):
    """The issue: `0 made; 2 failed` and exit 0."""
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject(
        "400", times=None, message="Unsupported parameter: 'top_p' is not supported with this model."
    )
    args = _generate(fake_openai, tmp_path, _prompts(tmp_path))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "hhh dialogues: 0 made; 2 failed (bad_request 2)" in err
    line = _error_line(err)
    assert line.startswith("Error: generate: no dialogue was made: every one failed (bad_request 2; e.g. ")
    assert "Unsupported parameter: 'top_p'" in line and "hhh.failed.jsonl" in line
    # The server is fixed: the same command makes both and exits 0.
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    assert main(args) == 0
    assert len((tmp_path / "hhh.jsonl").read_text().splitlines()) == 2


def test_generate_with_failures_left_exits_1_and_a_rerun_pays_only_for_what_can_change(
    fake_openai, tmp_path, capsys
):
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("empty_text", times=None, match="limerick")
    args = _generate(
        fake_openai, tmp_path, _prompts(tmp_path), "--set", "dialogues.hhh.options.content_retries=0"
    )
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(
        "Error: generate: 1 dialogues have none (empty_text 1; e.g. assistant: the answer has no text"
    )
    assert "--retry-failed" in line
    # An unusable reply under the same settings is not paid for again, but it is still missing.
    paid = fake_openai.requests
    assert main(args) == 1
    assert "1 failed for good on an earlier run" in _error_line(capsys.readouterr().err)
    assert fake_openai.requests == paid
    assert main([*args, "--retry-failed"]) == 1
    assert fake_openai.requests == paid + 1
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    assert main([*args, "--retry-failed"]) == 0
    assert len((tmp_path / "hhh.jsonl").read_text().splitlines()) == 2


def test_generate_stops_starting_dialogues_when_every_one_fails(fake_openai, tmp_path, capsys):
    rows = [
        (f"p{i}", f"Write a short poem about the number {i} and the sea.") for i in range(GIVE_UP_AFTER + 24)
    ]
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("400", times=None)
    args = _generate(fake_openai, tmp_path, _prompts(tmp_path, rows), "--concurrency", "2")
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert "no dialogue was made" in line and "not started" in line
    assert GIVE_UP_AFTER <= fake_openai.requests < GIVE_UP_AFTER + 4  # not one per prompt
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    assert main(args) == 0
    assert len((tmp_path / "hhh.jsonl").read_text().splitlines()) == len(rows)


def test_expand_that_kept_nothing_because_every_request_failed_exits_1(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("400", times=None, message="Unsupported parameter: 'top_p'")
    seeds = _prompts(tmp_path)
    args = [
        "expand",
        str(seeds),
        "--out",
        str(tmp_path / "p.jsonl"),
        "--target",
        "4",
        "--batch-size",
        "4",
        "--base-url",
        fake_openai.base_url,
        "--model",
        fake_openai.model,
        "--no-progress",
    ]
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("Error: expand: no prompt was kept") and "bad_request" in line
    assert "Unsupported parameter: 'top_p'" in line
