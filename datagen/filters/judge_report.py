"""The judge step's report, rebuilt from the rows it wrote (kept and rejected rows both carry their
scores): score distributions overall and per cell, the score/length correlation (a judge that
rewards length shows a clearly positive one), the second judge's agreement, and the failures.

    report = judge_report_from_dir(run_dir / "filtered")    # kept.jsonl + rejected.jsonl
    write_judge_report(report, run_dir / "filtered")         # judge.json + judge.md

A cell is `category/language/kind/plugins` (`-` for a missing part; plugins joined by `+`), the
unit quotas count in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from datagen.funnel import KEPT_FILE, REJECTED_FILE
from datagen.io import atomic_write, iter_json_lines, write_json_atomic
from datagen.record import Conversation

JUDGE_JSON = "judge.json"
JUDGE_MD = "judge.md"
_SCORES = range(1, 6)


def cell_key(category: str | None, language: str | None, plugins: Iterable[str] = ()) -> str:
    """`category/language/kind/plugins` (`-` for a missing part, plugins sorted and joined by `+`)."""
    names = sorted(set(plugins))
    return f"{category or '-'}/{language or '-'}/{'plugin' if names else 'hhh'}/{'+'.join(names) or '-'}"


def cell_of(conv: Conversation) -> str:
    """The quota cell of a row: `category/language/kind/plugins`."""
    return cell_key(conv.category, conv.language, conv.plugins)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse] if len(values) < len(x) else ranks


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman's rank correlation, or None with fewer than 3 pairs or a constant side."""
    a, b = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def weighted_kappa(a: list[int], b: list[int]) -> float | None:
    """Cohen's kappa with quadratic weights on the 1-5 scale (1 = the same scores, 0 = chance)."""
    if not a:
        return None
    k = len(_SCORES)
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[x - 1, y - 1] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    denom = (w * expected).sum()
    return None if denom == 0 else float(1 - (w * observed).sum() / denom)


class _Dist:
    def __init__(self) -> None:
        self.hist: Counter[int] = Counter()

    def add(self, score: float) -> None:
        self.hist[int(score)] += 1

    def to_dict(self) -> dict[str, Any]:
        n = sum(self.hist.values())
        mean = sum(s * c for s, c in self.hist.items()) / n if n else None
        return {
            "n": n,
            "mean": None if mean is None else round(mean, 3),
            "hist": {str(s): self.hist.get(s, 0) for s in _SCORES},
        }


def judge_report(
    kept: Iterable[Conversation],
    rejected: Iterable[tuple[Conversation, dict[str, Any]]],
    *,
    step: str = "judge",
) -> dict[str, Any]:
    """The report of one judge step over the rows it saw (see the module docstring). `rejected`
    pairs each rejected row with its `rejected` record (`step`, `reason`)."""
    overall: dict[str, _Dist] = {}
    cells: dict[str, dict[str, Any]] = {}
    lengths: dict[str, tuple[list[float], list[float]]] = {}
    pairs: dict[str, tuple[list[int], list[int]]] = {}
    models: Counter[str] = Counter()
    second_models: Counter[str] = Counter()
    rubrics: set[str] = set()
    reasons: Counter[str] = Counter()
    judged = kept_n = 0

    def add(conv: Conversation, is_kept: bool) -> None:
        nonlocal judged, kept_n
        marks = conv.tags.get(f"{step}.rubrics")
        if not isinstance(marks, dict) or not marks:
            return
        judged += 1
        kept_n += is_kept
        cell = cells.setdefault(cell_of(conv), {"judged": 0, "kept": 0, "criteria": {}})
        cell["judged"] += 1
        cell["kept"] += is_kept
        for rid, j in marks.items():
            rubrics.add(rid)
            models[j.get("model") or "?"] += 1
            for c, m in j["dialogue"].items():
                overall.setdefault(c, _Dist()).add(m["score"])
                cell["criteria"].setdefault(c, _Dist()).add(m["score"])
            for t in j["turns"]:
                answer = conv.turns[t["turn"] - 1].assistant if 0 < t["turn"] <= len(conv.turns) else ""
                for c, m in t.items():
                    if c != "turn":
                        xs, ys = lengths.setdefault(c, ([], []))
                        xs.append(m["score"])
                        ys.append(len(answer))
            other = (conv.tags.get(f"{step}.second") or {}).get(rid)
            if other:
                second_models[other.get("model") or "?"] += 1
                for c, m in j["dialogue"].items():
                    if c in other["dialogue"]:
                        a, b = pairs.setdefault(c, ([], []))
                        a.append(m["score"])
                        b.append(other["dialogue"][c]["score"])
                theirs = {t["turn"]: t for t in other["turns"]}
                for t in j["turns"]:
                    for c, m in t.items():
                        if c != "turn" and c in theirs.get(t["turn"], {}):
                            a, b = pairs.setdefault(c, ([], []))
                            a.append(m["score"])
                            b.append(theirs[t["turn"]][c]["score"])

    for conv in kept:
        add(conv, True)
    for conv, rej in rejected:
        if rej.get("step") == step:
            reasons[str(rej.get("reason"))] += 1
        add(conv, False)
    agreement = {}
    for c, (a, b) in sorted(pairs.items()):
        diff = np.abs(np.asarray(a) - np.asarray(b))
        kappa = weighted_kappa(a, b)
        agreement[c] = {
            "n": len(a),
            "exact": round(float((diff == 0).mean()), 3),
            "within_1": round(float((diff <= 1).mean()), 3),
            "kappa": None if kappa is None else round(kappa, 3),
        }
    length = {}
    for c, (xs, ys) in sorted(lengths.items()):
        rho = spearman(xs, ys)
        length[c] = {"turns": len(xs), "spearman": None if rho is None else round(rho, 3)}
    return {
        "step": step,
        "rubrics": sorted(rubrics),
        "models": dict(models),
        "judged": judged,
        "kept": kept_n,
        "reasons": dict(reasons.most_common()),
        "criteria": {c: d.to_dict() for c, d in sorted(overall.items())},
        "cells": {
            k: {
                "judged": v["judged"],
                "kept": v["kept"],
                "criteria": {c: d.to_dict() for c, d in sorted(v["criteria"].items())},
            }
            for k, v in sorted(cells.items())
        },
        "length_correlation": length,
        "second": {"models": dict(second_models), "agreement": agreement} if second_models else None,
    }


