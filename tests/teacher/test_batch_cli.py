"""`datagen batch status|cancel|export|import` on run directories, against the fake Batch API."""

from __future__ import annotations

import asyncio
import json
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import yaml

from datagen.cli import main
from datagen.teacher.batch import BatchEngine
from datagen.teacher.types import Request
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import scripted_teacher
from tests.teacher.test_batch_offline import vllm_run_batch

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.05, "settle_seconds": 0.01}


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def teacher_section(fake) -> dict:
    return {
        "base_url": fake.base_url,
        "model": fake.model,
        "api_key_env": "DATAGEN_TEST_TEACHER_KEY",
        "concurrency": 1000,
        "timeout": 5,
        "max_attempts": 4,
        "min_backoff": 0.01,
        "max_backoff": 0.1,
        "progress": False,
        "mode": "batch",
        "batch": FAST,
        "prices": {fake.model: {"input": 1.0, "output": 2.0}},
    }


def run_dir(tmp_path: Path, fake) -> Path:
    """A run directory whose manifest records the teacher settings, as `datagen run` writes it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(
        json.dumps({"stages": {}, "config": {"teacher": teacher_section(fake)}})
    )
    return run


def ask(fake, run: Path, texts: list[str], *, abandon: bool = False):
    """Ask in batch mode; with `abandon`, leave as soon as the batch is in flight (a stopped run)."""
    config = make_teacher_config_for(
        fake, mode="batch", concurrency=1000, batch=FAST, prices={fake.model: {"input": 1.0, "output": 2.0}}
    )

    async def go():
        async with BatchEngine(config, journal_path=run / "journal.sqlite") as engine:
            task = asyncio.gather(
                *(engine.complete(Request(messages=[{"role": "user", "content": t}])) for t in texts)
            )
            if not abandon:
                return await task
            while not fake.batches:
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(go())


def test_status_shows_batches_counts_and_cost(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.05) as fake:
        run = run_dir(tmp_path, fake)
        fake.fail_lines("", status=500, times=1)
        ask(fake, run, ["one", "two", "three"])
        rc, out, _ = run_cli("batch", "status", str(run))
        assert rc == 0
        assert "b000001      1 completed          3       2       1       0  batch_fake" in out
        assert "b000002      2 completed          1       1       0       0  batch_fake" in out
        assert "2 batch files, 0 in flight (0 lines)" in out and "calls 3 (ok 3, failed 0)" in out
        assert "cost so far $0.0000" in out and "batch: 3 calls" in out
        rc, out, _ = run_cli("batch", "status", str(run / "journal.sqlite"), "--json")
        info = json.loads(out)
        assert [b["status"] for b in info["batches"]] == ["completed", "completed"]
        assert info["ledger"]["ok"] == 3 and info["batches"][0]["provider_counts"]["failed"] == 1


def test_cancel_stops_the_batches_in_flight_and_a_rerun_collects_and_sends_the_rest(tmp_path):
    with FakeBatchOpenAI(completion_delay=30.0) as fake:
        run = run_dir(tmp_path, fake)
        ask(fake, run, ["alpha", "beta"], abandon=True)
        rc, out, _ = run_cli("batch", "status", str(run))
        assert "1 in flight (2 lines)" in out
        rc, out, err = run_cli("batch", "cancel", str(run))
        assert rc == 0 and out.strip() == "b000001: cancelled" and "rerun" in err
        assert fake.cancels == 1
        rc, out, _ = run_cli("batch", "cancel", str(run))  # the provider says it has ended already
        assert "b000001: not cancelled: HTTP 409" in out
        fake.completion_delay = 0.05
        results = ask(fake, run, ["alpha", "beta"])
        assert [r.text for r in results] == ["echo: alpha", "echo: beta"] and fake.duplicates() == []
        rc, out, _ = run_cli("batch", "status", str(run))
        assert "b000001      1 cancelled" in out and "b000002      1 completed" in out
        rc, out, _ = run_cli("batch", "cancel", str(run))
        assert out.strip() == "no batch in flight"


def test_a_run_dir_without_a_journal_or_teacher_is_one_error_line(tmp_path, capsys):
    assert main(["batch", "status", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"Error: {tmp_path / 'journal.sqlite'}: no teacher journal here"
    )
    (tmp_path / "journal.sqlite").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {}}))
    assert main(["batch", "cancel", str(tmp_path)]) == 1
    assert "no teacher settings in the run's manifest" in capsys.readouterr().err


SEEDS = [
    ("s1", "Write a short poem about the sea at night.", "writing", []),
    ("s2", "How do I reverse a list in Python without using reversed()?", "code", []),
    ("s3", "What is 23*47+12?", "tool", ["calculator"]),
]


def write_config(tmp_path: Path, fake, mode: str) -> Path:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "language": "en", "category": c, "plugins": p}) + "\n"
            for i, t, c, p in SEEDS
        )
    )
    teacher = {**teacher_section(fake), "mode": mode}
    config = {
        "name": "batch",
        "seed": 5,
        "teacher": teacher,
        "seeds": {"path": str(seeds)},
        "expand": {"targets": {"default": 1, "tool": 0}, "batch_size": 3, "parallel": 2},
        "dialogues": {
            "hhh": {"options": {"turns": {"default": [2]}}},
            "plugin": {"options": {"turns": {"default": [1, 2]}}},
        },
        "check": {"enabled": False},
        "dataset": {"enabled": False},
    }
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def final_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r["usage"].pop("cost")  # a batch line costs half: every other field is the same
    return sorted(rows, key=lambda r: r["id"])


@pytest.mark.slow
def test_export_and_import_round_by_round_finishes_the_run_as_online(tmp_path):
    with FakeBatchOpenAI() as fake:
        fake.set_responder(scripted_teacher)
        rc, _, err = run_cli(
            "run", str(write_config(tmp_path, fake, "online")), "--out", str(tmp_path / "online")
        )
        assert rc == 0, err
        config = write_config(tmp_path, fake, "batch")
        out = tmp_path / "offline"
        rounds = 0
        while True:
            rc, stdout, err = run_cli("batch", "export", str(config), "--out", str(out))
            assert rc == 0, err
            if "nothing left to export" in err:
                break
            rounds += 1
            for n, path in enumerate(stdout.split()):
                answers = tmp_path / f"answers-{rounds}-{n}.jsonl"
                vllm_run_batch(fake, Path(path), answers)
                rc, said, err = run_cli("batch", "import", str(out), str(answers))
                assert rc == 0 and " answers settled, 0 failed" in said, err
            assert rounds < 30
        assert (
            fake.requests > 0 and not fake.batches
        )  # online calls for the online run; no batch API for vLLM
        assert final_rows(out / "final.jsonl") == final_rows(tmp_path / "online" / "final.jsonl")
        rc, status, _ = run_cli("batch", "status", str(out))
        assert f"{rounds} batch files, 0 in flight" in status  # one file per round: one model


@pytest.mark.slow
def test_a_run_in_batch_mode_makes_the_online_run_s_data_through_the_batch_api(tmp_path):
    with FakeBatchOpenAI(completion_delay=0.05) as fake:
        fake.set_responder(scripted_teacher)
        rc, _, err = run_cli(
            "run", str(write_config(tmp_path, fake, "online")), "--out", str(tmp_path / "online")
        )
        assert rc == 0, err
        online_calls = fake.requests
        rc, out, err = run_cli(
            "run", str(write_config(tmp_path, fake, "batch")), "--out", str(tmp_path / "batch")
        )
        assert rc == 0, err
        assert fake.requests == online_calls  # not one online call: every call went in a batch
        assert sum(fake.submitted.values()) == online_calls and fake.duplicates() == []
        assert final_rows(tmp_path / "batch" / "final.jsonl") == final_rows(
            tmp_path / "online" / "final.jsonl"
        )
        manifest = json.loads((tmp_path / "batch" / "manifest.json").read_text())
        online = json.loads((tmp_path / "online" / "manifest.json").read_text())
        assert manifest["fingerprint"] == online["fingerprint"]  # the mode is how, not what
        assert manifest["cost"] == pytest.approx(
            online["cost"] / 2, abs=1e-6
        )  # the manifest rounds to 6 places
