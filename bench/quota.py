"""Quotas and budget: a run whose cells accept 10% to 90% of their dialogues, wave by wave.

    .venv/bin/python bench/quota.py [--target 50] [--budget-factor 1.5] [--seed 0] [--seeds 1]
    .venv/bin/python bench/quota.py --runner [--target 10]

Nine cells, each with the same target and an acceptance rate from 10% to 90%, go through the
quota planner (`datagen.run.quota.plan_wave`) wave after wave until every cell is full or the
budget would be exceeded. Each attempted dialogue costs a random 0.5-1.5 x $0.002 and makes a
random 3-9 teacher calls plus one judge call, and passes the filters and the judge with its cell's
rate. The budget is `--budget-factor` x what the targets cost at the true rates. Prints one line:

    cells_met=K/K overshoot_max=X budget_used=F waves=W calls_per_accepted=C

`overshoot_max`: the most rows any cell accepted past its target (kept as a reserve for a raised
target); `budget_used`: spent / budget; `calls_per_accepted`: teacher and judge calls per row
counted toward a target. A second line gives `ideal_calls_per_accepted` (what knowing every rate
in advance would cost). With `--seeds N`, the line is the worst (overshoot, budget, waves) and
mean (calls) over N seeds.

`--runner` makes the same run for real: `datagen.run.waves.QuotaRun` against the fake OpenAI server
with the tests' scripted teacher (expansion, dialogues) and a scripted judge that passes a dialogue
with its cell's rate (decided by a hash of its first message), so the filters' own drops come on
top. The budget is $5 at $1/$2 per million tokens (not binding); the line is the same, with
`calls_per_accepted` counted in the journal (every distinct teacher call: expansion, dialogues,
judge) per row of final.jsonl.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datagen.run.quota import Budget, CellProgress, plan_wave  # noqa: E402

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
UNIT = 0.002
CALLS = (3, 9)


def simulate(target: int, budget_factor: float, seed: int) -> dict[str, float]:
    """One simulated run; its figures."""
    rng = random.Random(seed)
    rates = {f"rate{int(r * 100):02d}": r for r in RATES}
    targets = dict.fromkeys(rates, target)
    mean_calls = (CALLS[0] + CALLS[1]) / 2 + 1
    budget = budget_factor * sum(t / rates[c] for c, t in targets.items()) * UNIT
    progress = {c: CellProgress() for c in rates}
    spent, calls, wave = 0.0, 0, 1
    while True:
        plan = plan_wave(
            targets, progress, budget=Budget(usd=budget), spent_usd=spent, wave=wave, cost_hint=1.5 * UNIT
        )
        if plan.stop:
            break
        for cell, n in plan.attempts.items():
            step = CellProgress(attempted=n)
            for _ in range(n):
                cost = UNIT * rng.uniform(0.5, 1.5)
                step.cost += cost
                calls += rng.randint(*CALLS) + 1
                step.accepted += rng.random() < rates[cell]
            progress[cell].add(step)
            spent += step.cost
        wave += 1
    counted = sum(min(p.accepted, targets[c]) for c, p in progress.items())
    ideal = sum(t / rates[c] for c, t in targets.items()) * mean_calls / sum(targets.values())
    return {
        "met": sum(p.accepted >= targets[c] for c, p in progress.items()),
        "cells": len(targets),
        "overshoot": max(p.accepted - targets[c] for c, p in progress.items()),
        "budget_used": spent / budget,
        "waves": wave - 1,
        "calls_per_accepted": calls / max(counted, 1),
        "ideal": ideal,
        "stop": plan.stop,
    }


def run_for_real(target: int) -> int:
    """The `--runner` mode (see the module docstring)."""
    import json
    import re
    import tempfile
    import zlib

    import yaml

    from datagen.run.config import load_config
    from datagen.run.waves import QuotaRun, journal_spend
    from tests.fakes.openai_server import FakeOpenAI
    from tests.filters.judge_script import scripted_judge
    from tests.generate.scripted_teacher import scripted_teacher

    tmp = Path(tempfile.mkdtemp(prefix="datagen-quota-"))
    out = tmp / "run"
    cells = {f"rate{int(r * 100):02d}": r for r in RATES}
    texts: dict[str, str] = {}

    def category_of(text: str) -> str | None:
        if text not in texts:  # a prompt the pool grew since: read the run's prompt files again
            for path in [out / "seeds.jsonl", *sorted((out / "pool").glob("expand.w*.jsonl"))]:
                if path.exists() and not path.name.endswith(".rejected.jsonl"):
                    for line in path.read_text(encoding="utf-8").splitlines():
                        row = json.loads(line)
                        texts[row["text"]] = row["category"]
        return texts.get(text)

    def score(n: int, criterion: str, block: str) -> int:
        m = re.search(r"<\|Human\|>: (.*?)<eoh>", block, re.S)
        rate = cells.get(category_of(m.group(1)) if m else None, 1.0)
        if n == 1 and criterion == "helpful" and zlib.crc32(block.encode()) % 1000 >= rate * 1000:
            return 2
        return 5

    judge = scripted_judge(score=score)

    def responder(body):
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        return judge(body) if system.startswith("You grade dialogues") else scripted_teacher(body)

    fake = FakeOpenAI().start()
    try:
        fake.set_responder(responder)
        seeds = tmp / "seeds.jsonl"
        topics = (
            "the sea",
            "a mountain town",
            "an old clock",
            "a rainy morning",
            "a lost key",
            "a first job",
        )
        seeds.write_text(
            "".join(
                json.dumps(
                    {
                        "id": f"{c}-{i}",
                        "text": f"Write a short story about {t} ({c}).",
                        "language": "en",
                        "category": c,
                        "plugins": [],
                    }
                )
                + "\n"
                for c in cells
                for i, t in enumerate(topics[:3])
            ),
            encoding="utf-8",
        )
        budget = 5.0
        config = {
            "name": "quota-bench",
            "seed": 1,
            "teacher": {
                "base_url": fake.base_url,
                "model": fake.model,
                "api_key_env": "DATAGEN_BENCH_KEY",
                "concurrency": 16,
                "timeout": 10,
                "progress": False,
                "prices": {fake.model: {"input": 1.0, "output": 2.0}},
            },
            "seeds": {"path": str(seeds)},
            "expand": {"batch_size": 8, "parallel": 8, "near_dup_threshold": 0.95},
            "dialogues": {"hhh": {"options": {"turns": {"default": [2]}}}, "plugin": {"enabled": False}},
            "filters": {"steps": {"judge": {"rubrics": ["hhh"]}}},
            "dataset": {"enabled": False},
            "targets": {f"{c}/en/hhh": target for c in cells},
            "budget": {"usd": budget},
        }
        path = tmp / "run.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        QuotaRun(load_config(path), out).run()
        state = json.loads((out / "quota.json").read_text(encoding="utf-8"))
        accepted: dict[str, int] = dict.fromkeys(cells, 0)
        for name in ("final.jsonl", "reserve.jsonl"):
            for line in (out / name).read_text(encoding="utf-8").splitlines():
                accepted[json.loads(line)["category"]] += 1
        final = sum(1 for _ in (out / "final.jsonl").open(encoding="utf-8"))
        usd, _ = journal_spend(out / "journal.sqlite")
        import sqlite3

        with sqlite3.connect(out / "journal.sqlite") as db:
            calls = db.execute("select count(*) from calls").fetchone()[0]
        met = sum(accepted[c] >= target for c in cells)
        print(
            f"cells_met={met}/{len(cells)} overshoot_max={max(accepted[c] - target for c in cells)} "
            f"budget_used={usd / budget:.3f} waves={len(state['waves'])} "
            f"calls_per_accepted={calls / max(final, 1):.2f}"
        )
        print(
            f"runner=true stop={state['plan']['stop']} target={target} final={final} spent_usd={usd:.4f} "
            f"requests={fake.requests} dir={out}"
        )
    finally:
        fake.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=int, default=50, help="accepted rows wanted per cell")
    ap.add_argument(
        "--budget-factor", type=float, default=1.5, help="budget / cost of the targets at the true rates"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="repeat over this many seeds (worst and mean)")
    ap.add_argument("--runner", action="store_true", help="the real runner against the fake teacher")
    args = ap.parse_args(argv)
    if args.runner:
        return run_for_real(args.target)
    runs = [simulate(args.target, args.budget_factor, args.seed + i) for i in range(args.seeds)]
    met = min(r["met"] for r in runs)
    print(
        f"cells_met={met}/{runs[0]['cells']} overshoot_max={max(r['overshoot'] for r in runs)} "
        f"budget_used={max(r['budget_used'] for r in runs):.3f} waves={max(r['waves'] for r in runs)} "
        f"calls_per_accepted={sum(r['calls_per_accepted'] for r in runs) / len(runs):.2f}"
    )
    print(
        f"ideal_calls_per_accepted={runs[0]['ideal']:.2f} stop={','.join(sorted({r['stop'] for r in runs}))} "
        f"seeds={len(runs)} target={args.target}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
