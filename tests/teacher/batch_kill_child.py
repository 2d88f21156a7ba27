"""The child process of the batch kill test: HHH dialogues in batch mode, resumable.

    python -m tests.teacher.batch_kill_child BASE_URL RUN_DIR N

A rerun continues like a real stage: dialogues already in RUN_DIR/hhh.jsonl are skipped, calls the
journal answers are not asked again, and batches the killed run left in flight are polled again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datagen.generate.common import PromptRow
from datagen.generate.dialogues import generate_dialogues
from datagen.teacher.batch import BatchEngine
from datagen.teacher.config import TeacherConfig


def main(base_url: str, run: Path, n: int) -> None:
    config = TeacherConfig(
        base_url=base_url,
        model="fake-teacher",
        concurrency=1000,
        timeout=10.0,
        max_attempts=4,
        min_backoff=0.01,
        max_backoff=0.1,
        progress=False,
        mode="batch",
        batch={"poll_interval": 0.02, "max_poll_interval": 0.1, "settle_seconds": 0.02},
    )
    prompts = [
        PromptRow(id=f"k{i}", text=f"Tell me about topic number {i}.", language="en", category="writing")
        for i in range(n)
    ]
    stats = generate_dialogues(
        prompts,
        "hhh",
        {"turns": "2-3", "seed": 1},
        config,
        run / "hhh.jsonl",
        run / "journal.sqlite",
        engine_factory=BatchEngine,
        progress=False,
    )
    print(
        json.dumps(
            {
                "made": stats.counts["made"],
                "skipped": stats.counts["skipped_done"],
                "calls": stats.calls,
                "cached": stats.cached_calls,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
