"""Builders the whole-run tests share: a seed file from tuples, and the teacher section that points
a run at the fake OpenAI server with fast retries."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_seeds(path: Path, seeds: Iterable[tuple[str, str, str, str, list[str]]]) -> Path:
    """Write `(id, text, language, category, plugins)` tuples as a seed JSONL file; returns `path`."""
    path.write_text(
        "".join(
            json.dumps(
                {"id": i, "text": t, "language": lang, "category": c, "plugins": p}, ensure_ascii=False
            )
            + "\n"
            for i, t, lang, c, p in seeds
        ),
        encoding="utf-8",
    )
    return path


def fake_teacher(fake: Any, **overrides: Any) -> dict[str, Any]:
    """A `teacher:` section for the fake server `fake`: one call at a time, two tries with short
    backoffs, no progress bar; `overrides` replace or add keys."""
    return {
        "base_url": fake.base_url,
        "model": fake.model,
        "concurrency": 1,
        "api_key_env": "DATAGEN_TEST_TEACHER_KEY",
        "timeout": 5,
        "max_attempts": 2,
        "min_backoff": 0.01,
        "max_backoff": 0.05,
        "progress": False,
        **overrides,
    }
