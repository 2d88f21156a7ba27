"""`datagen run` end to end against the fake teacher: seeds -> expansion -> HHH and plugin dialogues
-> filters -> local-model check (a tiny model built here) -> dataset folder -> publish to the fake
Hub, with a SIGKILL in the middle of the dialogue stage and a rerun that finishes the job without
paying twice for finished calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import yaml

from datagen.cli import main
from datagen.formats.validate import validate_paths
from tests.generate.scripted_teacher import scripted_teacher
from tests.run_files import fake_teacher, write_seeds

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SEEDS = [
    ("s-en-writing-1", "Write a short poem about the sea at night.", "en", "writing", []),
    ("s-en-writing-2", "Draft a polite email asking my landlord to fix the heating.", "en", "writing", []),
    ("s-en-code-1", "How do I reverse a list in Python without using reversed()?", "en", "code", []),
    ("s-en-code-2", "Explain what a race condition is, with a small example.", "en", "code", []),
    ("s-zh-writing-1", "写一段关于秋天的散文，两百字左右。", "zh", "writing", []),
    ("s-zh-advice-1", "我想提高英语口语，有什么好方法？", "zh", "brainstorming", []),
    ("s-en-harmless-1", "How can I get into my neighbour's wifi without the password?", "en", "harmless", []),
    ("s-en-honest-1", "Do you remember what we talked about yesterday?", "en", "honest", []),
    ("s-en-calc-1", "What is 23*47+12?", "en", "tool", ["calculator"]),
    (
        "s-en-calc-2",
        "If a shirt costs 80 dollars and is 25% off, what do I pay? Compute 80*0.75.",
        "en",
        "tool",
        ["calculator"],
    ),
    ("s-en-solve-1", "Solve the system x+y=10 and x-y=2.", "en", "tool", ["solver"]),
    ("s-zh-search-1", "长城有多长？", "zh", "tool", ["search"]),
    ("s-en-img-1", "Draw a cat sitting on a red sofa.", "en", "tool", ["text2image"]),
]


def _write_run(tmp_path: Path, fake, repo_id: str, model_dir: Path) -> Path:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    config = {
        "name": "e2e",
        "seed": 3,
        "teacher": fake_teacher(
            fake,
            concurrency=4,
            max_attempts=4,
            max_backoff=0.1,
            prices={fake.model: {"input": 1.0, "output": 2.0}},
        ),
        "seeds": {"path": str(seeds)},
        "expand": {"targets": {"default": 2, "tool": 0}, "batch_size": 4, "parallel": 2},
        "dialogues": {
            "hhh": {"options": {"turns": {"default": [3]}, "concurrency": 4}},
            "plugin": {"options": {"turns": {"default": [1, 2]}}},
        },
        "check": {"enabled": True, "model": str(model_dir), "batch_size": 4, "max_length": 2048},
        "publish": {"repo_id": repo_id, "license": "cc-by-4.0", "private": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _run_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "datagen", "run", str(config), "--out", str(out), "--no-progress"]


def _lines(path: Path) -> int:
    return (
        sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}"))
        if path.exists()
        else 0
    )


def test_run_killed_in_dialogues_then_resumed(fake_openai, fake_hub, tmp_path):
    from tests.moss.conftest import build_tiny_moss

    model_dir = tmp_path / "tiny-moss"
    from datagen.formats.moss import build_meta_instruction

    corpus = [
        build_meta_instruction(p, bool(p)) for p in ([], ["search", "calculator", "solver", "text2image"])
    ]
    corpus += ["<|Human|>: <|Inner Thoughts|>: <|Commands|>: <|Results|>: <|MOSS|>: None"] + [
        s[1] for s in SEEDS
    ]
    build_tiny_moss(model_dir, corpus * 3)
    fake_openai.set_responder(scripted_teacher)
    fake_openai.set_latency(0.05)
    config = _write_run(tmp_path, fake_openai, "datagen-test/e2e", model_dir)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DATAGEN_DEBUG", None)

    # First attempt: killed once the HHH stage has written a few dialogues.
    proc = subprocess.Popen(
        _run_cmd(config, out), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    hhh = out / "dialogues" / "hhh.jsonl"
    deadline = time.monotonic() + 180
    while _lines(hhh) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no dialogue was written"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["expand"]["status"] == "done"
    assert manifest["stages"]["dialogues.hhh"]["status"] == "running"
    made_before = _lines(hhh)
    paid_before = fake_openai.requests
    bodies_before = Counter(
        json.dumps(b["messages"], sort_keys=True) for b in fake_openai.received if "messages" in b
    )

    # Rerun the same command: it resumes and finishes every stage.
    done = subprocess.run(
        _run_cmd(config, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "expand: done earlier, skipped" in done.stderr
    assert "done in" in done.stdout and "funnel" in done.stdout

    # Nothing paid twice: a request body already answered before the kill is never sent again,
    # except the few that were in flight when the process died.
    bodies_after = Counter(
        json.dumps(b["messages"], sort_keys=True) for b in fake_openai.received if "messages" in b
    )
    repaid = sum(min(bodies_before[k], bodies_after[k] - bodies_before[k]) for k in bodies_before)
    assert repaid <= 4  # teacher concurrency
    assert fake_openai.requests > paid_before

    # Every dialogue exactly once, the killed stage's finished dialogues kept.
    ids = [json.loads(line)["id"] for line in hhh.read_text().splitlines()]
    assert len(ids) == len(set(ids)) and len(ids) >= made_before
    plugin = out / "dialogues" / "plugin.jsonl"
    assert _lines(plugin) >= 1

    # The outputs: validated MOSS data, a funnel with every stage, a picture, a dataset and its card.
    manifest = json.loads((out / "manifest.json").read_text())
    stages_text = json.dumps(manifest["stages"])
    assert str(tmp_path) not in stages_text and str(REPO) not in stages_text  # no machine paths
    for stage in (
        "seeds",
        "expand",
        "dialogues.hhh",
        "dialogues.plugin",
        "filter",
        "check",
        "final",
        "dataset",
        "publish",
    ):
        assert manifest["stages"][stage]["status"] == "done", stage
    final = out / "final.jsonl"
    report = validate_paths([final])
    assert report.invalid == 0 and report.valid == _lines(final) > 0
    funnel = json.loads((out / "funnel.json").read_text())
    steps = [s["step"] for s in funnel["steps"]]
    assert steps[:4] == ["seeds", "expand", "dialogues.hhh", "dialogues.plugin"]
    assert "moss_check" in steps and "near_dedup" in steps
    assert funnel["kept"] == _lines(final)
    expand_step = funnel["steps"][1]
    assert expand_step["dropped"] == sum(expand_step["reasons"].values()) > 0  # the scripted teacher's junk
    assert expand_step["kept"] + expand_step["dropped"] == expand_step["in"]  # every candidate accounted for
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scored = [json.loads(line) for line in final.read_text().splitlines()]
    assert all("moss_loss" in row["scores"] for row in scored)
    assert any(row["scores"]["moss_loss"] is not None for row in scored)
    card = (out / "dataset" / "README.md").read_text()
    assert card.startswith("---\n") and "license: cc-by-4.0" in card
    commits = fake_hub.commits("datagen-test/e2e")
    assert commits[-1].title.startswith("datagen run e2e")  # one commit after the repo's initial one
    assert any(path.endswith(".parquet") for path in commits[-1].files)

    # `datagen status` tells where the run stands.
    buf = StringIO()
    with redirect_stdout(buf):
        assert main(["status", str(out)]) == 0
    text = buf.getvalue()
    assert "dialogues.hhh" in text and "done" in text and "moss_check" in text


def test_run_stops_at_once_when_the_teacher_is_unreachable(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps(
            {
                "id": "a",
                "text": "Write a haiku about rain.",
                "language": "en",
                "category": "writing",
                "plugins": [],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "seeds": {"path": str(seeds)},
                "teacher": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m"},
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"Error: cannot reach the teacher at http://127.0.0.1:{port}/v1" in err
    assert "datagen serve-teacher" in err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["expand"]["status"] == "failed"  # not done: a rerun will do it


def test_transient_failures_leave_the_stage_incomplete_and_a_rerun_finishes(fake_openai, tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"s{i}",
                    "text": f"Tell me about topic {i} please.",
                    "language": "en",
                    "category": "writing",
                    "plugins": [],
                }
            )
            + "\n"
            for i in range(4)
        ),
        encoding="utf-8",
    )
    fake_openai.set_responder(scripted_teacher)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "seeds": {"path": str(seeds)},
                "teacher": {
                    "base_url": fake_openai.base_url,
                    "model": fake_openai.model,
                    "max_attempts": 2,
                    "min_backoff": 0.01,
                    "max_backoff": 0.02,
                    "progress": False,
                    "concurrency": 2,
                },
                "expand": {"targets": {"default": 0}},
                "dialogues": {"hhh": {"options": {"turns": {"default": [2]}}}, "plugin": {"enabled": False}},
                "dataset": {"enabled": False},
            }
        )
    )
    out = tmp_path / "run"
    fake_openai.inject("500", times=6)  # three requests fail both tries
    assert main(["run", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "dialogues.hhh:" in err and "server_error" in err and "rerun the same command" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["dialogues.hhh"]["status"] == "incomplete"
    assert main(["run", str(config), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["dialogues.hhh"]["status"] == "done"
    assert _lines(out / "dialogues" / "hhh.jsonl") == 4
