"""Teacher engine throughput against the fake OpenAI server (run from the repo root).

    .venv/bin/python bench/teacher_throughput.py                 # all three cases, ~2 min
    .venv/bin/python bench/teacher_throughput.py --journal-rows 1000000   # journal at scale only

Case 1 (overhead): the fake server answers every request after exactly `--latency` seconds (1 s),
so with `--concurrency` 128 the ceiling is 128 requests/s. `--requests` (2000) go through
  * bare: `AsyncOpenAI` + `asyncio.Semaphore` + `chat.completions.create`, nothing else, and
  * engine: `TeacherEngine` with its journal on, retries, limits, progress counters,
interleaved `--repeat` times (best of each kept, as other load on the machine only slows runs).
The server runs in its own process, so the CPU figure is the client's alone.

Case 2 (RPM): a fast server (5 ms) and `rpm` = `--rpm` per `rate_window`. The window is scaled
down from 60 s to `--window` seconds (TeacherConfig.rate_window, a config knob) so the bench takes
seconds, not minutes; the limiter code is the same. The server's arrival times must never hold
more than `rpm` requests in any window, and the rate reached is reported as a fraction of the limit.

Case 3 (429 storm): a server answering after `--storm-latency` seconds, first with no fault, then
with a random 30% of requests answered 429 with `retry-after: 1`, `--storm-requests` each at
`--concurrency`. `storm_ratio` is the storm's steady rate of finished requests (between the 10th
and 90th percentile of completions: no ramp-up, no tail of unlucky requests) over the no-fault one: the
engine honours each 429 by delaying the request that got it, so the rest keep the slots busy (at
most 0.7 when the slots are the bottleneck, every 429 costing a slot's turn; the target is >= 0.5).
Halving the concurrency and pausing every request on each 429 took it to 0.017 (128 slots down to 3).

The last line is `ratio_to_limit=R1 ratio_to_bare=R2 cpu_ms_per_request=C storm_ratio=S` (case 1,
engine runs; case 3).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from datagen.teacher.config import TeacherConfig  # noqa: E402
from datagen.teacher.engine import TeacherEngine  # noqa: E402
from datagen.teacher.types import Request  # noqa: E402


class FakeServerProcess:
    """tests/fakes/openai_server.py in a child process."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.openai_server",
                "--port",
                "0",
                "--latency",
                str(latency),
                "--no-log",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = line.split()[1]
        self.root = self.base_url.rsplit("/v1", 1)[0]

    def control(self, **cmd) -> dict:
        req = urllib.request.Request(
            f"{self.root}/_control",
            data=json.dumps(cmd).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    def stats(self, arrivals: bool = False) -> dict:
        with urllib.request.urlopen(f"{self.root}/_stats" + ("?arrivals=1" if arrivals else "")) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def messages(run: str, i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"[{run}] Write a short answer to question number {i}."},
    ]


