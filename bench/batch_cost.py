"""Half the bill: the demo-shaped run's dialogues online and in batch mode, same scripted answers.

    .venv/bin/python bench/batch_cost.py [--hhh 24] [--plugin 16] [--turns 3-5] [--cache-min 1024]

HHH and plugin dialogues (3-5 turns, real tools) are made twice with the scripted teacher of the
tests: once through the fake OpenAI server online, once through the fake Batch API (files, batches,
polls, downloads over real HTTP). Both runs price their journals with gpt-4o-mini's published
prices (standard and Batch API). Prints one line:

    same_output=true cost_ratio=R rounds=N longest_calls=L requests_online=A requests_batch=B cache_hit=H

`same_output`: the dialogue files are equal line for line, every field but `usage.cost` (a batch
call costs half, which is the point). `cost_ratio`: batch ledger cost / online ledger cost.
`rounds`: batch rounds over both stages; `longest_calls`: the calls of each stage's longest
dialogue, summed (one round per call of the longest dialogue, not one per dialogue). `requests_*`:
teacher calls made (online HTTP calls; lines submitted in batch files). `cache_hit`: cached share
of the batch run's prompt tokens (the fake's prefix cache: 1,024-token minimum, 128-token blocks,
as OpenAI's; the fake counts whitespace words as tokens and caches across every earlier request, so
it shows how much of the prompts is a shared prefix, not the effect of the order of lines). Then a
second line with the ledger's figures, and a third scaling the batch run's ledger (tokens per
dialogue) to 100,000 dialogues at gpt-4o-mini's prices, online and batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datagen.generate.common import PromptRow  # noqa: E402
from datagen.generate.config import DialogueConfig  # noqa: E402
from datagen.generate.dialogues import agenerate_dialogues  # noqa: E402
from datagen.teacher.batch import BatchEngine  # noqa: E402
from tests.fakes.batch_server import FakeBatchOpenAI  # noqa: E402
from tests.fakes.openai_fixtures import make_teacher_config_for  # noqa: E402
from tests.generate.scripted_teacher import scripted_teacher  # noqa: E402

#: gpt-4o-mini, USD per 1M tokens (OpenAI's pricing page: standard and Batch API).
GPT_4O_MINI = {
    "input": 0.15,
    "cached_input": 0.075,
    "output": 0.60,
    "batch_input": 0.075,
    "batch_output": 0.30,
}
PLUGIN_QUESTIONS = [
    ("What is 23*47+12?", "calculator"),
    ("Solve x+y=10 and x-y=2 for me.", "solver"),
    ("How tall is Mount Everest?", "search"),
    ("Please draw a red fox for me.", "text2image"),
]


def prompts(n_hhh: int, n_plugin: int) -> tuple[list[PromptRow], list[PromptRow]]:
    seeds = [json.loads(line) for line in (REPO / "seeds" / "starter.jsonl").read_text().splitlines()]
    hhh = [PromptRow.of(s) for s in seeds if s["language"] == "en" and not s["plugins"]][:n_hhh]
    plugin = [
        PromptRow(id=f"tool-{i}", text=q, language="en", category="tool", plugins=[p])
        for i, (q, p) in ((i, PLUGIN_QUESTIONS[i % len(PLUGIN_QUESTIONS)]) for i in range(n_plugin))
    ]
    return hhh, plugin


def teacher(fake: FakeBatchOpenAI, mode: str):
    batch = {"poll_interval": 0.01, "max_poll_interval": 0.05, "settle_seconds": 0.02, "linger_seconds": 5.0}
    return make_teacher_config_for(
        fake, mode=mode, concurrency=1000, batch=batch, prices={fake.model: GPT_4O_MINI}
    )


async def make(
    fake: FakeBatchOpenAI, mode: str, out: Path, hhh: list[PromptRow], plugin: list[PromptRow], turns: str
) -> dict[str, int]:
    rounds: dict[str, int] = {}

    def factory(config, **kwargs):
        engine = BatchEngine(config, **kwargs)
        engines.append(engine)
        return engine

    for kind, rows in (("hhh", hhh), ("plugin", plugin)):
        engines: list[BatchEngine] = []
        cfg = DialogueConfig.from_dict({"turns": turns, "seed": 7}, kind=kind)
        await agenerate_dialogues(
            rows,
            kind,
            cfg,
            teacher(fake, mode),
            out / f"{kind}.jsonl",
            out / "journal.sqlite",
            progress=False,
            engine_factory=factory if mode == "batch" else None,
        )
        rounds[kind] = sum(e.rounds for e in engines)
    return rounds


def ledger(journal: Path) -> dict[str, float]:
    conn = sqlite3.connect(journal)
    try:
        row = conn.execute(
            "SELECT sum(paid_prompt_tokens), sum(paid_completion_tokens), sum(paid_cached_tokens), "
            "sum(paid_cost), count(*) FROM calls"
        ).fetchone()
    finally:
        conn.close()
    return dict(zip(("prompt", "completion", "cached", "cost", "calls"), (x or 0 for x in row), strict=True))


def records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.get("usage", {}).pop("cost", None)
    return sorted(rows, key=lambda r: r["id"])


def longest_calls(path: Path) -> int:
    return max(json.loads(line)["usage"]["calls"] for line in path.read_text().splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hhh", type=int, default=24)
    ap.add_argument("--plugin", type=int, default=16)
    ap.add_argument("--turns", default="3-5")
    ap.add_argument(
        "--cache-min",
        type=int,
        default=1024,
        help="the fake's smallest cached prefix in tokens (OpenAI: 1024; lower it to see the cache)",
    )
    args = ap.parse_args()
    hhh, plugin = prompts(args.hhh, args.plugin)
    work = Path(tempfile.mkdtemp(prefix="datagen-batch-cost-"))
    results = {}
    for mode in ("online", "batch"):
        with FakeBatchOpenAI(completion_delay=0.05, cache_min=args.cache_min) as fake:
            fake.set_responder(scripted_teacher)
            t0 = time.perf_counter()
            rounds = asyncio.run(make(fake, mode, work / mode, hhh, plugin, args.turns))
            results[mode] = {
                "rounds": rounds,
                "seconds": time.perf_counter() - t0,
                "requests": fake.requests,
                "lines": sum(fake.submitted.values()),
                "duplicates": fake.duplicates(),
                "http": fake.uploads + len(fake.batches) + fake.polls + fake.downloads,
                "ledger": ledger(work / mode / "journal.sqlite"),
            }
    on, ba = results["online"], results["batch"]
    same = all(
        records(work / "online" / f"{k}.jsonl") == records(work / "batch" / f"{k}.jsonl")
        for k in ("hhh", "plugin")
    )
    longest = sum(longest_calls(work / "batch" / f"{k}.jsonl") for k in ("hhh", "plugin"))
    led = ba["ledger"]
    ratio = led["cost"] / on["ledger"]["cost"]
    cache_hit = led["cached"] / led["prompt"] if led["prompt"] else 0.0
    print(
        f"same_output={str(same).lower()} cost_ratio={ratio:.3f} rounds={sum(ba['rounds'].values())} "
        f"longest_calls={longest} requests_online={on['requests']} requests_batch={ba['lines']} "
        f"cache_hit={cache_hit:.3f}"
    )
    n = args.hhh + args.plugin
    scale = 100_000 / n
    pt, ct, cached = led["prompt"] * scale, led["completion"] * scale, led["cached"] * scale
    p = GPT_4O_MINI
    online_100k = ((pt - cached) * p["input"] + cached * p["cached_input"] + ct * p["output"]) / 1e6
    batch_100k = (
        (pt - cached) * p["batch_input"] + cached * p["batch_input"] / 2 + ct * p["batch_output"]
    ) / 1e6
    print(
        f"dialogues={n} calls={int(led['calls'])} prompt_tokens={int(led['prompt'])} "
        f"completion_tokens={int(led['completion'])} cached_tokens={int(led['cached'])} "
        f"online_cost=${on['ledger']['cost']:.6f} batch_cost=${led['cost']:.6f} "
        f"rounds_hhh={ba['rounds']['hhh']} rounds_plugin={ba['rounds']['plugin']} "
        f"http_batch={ba['http']} duplicates={len(ba['duplicates'])} "
        f"seconds_online={on['seconds']:.1f} seconds_batch={ba['seconds']:.1f}"
    )
    print(
        f"projection_100k_dialogues online=${online_100k:.2f} batch=${batch_100k:.2f} "
        f"(gpt-4o-mini: input $0.15, cached $0.075, output $0.60; batch $0.075 / $0.30 per 1M tokens)"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
