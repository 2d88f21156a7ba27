"""Part of the former datagen/generate/seeds.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datagen.seeds.record import Seed

# ---------------------------------------------------------------------------------------------------
# Stats, dedup, sampling


def seed_stats(seeds: Sequence[Seed]) -> dict[str, Any]:
    """Counts per category x language x plugins, per language, per plugin, and the length
    distribution (characters) overall and per language."""

    def lengths(xs: list[int]) -> dict[str, float]:
        if not xs:
            return {"count": 0}
        xs = sorted(xs)
        q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
        return {
            "count": len(xs),
            "min": xs[0],
            "p25": q[0],
            "median": q[1],
            "p75": q[2],
            "max": xs[-1],
            "mean": round(statistics.fmean(xs), 1),
        }

    cells = Counter("|".join(s.cell) for s in seeds)
    by_lang: dict[str, list[int]] = {}
    for s in seeds:
        by_lang.setdefault(s.language or "-", []).append(len(s.text))
    return {
        "total": len(seeds),
        "languages": dict(Counter(s.language or "-" for s in seeds).most_common()),
        "categories": dict(Counter(s.category or "-" for s in seeds).most_common()),
        "plugins": dict(Counter(p for s in seeds for p in s.plugins).most_common()),
        "cells": {k: cells[k] for k in sorted(cells)},
        "length": lengths([len(s.text) for s in seeds]),
        "length_by_language": {k: lengths(v) for k, v in sorted(by_lang.items())},
    }


def format_stats(stats: Mapping[str, Any]) -> str:
    """`seed_stats` as a table: one row per category, one column per language, plugins split out."""
    langs = sorted(stats["languages"])
    rows: dict[str, Counter] = {}
    for key, n in stats["cells"].items():
        cat, lang, plugins = key.split("|")
        name = cat if plugins == "-" else f"{cat} [{plugins}]"
        rows.setdefault(name, Counter())[lang] += n
    width = max([len("category")] + [len(r) for r in rows]) + 2
    out = ["category".ljust(width) + "".join(lang.rjust(7) for lang in langs) + "total".rjust(8)]
    for name in sorted(rows):
        c = rows[name]
        out.append(
            name.ljust(width)
            + "".join(str(c[lang]).rjust(7) for lang in langs)
            + str(sum(c.values())).rjust(8)
        )
    out.append(
        "total".ljust(width)
        + "".join(str(stats["languages"][lang]).rjust(7) for lang in langs)
        + str(stats["total"]).rjust(8)
    )
    if stats["plugins"]:
        out.append("plugins: " + ", ".join(f"{k} {v}" for k, v in stats["plugins"].items()))
    for lang, d in stats["length_by_language"].items():
        if d["count"]:
            out.append(
                f"length ({lang}, chars): min {d['min']}, median {d['median']:g}, "
                f"p75 {d['p75']:g}, max {d['max']}, mean {d['mean']}"
            )
    return "\n".join(out)


@dataclass(slots=True)
class DedupResult:
    """Seeds kept (first occurrence wins) and (dropped seed, kind, id it duplicates)."""

    kept: list[Seed]
    dropped: list[tuple[Seed, str, str]]


def dedup_seeds(seeds: Iterable[Seed], *, near: bool = False, threshold: float | None = None) -> DedupResult:
    """Drop exact duplicates (same text after `datagen.text.exact.normalize_text`: case,
    punctuation, width and whitespace folded) and, with `near=True`, near-duplicates found by
    `datagen.text.neardup.NearDupIndex("prompt")` (MinHash LSH; `threshold` is its Jaccard)."""
    from datagen.text.exact import normalize_text

    index = None
    if near:
        from datagen.text.neardup import NearDupIndex

        index = NearDupIndex("prompt", threshold)
    first: dict[str, str] = {}
    kept: list[Seed] = []
    dropped: list[tuple[Seed, str, str]] = []
    for s in seeds:
        key = normalize_text(s.text)
        if key in first:
            dropped.append((s, "exact", first[key]))
            continue
        first[key] = s.id
        if index is not None:
            dup = index.check_and_add(s.id, s.text)
            if dup is not None:
                dropped.append((s, "near", dup))
                continue
        kept.append(s)
    return DedupResult(kept, dropped)


def sample_balanced(seeds: Sequence[Seed], *, per_cell: int, seed: int = 0) -> list[Seed]:
    """At most `per_cell` seeds from each (category, language, plugins) cell, chosen at random
    but deterministically for a given `seed` (and independent of the input order); the result
    keeps the input order."""
    if per_cell < 1:
        raise ValueError("per_cell must be at least 1")
    cells: dict[tuple[str, str, str], list[Seed]] = {}
    for s in seeds:
        cells.setdefault(s.cell, []).append(s)
    chosen: set[str] = set()
    for cell, members in cells.items():
        members = sorted(members, key=lambda s: s.id)
        rng = random.Random(f"{seed}|{'|'.join(cell)}")
        rng.shuffle(members)
        chosen.update(s.id for s in members[:per_cell])
    return [s for s in seeds if s.id in chosen]
