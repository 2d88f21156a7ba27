"""`datagen run` with dialogues that fail for good: a failure asking again cannot fix (a 400, a reply
that stays empty) is reported but never leaves the stage incomplete, so the run finishes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from datagen.cli import main
from tests.generate.scripted_teacher import role_of, scripted_teacher


def _config(tmp_path: Path, fake, seeds: list[tuple[str, str]], **hhh_options) -> Path:
    seed_file = tmp_path / "seeds.jsonl"
    seed_file.write_text("".join(json.dumps({"id": i, "text": t, "language": "en", "category": "writing",
                                             "plugins": []}) + "\n" for i, t in seeds), encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "x", "seeds": {"path": str(seed_file)},
        "teacher": {"base_url": fake.base_url, "model": fake.model, "progress": False, "concurrency": 4},
        "expand": {"targets": {"default": 0}},
        "dialogues": {"hhh": {"options": {"turns": {"default": [2]}, **hhh_options}}, "plugin": {"enabled": False}},
        "dataset": {"enabled": False}}), encoding="utf-8")
    return config


def _stage(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]["dialogues.hhh"]


def test_a_bad_request_does_not_block_the_run(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    config = _config(tmp_path, fake_openai, [("en1", "Write a short story about a lighthouse keeper."),
                                             ("en2", "Write a limerick about a cat who loves jazz. FAULT:400")])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    stage = _stage(out)
    assert stage["status"] == "done" and stage["failed_bad_request"] == 1 and stage["retryable_failed"] == 0
    assert [json.loads(line)["id"] for line in (out / "final.jsonl").read_text().splitlines()] == ["hhh-en1"]
    paid = fake_openai.requests
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert fake_openai.requests == paid


def test_an_empty_reply_is_not_the_engines_retryable_empty(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "assistant" and "limerick" in json.dumps(req):
            return "MOSS: <eom>"
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    config = _config(tmp_path, fake_openai, [("en1", "Write a short story about a lighthouse keeper."),
                                             ("en2", "Write a limerick about a cat who loves jazz.")],
                     content_retries=0)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    stage = _stage(out)
    assert stage["status"] == "done" and stage["failed_empty_reply"] == 1 and "failed_empty" not in stage