async def bare_run(base_url: str, n: int, concurrency: int, run: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            resp = await client.chat.completions.create(
                model="fake-teacher", messages=messages(run, i), temperature=0.7, max_tokens=256
            )
            return resp.choices[0].message.content

    out = await asyncio.gather(*(one(i) for i in range(n)))
    assert all(out)
    await client.close()


async def engine_run(
    config: TeacherConfig, journal: Path, n: int, run: str, stamps: list[float] | None = None
) -> TeacherEngine:
    requests = (Request(messages=messages(run, i), tag=i) for i in range(n))
    async with TeacherEngine(config, journal_path=journal, progress=False, desc="bench") as engine:
        got = 0
        async for result in engine.map(requests):
            assert result.ok, result
            got += 1
            if stamps is not None:
                stamps.append(time.perf_counter())
    assert got == n
    return engine


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of running fn()."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_right(stamps, t + window) - i for i, t in enumerate(stamps))


def case_overhead(args) -> tuple[float, float, float]:
    server = FakeServerProcess(args.latency)
    limit = args.concurrency / args.latency
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-"))
    config = TeacherConfig(
        base_url=server.base_url,
        model="fake-teacher",
        concurrency=args.concurrency,
        timeout=60,
        progress=False,
        params={"temperature": 0.7, "max_tokens": 256},
    )
    best = {"bare": 0.0, "engine": 0.0}
    cpu_engine = []
    try:
        # Warm up connections and imports once, unmeasured.
        asyncio.run(bare_run(server.base_url, args.concurrency, args.concurrency, "warmup"))
        for rep in range(args.repeat):
            for method in ("bare", "engine"):
                server.control(reset=True)
                run = f"{method}-{rep}"
                if method == "bare":
                    wall, cpu = timed(
                        lambda run=run: asyncio.run(
                            bare_run(server.base_url, args.requests, args.concurrency, run)
                        )
                    )
                else:
                    journal = tmp / f"journal-{rep}.sqlite"
                    wall, cpu = timed(
                        lambda run=run, journal=journal: asyncio.run(
                            engine_run(config, journal, args.requests, run)
                        )
                    )
                    cpu_engine.append(cpu)
                seen = server.stats()["requests"]
                assert seen == args.requests, f"server saw {seen} requests, expected {args.requests}"
                rate = args.requests / wall
                best[method] = max(best[method], rate)
                print(
                    f"  {method:<6} run {rep}: {args.requests} requests in {wall:.2f}s = {rate:.1f} req/s "
                    f"({rate / limit:.3f} of the {limit:.0f} req/s limit), CPU {cpu * 1000 / args.requests:.2f} "
                    f"ms/request",
                    flush=True,
                )
    finally:
        server.close()
    r1 = best["engine"] / limit
    r2 = best["engine"] / best["bare"]
    cpu_ms = min(cpu_engine) * 1000 / args.requests
    print(
        f"case 1: limit {limit:.0f} req/s, bare best {best['bare']:.1f} req/s "
        f"({best['bare'] / limit:.3f}), engine best {best['engine']:.1f} req/s ({r1:.3f})"
    )
    return r1, r2, cpu_ms


def case_rpm(args) -> None:
    server = FakeServerProcess(0.005)
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-rpm-"))
    n = args.rpm * args.windows
    config = TeacherConfig(
        base_url=server.base_url,
        model="fake-teacher",
        concurrency=64,
        timeout=60,
        progress=False,
        rpm=args.rpm,
        rate_window=args.window,
    )
    try:
        server.control(reset=True)
        wall, _ = timed(lambda: asyncio.run(engine_run(config, tmp / "journal.sqlite", n, "rpm")))
        arrivals = server.stats(arrivals=True)["arrivals"]
    finally:
        server.close()
    assert len(arrivals) == n
    peak = max_in_window(arrivals, args.window)
    span = max(arrivals) - min(arrivals)
    # n requests span (n - 1) intervals of the paced rate; the first window may start with a burst.
    reached = (n - 1) / span / (args.rpm / args.window) if span > 0 else float("inf")
    print(
        f"case 2: rpm={args.rpm} per {args.window:g}s window (scaled from 60s via rate_window), "
        f"{n} requests in {wall:.2f}s; server saw at most {peak} in any {args.window:g}s window "
        f"({'OK' if peak <= args.rpm else 'EXCEEDED'}); rate reached {reached:.3f} of the limit"
    )


def case_storm(args) -> float:
    server = FakeServerProcess(args.storm_latency)
    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-storm-"))
    n = args.storm_requests
    # Enough tries that a request unlucky 0.3^k times still ends ok (0.3^12 ~ 5e-7).
    config = TeacherConfig(
        base_url=server.base_url,
        model="fake-teacher",
        concurrency=args.concurrency,
        timeout=60,
        max_attempts=12,
        progress=False,
        params={"temperature": 0.7, "max_tokens": 256},
    )
    rates = {}
    try:
        asyncio.run(bare_run(server.base_url, args.concurrency, args.concurrency, "warmup"))
        for label, fault in (
            ("no-fault", None),
            ("storm", {"kind": "429", "times": None, "probability": 0.3, "retry_after": 1}),
        ):
            server.control(reset=True, **({"inject": fault} if fault else {}))
            engine = None
            stamps: list[float] = []

            def go(label=label, stamps=stamps):
                nonlocal engine
                engine = asyncio.run(
                    engine_run(config, tmp / f"journal-{label}.sqlite", n, f"storm-{label}", stamps)
                )

            wall, cpu = timed(go)
            st = server.stats()
            # The steady rate: completions between the 10th and the 90th percentile, leaving out the
            # ramp-up and the tail (the last requests unlucky with several 429s in a row).
            lo, hi = stamps[n // 10], stamps[n * 9 // 10]
            rates[label] = (n * 9 // 10 - n // 10) / (hi - lo)
            print(
                f"  {label:<8}: {n} requests in {wall:.2f}s ({n / wall:.1f} req/s overall, steady "
                f"{rates[label]:.1f} req/s); server answered {st['requests']} ({st['faults'].get('429', 0)} "
                f"429s); engine retries {engine.stats.retries}, concurrency at the end "
                f"{engine._slots.limit}/{args.concurrency}; client CPU {cpu * 1000 / st['requests']:.2f} ms per HTTP "
                "request",
                flush=True,
            )
    finally:
        server.close()
    ratio = rates["storm"] / rates["no-fault"]
    print(
        f"case 3: 30% random 429s (retry-after 1 s), latency {args.storm_latency:g}s, concurrency "
        f"{args.concurrency}: {rates['storm']:.1f} vs {rates['no-fault']:.1f} req/s without faults "
        f"= {ratio:.3f} (target >= 0.5)"
    )
    return ratio


def case_journal(rows: int) -> None:
    from datagen.teacher.journal import Journal, JournalEntry, canonical_request, key_of

    tmp = Path(tempfile.mkdtemp(prefix="datagen-bench-journal-"))
    path = tmp / "journal.sqlite"
    keys = []
    with Journal(path) as j:
        t0 = time.perf_counter()
        for i in range(rows):
            req = canonical_request("m", messages("scale", i), {"temperature": 0.7}, "v1")
            key = key_of(req)
            if i % max(1, rows // 1000) == 0:
                keys.append(key)
            j.put(
                JournalEntry(
                    key=key,
                    status="ok",
                    request=req,
                    model="m",
                    response=f"answer {i} " * 20,
                    prompt_tokens=30,
                    completion_tokens=60,
                    attempts=1,
                )
            )
        j.flush()
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for key in keys:
            assert j.get_ok(key) is not None
        lookup_us = (time.perf_counter() - t0) / len(keys) * 1e6
        t0 = time.perf_counter()
        st = j.stats()
        stats_s = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in tmp.iterdir()) / 1e6
    print(
        f"journal: {rows} rows written in {write_s:.1f}s ({rows / write_s:.0f} rows/s incl. hashing), "
        f"lookup {lookup_us:.0f} us, stats {stats_s:.2f}s, {size_mb:.0f} MB on disk, ok={st.ok}"
    )
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved bare/engine runs of case 1")
    parser.add_argument("--rpm", type=int, default=600, help="case 2 limit per window")
    parser.add_argument("--window", type=float, default=6.0, help="case 2 window in seconds (60 for real)")
    parser.add_argument("--windows", type=int, default=3, help="case 2 runs rpm * windows requests")
    parser.add_argument("--skip-rpm", action="store_true")
    parser.add_argument("--storm-requests", type=int, default=2000, help="case 3 requests per run")
    parser.add_argument("--storm-latency", type=float, default=1.0, help="case 3 server latency in seconds")
    parser.add_argument("--skip-storm", action="store_true")
    parser.add_argument("--only-storm", action="store_true", help="run case 3 alone")
    parser.add_argument("--journal-rows", type=int, default=0, help="only time the journal at this many rows")
    args = parser.parse_args()
    if args.journal_rows:
        case_journal(args.journal_rows)
        return 0
    if args.only_storm:
        print(f"storm_ratio={case_storm(args):.3f}")
        return 0
    r1, r2, cpu_ms = case_overhead(args)
    if not args.skip_rpm:
        case_rpm(args)
    storm = "" if args.skip_storm else f" storm_ratio={case_storm(args):.3f}"
    print(f"ratio_to_limit={r1:.3f} ratio_to_bare={r2:.3f} cpu_ms_per_request={cpu_ms:.2f}{storm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
