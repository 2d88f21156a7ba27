"""`datagen run --executor ray` against the test cluster: the dialogues come out as one process makes
them, with the same counts, funnel and teacher journal; a driver killed mid-stage is rerun without
redoing the shards that had finished; without ray installed, one Error line names the extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from datagen.run.config import load_config
from datagen.run.executors.ray import completion_path
from datagen.run.pipeline import stages_for
from datagen.run.runner import Runner
from datagen.teacher.journal import Journal
from tests.generate.scripted_teacher import EXPAND, scripted_teacher
from tests.pipeline.test_golden import SEEDS
from tests.run_files import fake_teacher, write_seeds

#: A seed of rank 1 of 2 in dialogues.hhh (the odd places of the hhh prompts, seeds first).
RANK1_SEED = "Draft a polite email asking my landlord to fix the heating."


def config_file(tmp_path, fake, **teacher):
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "on-ray",
                "seed": 3,
                "teacher": fake_teacher(fake, **{"concurrency": 2, "timeout": 60, **teacher}),
                "seeds": {"path": str(seeds)},
                "expand": {"targets": {"default": 1, "tool": 0}, "batch_size": 4, "parallel": 2},
                "dialogues": {
                    "hhh": {"options": {"turns": {"default": [1]}, "concurrency": 1}},
                    "plugin": {"options": {"turns": {"default": [1]}, "concurrency": 1}},
                },
                "filters": {"workers": 1},
                "dataset": {"enabled": False},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return path


def datagen_run(path, out, address, **kw) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "datagen",
        "run",
        str(path),
        "--out",
        str(out),
        "--executor",
        "ray",
        "--address",
        address,
        "--no-progress",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def rows(path):
    return sorted(
        (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()), key=lambda r: r["id"]
    )


def steps(run_dir):
    return [
        {k: v for k, v in s.items() if k != "seconds"}
        for s in json.loads((run_dir / "funnel.json").read_text(encoding="utf-8"))["steps"]
    ]


def wait_dead(pid: int, timeout: float = 60) -> None:
    """Until Ray has seen the killed driver's job end (it then stops that job's workers)."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [j for j in ray._private.state.jobs() if j.get("DriverPid") == pid]
        if jobs and all(j["IsDead"] for j in jobs):
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise AssertionError("Ray never saw the killed driver's job end")


@pytest.mark.slow  # a local run and two driver processes
def test_a_killed_driver_resumes_without_redoing_finished_shards(ray_cluster, fake_openai, tmp_path):
    release = threading.Event()

    def teacher(request):
        text = json.dumps(request, ensure_ascii=False)
        if RANK1_SEED in text and EXPAND not in text:  # expansion shows the seeds too: not that
            release.wait(120)  # rank 1 of dialogues.hhh hangs until the driver is killed
        return scripted_teacher(request)

    fake_openai.set_responder(scripted_teacher)
    path = config_file(tmp_path, fake_openai, rpm=600, rate_window=1.0)
    local = tmp_path / "local"
    Runner(load_config(path), local).run(stages_for(load_config(path), local))
    local_requests = fake_openai.requests

    fake_openai.reset()
    fake_openai.set_responder(teacher)
    out = tmp_path / "ray"
    driver = datagen_run(path, out, ray_cluster.address)
    rank0 = completion_path(out, "dialogues.hhh", 0)
    deadline = time.monotonic() + 240
    while not rank0.exists() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rank0.exists(), (
        driver.communicate()[1][-3000:] if driver.poll() is not None else "rank 0 never finished"
    )
    assert not completion_path(out, "dialogues.hhh", 1).exists()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_dead(driver.pid)
    release.set()
    done_before = {
        p: p.stat().st_mtime_ns
        for p in (
            rank0,
            out / "stats" / "dialogues.hhh" / "00000.json",
            out / "dialogues" / "hhh.00000.jsonl",
        )
    }

    rerun = datagen_run(path, out, ray_cluster.address)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert "dialogues.hhh: 1 of 2 shards finished earlier, not run again" in err
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before

    # the same dialogues, counts and funnel as one process, every call in the merged journal
    assert [r["id"] for r in rows(local / "final.jsonl")] == [r["id"] for r in rows(out / "final.jsonl")]
    assert [r["turns"] for r in rows(local / "final.jsonl")] == [
        r["turns"] for r in rows(out / "final.jsonl")
    ]
    assert steps(local) == steps(out)
    m_local = json.loads((local / "manifest.json").read_text())["stages"]
    m_ray = json.loads((out / "manifest.json").read_text())["stages"]
    for name in ("dialogues.hhh", "dialogues.plugin", "filter", "final"):
        for key in ("count", "prompts", "made", "in", "status"):
            assert m_local[name].get(key) == m_ray[name].get(key), (name, key)
    with Journal(local / "journal.sqlite") as a, Journal(out / "journal.sqlite") as b:
        assert {e.key for e in a.entries("ok")} == {e.key for e in b.entries("ok")}
    assert (
        json.loads((out / "manifest.json").read_text())["teacher_calls"]["ok"]
        == json.loads((local / "manifest.json").read_text())["teacher_calls"]["ok"]
    )
    # nothing was asked twice but the one call the kill cut off
    assert fake_openai.requests <= local_requests + 1


def test_without_ray_installed_the_executor_is_one_error_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "datagen", "run", str(tmp_path / "run.yaml"), "--executor", "ray"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: this needs ray: run `pip install 'datagen[ray]'` (or `.venv/bin/pip install -e '.[ray]'` in a checkout)"
    ]
