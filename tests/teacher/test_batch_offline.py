"""Offline batch files for a self-hosted teacher: a round is written as the Batch API's JSONL, a
stand-in for `vllm run-batch` answers it (both output shapes vLLM has written), and the import
settles it; round after round the dialogues come out as they do online."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from datagen.errors import DatagenError, InputError
from datagen.generate.common import PromptRow
from datagen.generate.config import DialogueConfig
from datagen.generate.dialogues import generate_dialogues
from datagen.teacher.batch import BatchEngine, BatchExported
from datagen.teacher.batch_offline import batch_status, import_output
from datagen.teacher.types import Request
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import scripted_teacher

FILES = {"transport": "files", "settle_seconds": 0.01, "linger_seconds": 5.0}


def files_config(fake, **kw):
    return make_teacher_config_for(fake, mode="batch", concurrency=1000, batch=FILES, **kw)


def vllm_run_batch(
    fake,
    src: Path,
    dst: Path,
    *,
    responder=scripted_teacher,
    old_format: bool = False,
    refuse: set[str] = frozenset(),
) -> None:
    """What `vllm run-batch -i src -o dst` writes: one line per input line, in input order, a
    failed request inline (status 400, no body, the message in `error`)."""
    out = []
    for n, raw in enumerate(src.read_text(encoding="utf-8").splitlines()):
        line = json.loads(raw)
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        cid = line["custom_id"]
        if any(word in json.dumps(line["body"]) for word in refuse):
            out.append(
                {
                    "id": f"vllm-{n}",
                    "custom_id": cid,
                    "error": "This model's maximum context length is 2048",
                    "response": {"status_code": 400, "request_id": f"vllm-batch-{n}", "body": None},
                }
            )
            continue
        body = fake.completion_body(line["body"], responder(line["body"]))
        response = body if old_format else {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": body}
        out.append({"id": f"vllm-{n}", "custom_id": cid, "response": response, "error": None})
    dst.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in out), encoding="utf-8")


def records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r["usage"].pop("cost")  # batch lines cost half: everything else must be the same
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture
def fake():
    server = FakeBatchOpenAI().start()
    server.set_responder(scripted_teacher)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["hhh", "plugin"])
def test_round_by_round_export_and_import_makes_the_online_dialogues(fake, tmp_path, kind):
    if kind == "hhh":
        prompts = [
            PromptRow(id="h1", text="How do volcanoes form?", language="en", category="writing"),
            PromptRow(id="h2", text="Why is the sky blue?", language="en", category="writing"),
        ]
    else:
        prompts = [
            PromptRow(
                id="p1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator"]
            ),
            PromptRow(
                id="p2", text="How tall is Mount Everest?", language="en", category="tool", plugins=["search"]
            ),
        ]
    options = {"turns": "2-3", "seed": 3}
    online = generate_dialogues(
        prompts,
        kind,
        DialogueConfig.from_dict(options, kind=kind),
        make_teacher_config_for(fake),
        tmp_path / "online.jsonl",
        tmp_path / "online.sqlite",
    )
    assert online.counts["made"] == 2

    run = tmp_path / "run"
    run.mkdir()
    rounds = 0
    while True:
        try:
            stats = generate_dialogues(
                prompts,
                kind,
                DialogueConfig.from_dict(options, kind=kind),
                files_config(fake),
                run / "out.jsonl",
                run / "journal.sqlite",
                engine_factory=BatchEngine,
            )
            break
        except BatchExported as exc:
            rounds += 1
            [path] = exc.paths
            assert path.parent == run / "batches" and "datagen batch import" in str(exc)
            vllm_run_batch(fake, path, tmp_path / f"out{rounds}.jsonl", old_format=rounds % 2 == 0)
            counts = import_output(
                files_config(fake), run / "journal.sqlite", tmp_path / f"out{rounds}.jsonl"
            )
            assert counts["ok"] == len(path.read_text().splitlines()) and counts["batches"] == 1
        assert rounds < 20
    assert stats.calls == stats.cached_calls  # the last run's calls were all answered by imports
    assert len((run / "out.jsonl").read_text().splitlines()) == 2
    assert records(run / "out.jsonl") == records(tmp_path / "online.jsonl")
    calls = [json.loads(line)["usage"]["calls"] for line in (run / "out.jsonl").read_text().splitlines()]
    assert rounds == max(calls)  # one round per call of the longest dialogue
    info = batch_status(run / "journal.sqlite")
    assert {b["status"] for b in info["batches"]} == {"imported"} and info["by_mode"]["batch"][
        "calls"
    ] == sum(calls)


def test_import_settles_answers_refusals_and_missing_lines_and_never_twice(fake, tmp_path):
    journal = tmp_path / "journal.sqlite"
    texts = ["short question", "refuse this one", "lost in the output"]

    async def ask_all():
        async with BatchEngine(files_config(fake), journal_path=journal) as engine:
            return await asyncio.gather(
                *(engine.complete(Request(messages=[{"role": "user", "content": t}])) for t in texts),
                return_exceptions=True,
            )

    results = asyncio.run(ask_all())
    assert all(isinstance(r, BatchExported) for r in results)
    [path] = results[0].paths
    assert len(path.read_text().splitlines()) == 3
    vllm_run_batch(
        fake, path, tmp_path / "out.jsonl", responder=lambda body: "an answer", refuse={"refuse this"}
    )
    lost = next(json.loads(x)["custom_id"] for x in path.read_text().splitlines() if "lost in the" in x)
    kept = [x for x in (tmp_path / "out.jsonl").read_text().splitlines() if lost not in x]  # never came back
    unknown = json.dumps(
        {"custom_id": "b999999-feed", "response": None, "error": {"code": "x", "message": "y"}}
    )
    (tmp_path / "out.jsonl").write_text("\n".join([*kept, unknown]) + "\n")

    counts = import_output(files_config(fake), journal, tmp_path / "out.jsonl")
    assert counts == {
        "ok": 1,
        "failed_bad_request": 1,
        "failed_server_error": 1,
        "unknown": 1,
        "skipped": 0,
        "batches": 1,
    }
    again = import_output(files_config(fake), journal, tmp_path / "out.jsonl")
    assert again["skipped"] == 2 and "ok" not in again  # settled once, paid once

    # the next round: the answer comes from the journal, the refusal is handed to the stage (once,
    # not asked again), the lost line is written again under a new custom_id
    results = asyncio.run(ask_all())
    assert results[0].ok and results[0].cached and results[0].text == "an answer"
    assert (results[1].ok, results[1].error) == (False, "bad_request")
    assert "maximum context length" in results[1].detail
    assert isinstance(results[2], BatchExported)
    [path2] = results[2].paths
    [line] = [json.loads(x) for x in path2.read_text().splitlines()]
    assert "lost in the output" in json.dumps(line["body"]) and line["custom_id"].startswith("b000002-")

    # a round written and not imported stops the next run with what to do
    with pytest.raises(DatagenError, match="was exported and its results not imported yet"):
        asyncio.run(ask_all())


def test_a_bad_output_file_is_named_with_its_line(fake, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"custom_id": "a", "response": null}\nnot json\n')
    with pytest.raises(InputError) as info:
        import_output(files_config(fake), tmp_path / "journal.sqlite", out)
    assert info.value.line == 2 and str(out) in str(info.value)
    with pytest.raises(InputError, match="no such batch output file"):
        import_output(files_config(fake), tmp_path / "journal.sqlite", tmp_path / "missing.jsonl")


def test_a_round_bigger_than_a_file_is_exported_as_several_files(fake, tmp_path):
    config = make_teacher_config_for(fake, mode="batch", concurrency=1000, batch={**FILES, "max_lines": 2})

    async def ask_all():
        async with BatchEngine(config, journal_path=tmp_path / "journal.sqlite") as engine:
            return await asyncio.gather(
                *(
                    engine.complete(Request(messages=[{"role": "user", "content": f"q{i}"}]))
                    for i in range(5)
                ),
                return_exceptions=True,
            )

    [exc, *_] = asyncio.run(ask_all())
    assert isinstance(exc, BatchExported)
    assert [p.name for p in exc.paths] == ["b000001.jsonl", "b000002.jsonl", "b000003.jsonl"]
    assert [len(p.read_text().splitlines()) for p in exc.paths] == [2, 2, 1]
    assert "round 1: 5 requests written to" in str(exc)
