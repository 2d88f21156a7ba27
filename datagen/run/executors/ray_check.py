"""The check stage's scoring on Ray: actors that each ask for a GPU (`num_gpus`), load the model once,
and score the windows of rows the driver streams to them, in order, into `checked/scored.jsonl`.
The stage itself then runs as it always does: it finds every row scored (check resumes by id), so
it loads no model and only writes the report and the kept/rejected split.

The rows are cut into the windows the local run sorts and batches together (`batch_size * 16`
rows of the rows still to score, in input order), so each batch, and so each score, is the one the
local executor computes; the output lines come back in input order too.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.ray_support import import_ray
from datagen.record import Conversation

#: Windows in flight per actor: one scoring, one queued, so a GPU never waits for the driver.
_IN_FLIGHT_PER_ACTOR = 2


class Scorer:
    """One model on one GPU (a Ray actor): `score(rows)` is `score_conversations` over one window."""

    def __init__(self, model: str, tokenization: str, max_length: int | None, batch_size: int):
        from datagen.model.loading import load_model, resolve_model
        from datagen.model.score import resolve_max_length

        self.loaded = load_model(resolve_model(model), tokenization=tokenization)
        self.limit = resolve_max_length(max_length, self.loaded.context_length)
        self.batch_size = batch_size

    def settings(self) -> tuple[int, str, str]:
        """(context limit, tokenization) as loaded, what the scored file's settings record, and the
        Ray node this actor was placed on."""
        return self.limit, self.loaded.tokenization, import_ray().get_runtime_context().get_node_id()

    def score(self, rows: list[Conversation]) -> tuple[list[Conversation], dict[str, int]]:
        from datagen.model.score import score_conversations
        from datagen.model.tokenize import TruncationStats

        stats = TruncationStats()
        scored = list(
            score_conversations(
                rows,
                self.loaded,
                batch_size=self.batch_size,
                max_length=self.limit,
                window=max(1, len(rows)),
                stats=stats,
            )
        )
        return scored, stats.to_dict()


def _todo(inp: Path, out: Path, max_rows: int | None) -> Iterator[Conversation]:
    """The rows `check_files` would score, in its order: the first `max_rows`, first of each id,
    well-formed, not in the output yet."""
    from datagen.check.files import scored_ids
    from datagen.formats.reader import read_conversations
    from datagen.formats.validate import format_defect

    done = scored_ids(out)
    seen: set[str] = set()
    for i, conv in enumerate(read_conversations([inp], torn_tail="skip")):
        if max_rows is not None and i >= max_rows:
            return
        if conv.id in seen:
            continue
        seen.add(conv.id)
        if conv.id not in done and format_defect(conv) is None:
            yield conv


def _windows(rows: Iterator[Conversation], size: int) -> Iterator[list[Conversation]]:
    window: list[Conversation] = []
    for row in rows:
        window.append(row)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def score_on_actors(
    inp: Path,
    out: Path,
    *,
    model: str,
    batch_size: int,
    max_length: int | None,
    max_rows: int | None,
    tokenization: str,
    actors: int,
    gpus_per_actor: float,
) -> dict[str, Any]:
    """Score what is left of `inp` into `out` on `actors` actors of `gpus_per_actor` GPUs each.
    Returns {"scored_now": n, "truncation": {...}, "nodes": [node ids of the actors], "settings":
    {...}} (nothing to score: no actor is started)."""
    from datagen.check.files import _check_settings, _write_settings
    from datagen.io import AppendWriter
    from datagen.model.loading import MODEL_ALIASES, resolve_model
    from datagen.model.tokenize import TruncationStats

    ray = import_ray()
    truncation = TruncationStats()
    rows = _todo(inp, out, max_rows)
    first = next(rows, None)
    if first is None:
        return {"scored_now": 0, "truncation": truncation.to_dict(), "nodes": []}
    model_id = str(model) if str(model) in MODEL_ALIASES else resolve_model(model).display
    remote = ray.remote(Scorer).options(num_gpus=gpus_per_actor, num_cpus=0 if gpus_per_actor else 1)
    pool = [remote.remote(str(model), tokenization, max_length, batch_size) for _ in range(max(1, actors))]
    try:
        placed = ray.get([actor.settings.remote() for actor in pool])
        limit, tok = placed[0][:2]
        if out.exists() and out.stat().st_size:
            _check_settings(out, model_id, limit, tok)
        _write_settings(out, {"model": model_id, "max_length": limit, "tokenization": tok})
        pending: deque[Any] = deque()
        scored = 0
        windows = _windows(_chain(first, rows), batch_size * 16)  # score_conversations' own window
        with AppendWriter(out) as writer:
            for i, window in enumerate(windows):
                pending.append(pool[i % len(pool)].score.remote(window))
                while len(pending) >= _IN_FLIGHT_PER_ACTOR * len(pool):
                    scored += _write(ray.get(pending.popleft()), writer, truncation)
            while pending:
                scored += _write(ray.get(pending.popleft()), writer, truncation)
    finally:
        for actor in pool:
            ray.kill(actor)
    return {
        "scored_now": scored,
        "truncation": truncation.to_dict(),
        "nodes": [p[2] for p in placed],
        "settings": {"model": model_id, "max_length": limit, "tokenization": tok},
    }


def _chain(first: Conversation, rest: Iterator[Conversation]) -> Iterator[Conversation]:
    yield first
    yield from rest


def _write(result: tuple[list[Conversation], dict[str, int]], writer: Any, truncation: Any) -> int:
    from datagen.model.tokenize import TruncationStats

    rows, stats = result
    for conv in rows:
        writer.write(conv)
    truncation.merge(TruncationStats(**stats))
    return len(rows)


def settle_report(info: dict[str, Any], report_path: Path, scored: dict[str, Any]) -> None:
    """The stage ran after the actors scored: it saw every row as resumed. Put back what this run
    scored, in the manifest info and in report.json, as one process would have recorded it."""
    n = scored["scored_now"]
    if not n:
        return  # nothing scored on the actors: the stage's own record is the local one
    # the settings as a run that loaded the model records them (one that scored nothing has less)
    fixes = {
        "scored_now": n,
        "resumed": info.get("resumed", 0) - n,
        "truncation_this_run": scored["truncation"],
        "settings": scored["settings"],
    }
    info.update(fixes)
    if report_path.exists():
        from datagen.io import write_json_atomic

        report = json.loads(report_path.read_text(encoding="utf-8"))
        report.update(fixes)
        write_json_atomic(report_path, report, newline=False)


def cluster_gpus() -> int:
    """GPUs the Ray cluster has (0 without any)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


__all__ = ["Scorer", "cluster_gpus", "score_on_actors", "settle_report"]
