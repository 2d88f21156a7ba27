"""`datagen expand` and `datagen generate` from the command line, then `datagen validate`."""

from __future__ import annotations

import json
import re

from datagen.cli import main
from tests.generate.scripted_teacher import scripted_teacher


def _write_prompts(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_expand_then_generate_then_validate(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    seeds = tmp_path / "seeds.jsonl"
    _write_prompts(
        seeds,
        [
            {
                "id": "s1",
                "text": "What are good habits for learning a new language?",
                "language": "en",
                "category": "advice",
            },
            {
                "id": "s2",
                "text": "How can I sleep better when I travel a lot?",
                "language": "en",
                "category": "advice",
            },
        ],
    )
    teacher = ["--base-url", fake_openai.base_url, "--teacher-model", fake_openai.model, "--no-progress"]
    prompts = tmp_path / "prompts.jsonl"
    assert (
        main(["expand", str(seeds), "--out", str(prompts), "--target", "4", "--batch-size", "5", *teacher])
        == 0
    )
    err = capsys.readouterr().err
    assert "expand: 4 prompts kept of" in err and "rejected: " in err
    assert (tmp_path / "prompts.journal.sqlite").exists()  # journal beside --out by default
    assert len(prompts.read_text().splitlines()) == 4

    out = tmp_path / "hhh.jsonl"
    assert main(["generate", str(prompts), "--kind", "hhh", "--out", str(out), "--turns", "2", *teacher]) == 0
    err = capsys.readouterr().err
    assert "hhh dialogues: 4 made; 0 failed; 12 calls (0 from the journal)" in err
    convs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(c["lineage"]["parents"] for c in convs)  # expanded prompts carry their parents on
    assert main(["validate", str(out)]) == 0

    # rerun: nothing to do, nothing paid
    before = fake_openai.requests
    assert main(["generate", str(prompts), "--kind", "hhh", "--out", str(out), "--turns", "2", *teacher]) == 0
    assert "4 already done" in capsys.readouterr().err and fake_openai.requests == before


def test_generate_plugin_with_run_config(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    prompts = tmp_path / "prompts.jsonl"
    _write_prompts(
        prompts,
        [
            {
                "id": "c1",
                "text": "What is 23*47+12?",
                "language": "en",
                "category": "tool",
                "plugins": ["calculator"],
            }
        ],
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        f"teacher:\n  base_url: {fake_openai.base_url}\n  model: {fake_openai.model}\n"
        f"  progress: false\ndialogues:\n  plugin:\n    options:\n      turns: 1\n",
        encoding="utf-8",
    )
    out = tmp_path / "plugin.jsonl"
    assert (
        main(["generate", str(prompts), "--kind", "plugin", "--out", str(out), "--config", str(config)]) == 0
    )
    [conv] = [json.loads(line) for line in out.read_text().splitlines()]
    assert conv["turns"][0]["results"][0]["output"] == "1093"


def test_config_errors_are_one_line(fake_openai, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    _write_prompts(prompts, [{"id": "c1", "text": "Hello there, how are you?", "language": "en"}])
    config = tmp_path / "run.yaml"
    config.write_text("dialogues:\n  hhh:\n    options:\n      turnz: 3\n", encoding="utf-8")
    rc = main(
        [
            "generate",
            str(prompts),
            "--kind",
            "hhh",
            "--out",
            str(tmp_path / "o.jsonl"),
            "--config",
            str(config),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and re.match(
        rf"Error: {re.escape(str(config))}(:\d+)?: dialogues\.hhh\.options\.turnz: unknown key", err
    )
    rc = main(
        ["generate", str(prompts), "--kind", "hhh", "--out", str(tmp_path / "o.jsonl"), "--turns", "0-x"]
    )
    assert rc == 1 and "bad turn range" in capsys.readouterr().err


def test_expand_stopped_by_a_failed_request_exits_1_until_a_rerun_finishes(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    seeds = tmp_path / "seeds.jsonl"
    _write_prompts(
        seeds,
        [
            {
                "id": "s1",
                "text": "What are good habits for learning a new language?",
                "language": "en",
                "category": "advice",
            }
        ],
    )
    args = [
        "expand",
        str(seeds),
        "--out",
        str(tmp_path / "p.jsonl"),
        "--target",
        "8",
        "--batch-size",
        "4",
        "--base-url",
        fake_openai.base_url,
        "--teacher-model",
        fake_openai.model,
        "--no-progress",
        "--set",
        "teacher.max_attempts=1",
    ]
    fake_openai.inject("500", times=1)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "stopped early: 1 requests failed (server_error 1)" in err
    assert "Error: expand: 1 requests failed for reasons a retry can fix; rerun the same command" in err
    assert main(args) == 0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 8


def test_expand_and_generate_check_the_teacher_before_starting(tmp_path, capsys, monkeypatch):
    import socket

    seeds = tmp_path / "seeds.jsonl"
    _write_prompts(
        seeds,
        [
            {
                "id": "s1",
                "text": "What are good habits for learning a new language?",
                "language": "en",
                "category": "advice",
            }
        ],
    )
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    for command in (
        ["expand", str(seeds), "--out", str(tmp_path / "p.jsonl")],
        ["generate", str(seeds), "--kind", "hhh", "--out", str(tmp_path / "h.jsonl")],
    ):
        assert main([*command, "--base-url", dead, "--teacher-model", "m", "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"Error: cannot reach the teacher at {dead}") and err.count("\n") <= 2
    assert not list(tmp_path.glob("*.journal.sqlite")) and not (tmp_path / "h.jsonl").exists()

    # a server that refuses the key: one line naming the variable, and no completion request sent
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts = []

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _refuse(self):
            body = json.dumps({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self):  # noqa: N802
            self._refuse()

        def do_POST(self):  # noqa: N802
            posts.append(self.path)
            self._refuse()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DATAGEN_TEST_KEY", "wrong-key")
    try:
        rc = main(
            [
                "generate",
                str(seeds),
                "--kind",
                "hhh",
                "--out",
                str(tmp_path / "h.jsonl"),
                "--no-progress",
                "--base-url",
                f"http://127.0.0.1:{server.server_address[1]}/v1",
                "--teacher-model",
                "m",
                "--api-key-env",
                "DATAGEN_TEST_KEY",
            ]
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (
        rc == 1 and "refused the request: the key in $DATAGEN_TEST_KEY was refused" in capsys.readouterr().err
    )
    assert posts == []  # stopped before any completion request


def test_the_old_model_flag_still_names_the_teacher_with_a_warning(fake_openai, tmp_path, capsys):
    """`--model` means the local model in check/finetune; for the teacher it is now --teacher-model,
    and old scripts keep working for a release with a line saying what to write instead."""
    fake_openai.set_responder(scripted_teacher)
    prompts = tmp_path / "prompts.jsonl"
    _write_prompts(
        prompts, [{"id": "p1", "text": "How do plants drink water?", "language": "en", "category": "advice"}]
    )
    out = tmp_path / "hhh.jsonl"
    assert (
        main(
            [
                "generate",
                str(prompts),
                "--kind",
                "hhh",
                "--out",
                str(out),
                "--turns",
                "1",
                "--base-url",
                fake_openai.base_url,
                "--model",
                fake_openai.model,
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "--model is deprecated here; write --teacher-model" in err
    assert {b.get("model") for b in fake_openai.received if "messages" in b} == {fake_openai.model}
