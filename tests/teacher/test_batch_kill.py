"""A batch run killed while its batches are in flight, then rerun: the same batches are polled again,
no custom_id is submitted twice, nothing is paid twice and every dialogue is made once. Also the
two states a kill can leave between the steps of a submission (file uploaded, batch maybe created)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai import OpenAI

from datagen.teacher import batch_io as bio
from datagen.teacher.batch import BatchEngine
from datagen.teacher.journal import Journal
from datagen.teacher.settle import prepare
from datagen.teacher.types import Request
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import scripted_teacher

REPO = Path(__file__).resolve().parents[2]
N = 12


def child(fake, run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.teacher.batch_kill_child", fake.base_url, str(run), str(N)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def in_progress(fake) -> int:
    with fake._batch_lock:
        now = fake.now()
        return sum(1 for b in fake.batches.values() if fake.status(b, now) in ("validating", "in_progress"))


def query(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_with_batches_in_flight_then_rerun(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.6) as fake:
        fake.set_responder(scripted_teacher)
        proc = child(fake, tmp_path)
        deadline = time.monotonic() + 60
        while not (len(fake.batches) >= 2 and in_progress(fake)):  # killed in round 2 or later, mid-poll
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child made no batch"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        batches_at_kill = len(fake.batches)
        journal = tmp_path / "journal.sqlite"
        [(open_at_kill,)] = query(journal, "SELECT count(*) FROM batches WHERE settled = 0")
        assert open_at_kill >= 1  # its batch ids were journaled before it waited

        proc = child(fake, tmp_path)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["made"] + summary["skipped"] == N

        assert fake.duplicates() == []  # no custom_id went out twice
        ids = Counter(json.loads(line)["id"] for line in (tmp_path / "hhh.jsonl").read_text().splitlines())
        assert sorted(ids) == sorted(f"hhh-k{i}" for i in range(N)) and set(ids.values()) == {1}
        # every line submitted settled once into one journal row: nothing paid twice
        assert query(journal, "SELECT count(*), sum(settled) FROM batch_lines") == [
            (sum(fake.submitted.values()),) * 2
        ]
        [(keys, attempts)] = query(journal, "SELECT count(*), sum(attempts) FROM calls")
        assert keys == attempts == sum(fake.submitted.values())
        assert query(journal, "SELECT count(*) FROM batches WHERE settled = 0") == [(0,)]
        assert len(fake.batches) > batches_at_kill  # the rerun went on with new rounds
        print(
            f"{batches_at_kill} batches at the kill ({open_at_kill} in flight), {len(fake.batches)} in all, "
            f"{sum(fake.submitted.values())} lines, rerun: {summary}"
        )


REQUESTS = [Request(messages=[{"role": "user", "content": f"question {i}"}]) for i in range(3)]


def half_submitted(fake, journal: Path, *, created: bool) -> str:
    """The journal and the server as a run killed after its upload (and, with `created`, after its
    create call reached the server but before the batch id was journaled) leaves them."""
    config = make_teacher_config_for(fake, mode="batch")
    preps = [prepare(config, r) for r in REQUESTS]
    cids = [bio.custom_id("b000001", p.key) for p in preps]
    data = b"".join(bio.input_line(cid, p.body(r)) for cid, p, r in zip(cids, preps, REQUESTS, strict=True))
    with OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as client:
        file_id = client.files.create(file=("b000001.jsonl", data), purpose="batch").id
        if created:
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )

    async def write():
        with Journal(journal) as j:
            await j.execute(
                bio.insert_batch("b000001", 1, config.model, "api", len(cids), len(data)),
                *(
                    bio.insert_line(c, p.key, "b000001", p.canonical, True)
                    for c, p in zip(cids, preps, strict=True)
                ),
                bio.update_batch("b000001", status="uploaded", file_id=file_id),
            )

    asyncio.run(write())
    return file_id


@pytest.mark.parametrize("created", [False, True], ids=["uploaded", "created-not-journaled"])
def test_a_kill_between_the_steps_of_a_submission_pays_nothing_twice(tmp_path, created):
    with FakeBatchOpenAI(completion_delay=0.05) as fake:
        file_id = half_submitted(fake, tmp_path / "j.sqlite", created=created)
        config = make_teacher_config_for(
            fake,
            mode="batch",
            concurrency=100,
            batch={"poll_interval": 0.01, "max_poll_interval": 0.05, "settle_seconds": 0.01},
        )

        async def rerun():
            async with BatchEngine(config, journal_path=tmp_path / "j.sqlite") as engine:
                return await asyncio.gather(*(engine.complete(r) for r in REQUESTS)), engine

        results, engine = asyncio.run(rerun())
        assert [r.text for r in results] == [f"echo: question {i}" for i in range(3)]
        assert all(r.ok and not r.cached for r in results)
        assert fake.uploads == 1 and len(fake.batches) == 1  # the same file, one batch: found or made once
        assert next(iter(fake.batches.values())).input_file_id == file_id
        assert fake.duplicates() == [] and engine.files == 0
        assert query(tmp_path / "j.sqlite", "SELECT status, settled FROM batches") == [("completed", 1)]
