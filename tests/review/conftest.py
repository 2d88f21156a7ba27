"""A small real run for the review tests, made once per session: `datagen run` against the fake
teacher (scripted replies), with a tiny local model for the check, so the run directory has kept,
rejected (filter and check) and failed rows, plugin dialogues with real tool results, and a
journal. One seed carries a `<script>` tag, one makes the teacher answer nothing (a failed dialogue).

`serve(run_dir)` starts `python -m datagen.review` on a free 127.0.0.1 port and yields its URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.openai_server import FakeOpenAI, last_user_text
from tests.generate.scripted_teacher import role_of, scripted_teacher
from tests.run_files import write_seeds

REPO = Path(__file__).resolve().parents[2]
XSS = "<script>alert('pwned')</script>"
SILENT = "Do you remember what we talked about yesterday?"

SEEDS = [
    ("s-en-writing-1", "Write a short poem about the sea at night.", "en", "writing", []),
    ("s-en-writing-2", "Draft a polite email asking my landlord to fix the heating.", "en", "writing", []),
    ("s-en-code-1", "How do I reverse a list in Python without using reversed()?", "en", "code", []),
    ("s-en-code-xss", f"What does {XSS} do when a page shows it?", "en", "code", []),
    ("s-zh-writing-1", "写一段关于秋天的散文，两百字左右。", "zh", "writing", []),
    ("s-zh-advice-1", "我想提高英语口语，有什么好方法？", "zh", "brainstorming", []),
    ("s-en-honest-1", SILENT, "en", "honest", []),
    ("s-en-calc-1", "What is 23*47+12?", "en", "tool", ["calculator"]),
    ("s-en-solve-1", "Solve the system x+y=10 and x-y=2.", "en", "tool", ["solver"]),
    ("s-zh-search-1", "长城有多长？", "zh", "tool", ["search"]),
    ("s-en-img-1", "Draw a cat sitting on a red sofa.", "en", "tool", ["text2image"]),
]


def _teacher(request: dict[str, Any]) -> Any:
    if role_of(request) == "assistant" and SILENT in last_user_text(request):
        return ""  # an empty reply, every time: that dialogue fails for good
    return scripted_teacher(request)


@pytest.fixture(scope="session")
def review_run(tmp_path_factory) -> Path:
    """The run directory (treat it as read-only; copy it with `run_copy` to record decisions)."""
    from datagen.cli import main
    from datagen.formats.moss import build_meta_instruction
    from tests.moss.conftest import build_tiny_moss

    tmp = tmp_path_factory.mktemp("review-run")
    corpus = [
        build_meta_instruction(p, bool(p)) for p in ([], ["search", "calculator", "solver", "text2image"])
    ]
    corpus += ["<|Human|>: <|Inner Thoughts|>: <|Commands|>: <|Results|>: <|MOSS|>: None"] + [
        s[1] for s in SEEDS
    ]
    build_tiny_moss(tmp / "tiny-moss", corpus * 3)
    seeds = write_seeds(tmp / "seeds.jsonl", SEEDS)
    fake = FakeOpenAI().start()
    fake.set_responder(_teacher)
    try:
        config = {
            "name": "review-e2e",
            "seed": 3,
            "teacher": {
                "base_url": fake.base_url,
                "model": fake.model,
                "concurrency": 4,
                "progress": False,
                "min_backoff": 0.01,
                "max_backoff": 0.05,
                "prices": {fake.model: {"input": 1.0, "output": 2.0}},
            },
            "seeds": {"path": str(seeds)},
            "expand": {"targets": {"default": 2, "tool": 0}, "batch_size": 4, "parallel": 2},
            "dialogues": {
                "hhh": {"options": {"turns": {"default": [2]}}},
                "plugin": {"options": {"turns": {"default": [1, 2]}}},
            },
            "check": {
                "enabled": True,
                "model": str(tmp / "tiny-moss"),
                "batch_size": 8,
                "max_length": 2048,
                "percentile": 80,
            },
            "dataset": {"enabled": False},
        }
        path = tmp / "run.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        assert main(["run", str(path), "--out", str(tmp / "run"), "--no-progress"]) == 0
    finally:
        fake.stop()
    return tmp / "run"


@pytest.fixture
def run_copy(review_run, tmp_path) -> Path:
    """A private copy of the run (modification times kept, so its review index stays valid)."""
    return Path(shutil.copytree(review_run, tmp_path / "run", copy_function=shutil.copy2))


@contextmanager
def serve(run_dir: Path, *args: str) -> Iterator[str]:
    """`python -m datagen.review RUN_DIR --port 0` in a subprocess; yields its base URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DATAGEN_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "datagen.review", str(run_dir), "--port", "0", "--reviewer", "tester", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "http://" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"the review server stopped: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "the review server did not start"
        yield line.split(" at ", 1)[1].split()[0].rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
