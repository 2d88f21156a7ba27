"""How fast `datagen review` opens a big run.

Makes a run directory of --rows rows from the MOSS samples in ../shared/moss-samples (85% kept in
final.jsonl with a loss, 10% rejected by filters, 5% by the check, each with its reason and
evidence), builds the review index once, then starts `python -m datagen.review` on it and times the
first page and a few others over HTTP. Prints key=value lines:

  rows, index_s (one build), index_mb, start_s (server up, index already built), first_page_ms (GET /),
  rows_page_ms (GET /rows), filter_ms (a reason), search_ms (full text), deep_page_ms (the last page),
  row_ms (one dialogue), next_ms (next unreviewed row)

Usage: .venv/bin/python bench/review_page.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datagen.formats.moss import from_sft
from datagen.io import dumps
from datagen.review.index import build_index

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "moss-samples"
REASONS = [
    ("quality", "too_short"),
    ("language", "language_drift"),
    ("near_dedup", "near_dup"),
    ("safety", "unsafe_keyword"),
]


def make_run(run: Path, n: int) -> None:
    base = [from_sft(json.loads(p.read_text(encoding="utf-8"))) for p in sorted(SAMPLES.rglob("*.json"))]
    if not base:
        raise SystemExit(f"no samples under {SAMPLES}")
    rng = random.Random(0)
    (run / "filtered").mkdir(parents=True)
    (run / "checked").mkdir()
    counts = {"final": 0, "filtered": 0, "checked": 0}
    with (
        open(run / "final.jsonl", "w", encoding="utf-8") as final,
        open(run / "filtered" / "rejected.jsonl", "w", encoding="utf-8") as filtered,
        open(run / "checked" / "rejected.jsonl", "w", encoding="utf-8") as checked,
    ):
        for i in range(n):
            conv = base[i % len(base)]
            row = conv.to_dict()
            row["id"] = f"{conv.kind}-{i:06d}"
            row["turns"][0]["human"] = f"{row['turns'][0]['human']} (#{i})"
            row["scores"] = {"moss_loss": round(rng.gauss(1.5, 0.4), 4)}
            u = rng.random()
            if u < 0.85:
                final.write(dumps(row) + "\n")
                counts["final"] += 1
            elif u < 0.95:
                step, reason = REASONS[i % len(REASONS)]
                row["rejected"] = {"step": step, "reason": reason, "evidence": {"score": round(u, 3)}}
                filtered.write(dumps(row) + "\n")
                counts["filtered"] += 1
            else:
                row["rejected"] = {
                    "step": "moss_check",
                    "reason": "loss_above_percentile",
                    "evidence": {"moss_loss": row["scores"]["moss_loss"], "cutoff": 2.1},
                }
                checked.write(dumps(row) + "\n")
                counts["checked"] += 1
    steps = [{"step": s, "in": n, "kept": n, "dropped": 0, "reasons": {}} for s, _ in REASONS]
    steps.append(
        {
            "step": "moss_check",
            "in": n,
            "kept": counts["final"],
            "dropped": counts["checked"],
            "reasons": {"loss_above_percentile": counts["checked"]},
        }
    )
    (run / "funnel.json").write_text(json.dumps({"input": n, "kept": counts["final"], "steps": steps}))


def get(port: int, path: str) -> float:
    """Milliseconds for one GET (the whole body read); fails on a status other than 200 or 303."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    ms = (time.perf_counter() - t) * 1000
    conn.close()
    if resp.status not in (200, 303):
        raise SystemExit(f"GET {path}: HTTP {resp.status}")
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        make_run(run, args.rows)
        t = time.perf_counter()
        index = build_index(run)
        index_s = time.perf_counter() - t
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "datagen.review", str(run), "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            if "http://" not in line:
                raise SystemExit(f"the review server did not start: {line!r}")
            start_s = time.perf_counter() - t
            port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
            first = get(port, "/")
            rows_page = get(port, "/rows")
            filt = get(port, "/rows?stage=near_dedup&reason=near_dup")
            search = get(port, "/rows?q=Python")
            last = get(port, f"/rows?page={-(-args.rows // 50)}")
            row = get(port, f"/row/{args.rows // 2}")
            nxt = get(port, "/next?status=kept")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"rows={args.rows}")
        print(f"index_s={index_s:.1f}")
        print(f"index_mb={index.stat().st_size / 2**20:.0f}")
        print(f"start_s={start_s:.2f}")
        print(f"first_page_ms={first:.0f}")
        print(f"rows_page_ms={rows_page:.0f}")
        print(f"filter_ms={filt:.0f}")
        print(f"search_ms={search:.0f}")
        print(f"deep_page_ms={last:.0f}")
        print(f"row_ms={row:.0f}")
        print(f"next_ms={nxt:.0f}")


if __name__ == "__main__":
    main()
