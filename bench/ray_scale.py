"""Near-duplicate filtering of millions of short prompts: the local index against the same rule on
Ray (`datagen.text.neardup_ray`), on this machine; then per-step costs, for a projection to a
cluster.

    .venv/bin/python bench/ray_scale.py                       # 1M and 4M prompts
    .venv/bin/python bench/ray_scale.py --rows 200000         # quicker

Each variant runs in its own child process that first generates the prompts (bench/dedup.py's
generator: zh/en templates, about 10% near-duplicate variants, long random topics), then times the
dedup alone. Memory is the peak PSS (shared pages split between the processes that map them, so the
object store is counted once) of the child and everything it started: its pool workers, or Ray's
GCS, raylet and workers. Local: `NearDupIndex("prompt").check_and_add_stream` with one worker
process per CPU for the signatures. Ray: a local Ray instance with all CPUs, the prompts put into
the object store in shards of `--shard` rows (that transfer is timed; Ray's start and stop are
not, a cluster being up before a run), then `near_duplicates`.
`same_keep` compares every row's verdict, `duplicate_of` included.

One line per size: `rows=N local_s=A ray_s=B peak_gb_local=C peak_gb_ray=D same_keep=true`, then
the per-step costs (`step_costs ...`) that the projection in the ray notes is built from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.dedup import prompts  # noqa: E402
from datagen.text.neardup import NearDupIndex  # noqa: E402


def generate(n: int, seed: int) -> list[str]:
    return list(prompts(n, seed, dup_rate=0.1, scale=4))


def run_local(texts: list[str], workers: int) -> np.ndarray:
    index = NearDupIndex("prompt")
    dup = np.full(len(texts), -1, np.int64)
    stream = index.check_and_add_stream(
        ((str(i), t) for i, t in enumerate(texts)), workers=workers, chunk_size=10_000
    )
    for key, d in stream:
        if d is not None:
            dup[int(key)] = int(d)
    return dup


def run_ray(texts: list[str], shard: int, object_store_gb: float) -> tuple[np.ndarray, float]:
    """Verdicts and seconds, Ray's start and stop left out (a cluster is up before a run)."""
    import ray

    from datagen.text.neardup_ray import near_duplicates

    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=int(object_store_gb * 2**30),
    )
    try:
        t0 = time.perf_counter()
        refs = [ray.put(texts[i : i + shard]) for i in range(0, len(texts), shard)]
        verdicts = near_duplicates(refs)
        dup = np.concatenate([v.duplicate_of for v in verdicts])
        hit = dup >= 0
        dup[hit] = (dup[hit] >> 40) * shard + (dup[hit] & ((1 << 40) - 1))  # row ids -> input positions
        return dup, time.perf_counter() - t0
    finally:
        ray.shutdown()


def child(args: argparse.Namespace) -> int:
    texts = generate(args.rows, args.seed)
    print("generated", flush=True)
    if args.child == "local":
        t0 = time.perf_counter()
        dup = run_local(texts, args.workers)
        seconds = time.perf_counter() - t0
    else:
        dup, seconds = run_ray(texts, args.shard, args.object_store_gb)
    np.save(args.out, dup)
    print(json.dumps({"seconds": seconds}), flush=True)
    return 0


