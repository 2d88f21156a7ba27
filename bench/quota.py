"""Quotas and budget: a run whose cells accept 10% to 90% of their dialogues, wave by wave.

    .venv/bin/python bench/quota.py [--target 50] [--budget-factor 1.5] [--seed 0] [--seeds 1]

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
        plan = plan_wave(targets, progress, budget=Budget(usd=budget), spent_usd=spent, wave=wave,
                         cost_hint=1.5 * UNIT)
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
    return {"met": sum(p.accepted >= targets[c] for c, p in progress.items()), "cells": len(targets),
            "overshoot": max(p.accepted - targets[c] for c, p in progress.items()),
            "budget_used": spent / budget, "waves": wave - 1, "calls_per_accepted": calls / max(counted, 1),
            "ideal": ideal, "stop": plan.stop}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=int, default=50, help="accepted rows wanted per cell")
    ap.add_argument("--budget-factor", type=float, default=1.5, help="budget / cost of the targets at the true rates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="repeat over this many seeds (worst and mean)")
    args = ap.parse_args(argv)
    runs = [simulate(args.target, args.budget_factor, args.seed + i) for i in range(args.seeds)]
    met = min(r["met"] for r in runs)
    print(f"cells_met={met}/{runs[0]['cells']} overshoot_max={max(r['overshoot'] for r in runs)} "
          f"budget_used={max(r['budget_used'] for r in runs):.3f} waves={max(r['waves'] for r in runs)} "
          f"calls_per_accepted={sum(r['calls_per_accepted'] for r in runs) / len(runs):.2f}")
    print(f"ideal_calls_per_accepted={runs[0]['ideal']:.2f} stop={','.join(sorted({r['stop'] for r in runs}))} "
          f"seeds={len(runs)} target={args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