def judge_report_from_dir(folder: str | Path, *, step: str = "judge") -> dict[str, Any]:
    """`judge_report` over a filter output folder's kept.jsonl and rejected.jsonl."""
    folder = Path(folder)

    def rows(name: str) -> Iterable[dict[str, Any]]:
        path = folder / name
        if path.exists():
            for _, obj in iter_json_lines(path):
                yield obj

    kept = (Conversation.from_dict(d) for d in rows(KEPT_FILE))
    rejected = ((Conversation.from_dict(d), d.get("rejected") or {}) for d in rows(REJECTED_FILE))
    return judge_report(kept, rejected, step=step)


def _hist(d: dict[str, Any]) -> str:
    return " ".join(f"{s}:{d['hist'][str(s)]}" for s in _SCORES)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: criteria, cells, length correlation, agreement, failures."""
    lines = [
        f"Judge `{report['step']}`: rubrics {', '.join(report['rubrics']) or '-'}; models "
        + (", ".join(f"{m} ({n})" for m, n in report["models"].items()) or "-")
        + f"; {report['judged']:,} rows judged, {report['kept']:,} kept.",
        "",
        "| criterion | rows | mean | scores 1-5 |",
        "| --- | ---: | ---: | --- |",
    ]
    for c, d in report["criteria"].items():
        lines.append(f"| {c} | {d['n']:,} | {d['mean']} | {_hist(d)} |")
    lines += [
        "",
        "| cell | judged | kept | " + " | ".join(report["criteria"]) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(report["criteria"]),
    ]
    for cell, v in report["cells"].items():
        means = [str((v["criteria"].get(c) or {}).get("mean", "-")) for c in report["criteria"]]
        lines.append(f"| {cell} | {v['judged']:,} | {v['kept']:,} | " + " | ".join(means) + " |")
    lines += [
        "",
        "Score/length correlation (Spearman, turn score vs answer characters; near 0 means no length bias):",
        "",
    ]
    for c, d in report["length_correlation"].items():
        lines.append(f"- {c}: {d['spearman']} over {d['turns']:,} turns")
    if report.get("second"):
        lines += [
            "",
            "Second judge (" + ", ".join(f"{m} ({n})" for m, n in report["second"]["models"].items()) + "):",
            "",
            "| criterion | pairs | exact | within 1 | weighted kappa |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for c, a in report["second"]["agreement"].items():
            lines.append(f"| {c} | {a['n']:,} | {a['exact']:.1%} | {a['within_1']:.1%} | {a['kappa']} |")
    if report["reasons"]:
        lines += ["", "Dropped: " + ", ".join(f"{r} ({n})" for r, n in report["reasons"].items()) + "."]
    return "\n".join(lines) + "\n"


def add_to_funnel(report: dict[str, Any], funnel: dict[str, Any], table: str) -> str:
    """Put the report's per-cell distributions into a run's `funnel` (its `judge` entry) and return
    the funnel's markdown `table` with the report after it."""
    funnel["judge"] = {k: report[k] for k in ("rubrics", "models", "criteria", "cells", "length_correlation")}
    return table + "\n" + report_markdown(report)


def write_judge_report(report: dict[str, Any], folder: str | Path) -> None:
    """Write judge.json and judge.md into folder (atomically)."""
    folder = Path(folder)
    write_json_atomic(folder / JUDGE_JSON, report)
    with atomic_write(folder / JUDGE_MD) as fh:
        fh.write(report_markdown(report))
