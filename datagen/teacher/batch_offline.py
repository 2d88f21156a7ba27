"""Batch mode outside a run: import a self-hosted teacher's output, show where batches stand, cancel.

    counts = import_output(config, run_dir / "journal.sqlite", "round1.out.jsonl")   # settle vllm's answers
    print(batch_status(run_dir / "journal.sqlite"))                                    # batches, counts, cost
    cancel_batches(config, run_dir / "journal.sqlite")                                 # stop paying for them

A round written for a self-hosted teacher (`teacher.batch.transport: files`) is the same JSONL the
Batch API takes; `vllm run-batch -i ROUND.jsonl -o OUT.jsonl --model MODEL` answers it (lines in
input order, errors inline) and `import_output` settles OUT.jsonl into the journal through the
engine's own settling code. The next run (or `datagen batch export`) then finds those answers in
the journal and writes the next round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.teacher import batch_io as bio
from datagen.teacher.batch import BatchEngine
from datagen.teacher.config import TeacherConfig
from datagen.teacher.failures import CallFailure
from datagen.teacher.journal import Journal
from datagen.teacher.settle import Answer


def import_output(config: TeacherConfig, journal_path: str | Path, output: str | Path) -> dict[str, int]:
    """Settle a batch output file into the journal; counts `ok`, `failed_<code>`, `unknown`
    (custom_ids the journal never wrote), `skipped` (already settled) and `batches`."""
    path = Path(output)
    if not path.is_file():
        raise InputError("no such batch output file", path=str(path))
    config = dataclasses.replace(
        config, progress=False, batch=dataclasses.replace(config.batch, transport="files")
    )

    async def main() -> dict[str, int]:
        async with BatchEngine(
            config, journal_path=journal_path, progress=False, desc="batch import", adopt=False
        ) as engine:
            return await _import(engine, path)

    return asyncio.run(main())


async def _import(engine: BatchEngine, path: Path) -> dict[str, int]:
    journal = engine.journal
    assert journal is not None
    with open(path, encoding="utf-8") as fh:
        outputs = bio.parse_output(fh, str(path))
    rows = bio.lines_by_id(journal, outputs)
    counts: Counter[str] = Counter(
        unknown=sum(1 for cid in outputs if cid not in rows),
        skipped=sum(1 for row in rows.values() if row["settled"]),
    )
    batches = sorted({row["batch"] for row in rows.values() if not row["settled"]})
    for name in batches:
        todo: list[tuple[str, Answer | CallFailure]] = []
        for line in bio.open_lines(journal, name):
            if (p := engine.reopen(line)) is None:
                continue
            cid = line["custom_id"]
            engine.lines[cid] = p
            engine.stats.in_flight += 1
            obj = outputs.get(cid)
            outcome = (
                engine.outcome(p, obj)
                if obj is not None
                else CallFailure("server_error", f"missing from {path.name}")
            )
            counts["ok" if isinstance(outcome, Answer) else f"failed_{outcome.code}"] += 1
            todo.append((cid, outcome))
        await asyncio.gather(*(engine.settle(cid, outcome) for cid, outcome in todo))
        await journal.execute(bio.update_batch(name, status="imported", settled=1))
    counts["batches"] = len(batches)
    return dict(counts)


def batch_status(journal_path: str | Path) -> dict[str, Any]:
    """The journal's batches (status, lines settled ok / failed / open, the provider's last
    counts) and the ledger: calls, tokens, cached tokens and cost so far."""
    with Journal(journal_path) as journal:
        per_batch = bio.line_counts(journal)
        batches = []
        for row in bio.all_batches(journal):
            counts = per_batch.get(row["name"], {"ok": 0, "failed": 0, "open": 0})
            batches.append(
                {
                    "name": row["name"],
                    "round": row["round"],
                    "status": row["status"],
                    "settled": bool(row["settled"]),
                    "transport": row["transport"],
                    "batch_id": row["batch_id"],
                    "file_id": row["file_id"],
                    "lines": row["lines"],
                    **counts,
                    "provider_counts": json.loads(row["counts"]) if row["counts"] else None,
                    "path": row["path"],
                    "error": row["error"],
                }
            )
        ledger = journal.stats()
        by_mode = {
            mode or "online": {"calls": n, "cost": cost or 0.0}
            for mode, n, cost in journal.query(
                "SELECT mode, count(*), sum(paid_cost) FROM calls GROUP BY mode"
            )
        }
    return {"batches": batches, "ledger": ledger.to_dict(), "by_mode": by_mode}


def cancel_batches(config: TeacherConfig, journal_path: str | Path) -> list[tuple[str, str]]:
    """Ask the provider to cancel every batch in flight; (name, what happened) for each. A
    cancelled batch keeps the lines it finished: the next run collects them and sends the rest."""

    async def main() -> list[tuple[str, str]]:
        api = bio.BatchApi(config)
        out = []
        try:
            with Journal(journal_path) as journal:
                for row in bio.open_batches(journal):
                    if row["transport"] != "api" or not row["batch_id"]:
                        continue
                    answer = await api.cancel(row["batch_id"])
                    if isinstance(answer, CallFailure):
                        out.append((row["name"], f"not cancelled: {answer.detail}"))
                        continue
                    await journal.execute(bio.update_batch(row["name"], status=answer.status))
                    out.append((row["name"], answer.status))
        finally:
            await api.close()
        return out

    return asyncio.run(main())