class PeakPSS:
    """Peak summed PSS of a process and all its descendants, sampled every 0.3 s."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.at_start = 0  # the child's PSS once the prompts exist (the dedup's baseline)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def total(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            time.sleep(0.3)

    def __enter__(self) -> PeakPSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def measure(mode: str, args: argparse.Namespace, out: Path) -> tuple[float, float, np.ndarray]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--rows",
        str(args.n),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
        "--workers",
        str(args.workers),
        "--shard",
        str(args.shard),
        "--object-store-gb",
        str(args.object_store_gb),
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    seconds = None
    with PeakPSS(proc.pid) as mem:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                seconds = json.loads(line)["seconds"]
            elif line.strip():
                print(f"  [{mode}] {line.strip()}", flush=True)
    if proc.wait() != 0 or seconds is None:
        raise SystemExit(f"the {mode} run failed (exit {proc.returncode})")
    return seconds, mem.peak / 2**30, np.load(out)


def step_costs(n: int, seed: int) -> dict[str, float]:
    """CPU seconds (process time, so a busy machine does not inflate them) per million input rows
    of each step, in one process on n rows, and the sizes per row: what `projection` multiplies."""
    from datagen.text import neardup_ray as nr

    texts = generate(n, seed + 17)
    params = NearDupIndex("prompt").params()
    clock = time.process_time
    t0 = clock()
    out = nr._near_map(0, texts, None, params, 4)
    t_map = clock() - t0
    fps, pieces = out[1], out[2:]
    t0 = clock()
    edges = [nr._group(p) for p in pieces]
    t_group = clock() - t0
    nr._components(np.array([[0, 1]], np.int64))  # scipy's import is not the step's cost
    t0 = clock()
    nodes, labels = nr._components(*edges)
    t_comp = clock() - t0
    t0 = clock()
    routed = nr._route(0, fps, nodes, labels, 4)
    decided = [nr._near_decide(params, r) for r in routed]
    t_decide = clock() - t0
    n_edges = sum(len(e) for e in edges)
    per_m = 1e6 / n
    import tracemalloc  # a map task's own peak, on a slice (tracing slows it: not in the timings)

    part = texts[: min(n, 50_000)]
    tracemalloc.start()
    nr._near_map(0, part, None, params, 4)
    map_peak = tracemalloc.get_traced_memory()[1] / len(part)
    tracemalloc.stop()
    return {
        "map_s_per_m": t_map * per_m,
        "group_s_per_m": t_group * per_m,
        "components_s_per_m": t_comp * per_m,
        "decide_s_per_m": t_decide * per_m,
        "edges_per_row": n_edges / n,
        "rows_on_edges": len(nodes) / n,
        "dropped": sum(len(d[0]) for d in decided) / n,
        "text_bytes_per_row": sum(len(t.encode()) + 50 for t in texts) / n,  # a pickled str: ~50 B more
        "fingerprint_bytes_per_row": (fps.signatures.nbytes + fps.band_keys.nbytes + fps.empty.nbytes) / n,
        "key_bytes_per_row": sum(k.nbytes + i.nbytes for k, i in pieces) / n,
        "map_peak_bytes_per_row": map_peak,
    }


#: What the projection assumes (printed with it).
ASSUME = {
    "nodes": 16,
    "cores": 32,
    "net_gbit": 10.0,  # per node, full duplex
    "efficiency": 0.7,  # of the cores busy in the parallel steps (stragglers, scheduling, I/O)
    "shard_rows": 100_000,  # 1000 shards x 256 shuffle pieces = 256k objects for the driver to own
    "worker_base_gb": 0.2,  # a Ray worker with numpy and datagen imported
}


def projection(c: dict[str, float], rows: float = 100e6) -> dict[str, float]:
    """Wall time and memory of `near_duplicates` on `rows` rows of the same kind on ASSUME's
    cluster, from the per-row costs: the parallel steps divide by the cores, components is one
    task (its single-core time counts whole), the two shuffles cross the network once."""
    a = ASSUME
    m, cores, nodes = rows / 1e6, a["nodes"] * a["cores"] * a["efficiency"], a["nodes"]
    net = a["net_gbit"] / 8 * 1e9  # bytes/s a node sends (and receives) at once
    cross = (nodes - 1) / nodes  # the share of a shuffle that leaves its node
    steps = {
        "map": c["map_s_per_m"] * m / cores,
        "shuffle_keys": c["key_bytes_per_row"] * rows / nodes * cross / net,
        "group": c["group_s_per_m"] * m / cores,
        "components": c["components_s_per_m"] * m,
        "shuffle_rows": c["fingerprint_bytes_per_row"] * c["rows_on_edges"] * rows / nodes * cross / net,
        "decide": c["decide_s_per_m"] * m / cores,
    }
    edges = c["edges_per_row"] * rows
    # object store per node: the shards' texts, fingerprints and the key pieces (freed once grouped)
    store = (c["text_bytes_per_row"] + c["fingerprint_bytes_per_row"] + c["key_bytes_per_row"]) * rows / nodes
    # components: edge arrays in and concatenated, np.unique's sort and inverse, the sparse graph
    comp = edges * (16 + 16 + 16 + 16 + 9)
    return {
        **{f"{k}_s": round(v, 1) for k, v in steps.items()},
        "wall_s": round(sum(steps.values()), 0),
        "store_gb_per_node": round(store / 2**30, 1),
        "workers_gb_per_node": round(
            a["cores"] * (a["worker_base_gb"] + a["shard_rows"] * c["map_peak_bytes_per_row"] / 2**30), 1
        ),
        "components_task_gb": round(comp / 2**30, 1),
        "edges": edges,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard", type=int, default=100_000, help="rows per Ray shard")
    ap.add_argument("--object-store-gb", type=float, default=6.0)
    ap.add_argument("--profile-rows", type=int, default=200_000, help="rows for the per-step costs (0: skip)")
    ap.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.rows = args.rows[0]
        return child(args)

    print(
        f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (a shared machine: timings vary)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            args.n = n
            local_s, local_gb, local_dup = measure("local", args, Path(tmp) / "local.npy")
            ray_s, ray_gb, ray_dup = measure("ray", args, Path(tmp) / "ray.npy")
            same_keep = bool(np.array_equal(local_dup < 0, ray_dup < 0))
            same_dup = bool(np.array_equal(local_dup, ray_dup))
            print(f"  dropped {int((local_dup >= 0).sum()):,} of {n:,}; duplicate_of equal too: {same_dup}")
            print(
                f"rows={n} local_s={local_s:.1f} ray_s={ray_s:.1f} peak_gb_local={local_gb:.2f} "
                f"peak_gb_ray={ray_gb:.2f} same_keep={str(same_keep and same_dup).lower()}",
                flush=True,
            )
    if args.profile_rows:
        costs = step_costs(args.profile_rows, args.seed)
        print("step_costs " + " ".join(f"{k}={v:.4g}" for k, v in costs.items()))
        print("assume " + " ".join(f"{k}={v}" for k, v in ASSUME.items()))
        print("projection rows=100000000 " + " ".join(f"{k}={v:.4g}" for k, v in projection(costs).items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
