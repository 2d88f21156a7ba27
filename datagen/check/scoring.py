"""What `check_files` scores rows with (its `scorer=` hook), and the settings a scored file records.

A `Scorer` loads the model once `check_files` has a row to score (`load`), scores the rows in
windows of `batch_size * 16` in input order (`score`), and is closed at the end. `LocalScorer`, the
default, loads the model in this process; the Ray executor's `ActorScorer`
(`run/executors/ray_check.py`) scores the same windows on GPU actors, so the scores are the same.

Settings sidecar: the model, context and token stream a file was scored with sit beside it
(`scored.jsonl.settings.json`); rows scored with other settings are never added to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from datagen.errors import InputError
from datagen.io import write_json_atomic
from datagen.model.tokenize import TruncationStats
from datagen.record import Conversation

__all__ = ["LocalScorer", "ScoreJob", "ScoreSettings", "Scorer", "check_settings", "write_settings"]


@dataclass(frozen=True, slots=True)
class ScoreJob:
    """What to load and how to score: the model as the user named it (folder, `.gguf`, alias or Hub
    id), the context asked for (None: the model's), dialogues per forward pass, the token stream
    (`auto`, `upstream`, `datagen`), and where to load it (None: the default device and dtype)."""

    model: str
    max_length: int | None
    batch_size: int
    tokenization: str
    device: str | None = None
    dtype: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreSettings:
    """What a loaded scorer scores with: the context in tokens and the token stream it resolved to."""

    max_length: int
    tokenization: str


class Scorer(Protocol):
    """Scores rows for `check_files`. `load` is called once, only when there are rows to score;
    `close` always follows it."""

    def load(self, job: ScoreJob) -> ScoreSettings:
        """Load the model for `job`; a `max_length` beyond the model's context is a ConfigError."""
        ...

    def score(self, rows: Iterable[Conversation], stats: TruncationStats) -> Iterator[Conversation]:
        """The rows with `scores.moss_*` set, in input order, each window of `batch_size * 16` rows
        sorted and batched together (as `score_conversations` does); truncations add to `stats`."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


class LocalScorer:
    """The model in this process (`load_model`, then `score_conversations`)."""

    def __init__(self) -> None:
        self._loaded: Any = None
        self._job: ScoreJob | None = None
        self._limit = 0

    def load(self, job: ScoreJob) -> ScoreSettings:
        """Load the model for `job` (see `Scorer.load`)."""
        from datagen.model.loading import load_model, resolve_model
        from datagen.model.score import resolve_max_length

        self._loaded = load_model(
            resolve_model(job.model), device=job.device, dtype=job.dtype, tokenization=job.tokenization
        )
        self._job = job
        self._limit = resolve_max_length(job.max_length, self._loaded.context_length)
        return ScoreSettings(self._limit, self._loaded.tokenization)

    def score(self, rows: Iterable[Conversation], stats: TruncationStats) -> Iterator[Conversation]:
        """Score `rows` with the loaded model (see `Scorer.score`)."""
        from datagen.model.score import score_conversations

        assert self._job is not None, "LocalScorer.score before load"
        return score_conversations(
            rows, self._loaded, batch_size=self._job.batch_size, max_length=self._limit, stats=stats
        )

    def close(self) -> None:
        """Drop the model."""
        self._loaded = None


def settings_path(out: Path) -> Path:
    """The settings sidecar of a scored file."""
    return out.with_name(out.name + ".settings.json")


def check_settings(out: Path, model: str, max_length: int | None, tokenization: str | None = None) -> None:
    """Refuse to add rows scored with another model, context or token stream to an existing output."""
    path = settings_path(out)
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = []
    if before.get("model") != model:
        changed.append(f"model {before.get('model')!r}")
    if max_length is not None and before.get("max_length") not in (None, max_length):
        changed.append(f"max_length {before.get('max_length')}")
    # files scored before the setting existed used datagen's token stream
    if tokenization is not None and before.get("tokenization", "datagen") != tokenization:
        changed.append(f"tokenization {before.get('tokenization', 'datagen')!r}")
    if changed:
        raise InputError(
            f"already holds rows scored with other settings ({', '.join(changed)}); "
            "use another --out or delete it",
            path=str(out),
        )


def write_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings `out` is scored with (model, max_length, tokenization)."""
    write_json_atomic(settings_path(out), settings, ensure_ascii=True, newline=False)
