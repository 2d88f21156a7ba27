"""The child process of the kill test: N teacher calls, each result appended to a JSONL file.

    python -m tests.teacher.kill_child BASE_URL JOURNAL OUT N CONCURRENCY

It resumes like a real stage: rows already in OUT are skipped (a torn last line is dropped), the
rest go through the engine, whose journal answers the calls finished before a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from datagen.teacher.config import TeacherConfig
from datagen.teacher.engine import TeacherEngine
from datagen.teacher.types import Request


def done_tags(out: Path) -> set[int]:
    """Tags already written; rewrites OUT without a torn last line."""
    if not out.exists():
        return set()
    good, tags = [], set()
    for line in out.read_bytes().splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            tags.add(json.loads(line)["tag"])
        except ValueError:
            break
        good.append(line)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(b"".join(good))
    os.replace(tmp, out)
    return tags


async def main(base_url: str, journal: Path, out: Path, n: int, concurrency: int) -> None:
    config = TeacherConfig(
        base_url=base_url,
        model="fake-teacher",
        concurrency=concurrency,
        timeout=10.0,
        max_attempts=4,
        min_backoff=0.01,
        max_backoff=0.1,
        progress=False,
    )
    skip = done_tags(out)
    requests = [
        Request(messages=[{"role": "user", "content": f"kill test {i}"}], tag=i)
        for i in range(n)
        if i not in skip
    ]
    async with TeacherEngine(config, journal_path=journal) as engine:
        with open(out, "a", encoding="utf-8") as fh:
            async for result in engine.map(requests):
                if result.ok:
                    fh.write(json.dumps({"tag": result.tag, "text": result.text}) + "\n")
                    fh.flush()
        print(
            json.dumps(
                {
                    "skipped": len(skip),
                    "cached": engine.stats.cached,
                    "sent": engine.stats.sent,
                    "failed": engine.stats.failed,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    url, journal, out, n, conc = sys.argv[1:6]
    asyncio.run(main(url, Path(journal), Path(out), int(n), int(conc)))
