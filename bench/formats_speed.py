"""How fast datagen.formats parses and renders MOSS SFT records.

Repeats the 48 samples in ../shared/moss-samples to --rows rows and prints measured rows/s for:
  parse   from_sft(record)                          (dict -> Conversation)
  render  dumps_sft_line(to_sft(conv))              (Conversation -> JSON line)
  read    read_conversations(file.jsonl)            (bytes on disk -> Conversation, JSON decode included)
  json    json.loads of the same lines              (the floor `read` cannot beat)

Usage: .venv/bin/python bench/formats_speed.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from datagen.formats.moss import dumps_sft_line, from_sft, to_sft
from datagen.formats.reader import read_conversations

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "moss-samples"


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} rows/s  ({seconds:.2f} s for {n:,})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    base = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SAMPLES.rglob("*.json"))]
    if not base:
        raise SystemExit(f"no samples under {SAMPLES}")
    records = [base[i % len(base)] for i in range(args.rows)]

    # results are not kept: a stage streams, and a list of 100k conversations mostly measures the GC
    t = time.perf_counter()
    for r in records:
        from_sft(r)
    t_parse = time.perf_counter() - t

    convs = [from_sft(r) for r in base]
    t = time.perf_counter()
    for i in range(args.rows):
        dumps_sft_line(to_sft(convs[i % len(convs)]))
    t_render = time.perf_counter() - t
    lines = [dumps_sft_line(to_sft(convs[i % len(convs)])) for i in range(args.rows)]
    assert [json.loads(x) for x in lines[: len(base)]] == base

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        size = path.stat().st_size
        t = time.perf_counter()
        with open(path, encoding="utf-8") as fh:
            n_json = sum(1 for line in fh if json.loads(line))
        t_json = time.perf_counter() - t
        t = time.perf_counter()
        n_read = sum(1 for _ in read_conversations(path))
        t_read = time.perf_counter() - t
    assert n_read == n_json == args.rows

    mb = size / 1e6
    print(f"rows: {args.rows:,} ({len(base)} samples repeated), JSONL {mb:.0f} MB")
    print(f"parse  {_rate(args.rows, t_parse)}")
    print(f"render {_rate(args.rows, t_render)}")
    print(f"read   {_rate(n_read, t_read)}  = {mb / t_read:.0f} MB/s")
    print(f"json   {_rate(n_json, t_json)}  (json.loads alone)")
    print(f"read / json.loads time: {t_read / t_json:.2f}x")


if __name__ == "__main__":
    main()
