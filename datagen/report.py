"""A run's funnel as tables and a picture.

The funnel is a list of steps, each `{"step", "in", "kept", "dropped", "tagged", "reasons"}`; the
whole-run funnel chains expansion, dialogue generation, every filter step and the local-model check.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def funnel_table(funnel: dict[str, Any]) -> str:
    """A Markdown table of the funnel: one row per step, with its top drop reasons."""
    rows = ["| step | in | kept | dropped | top reasons |", "|---|---:|---:|---:|---|"]
    for s in funnel.get("steps", []):
        reasons = sorted((s.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:4]
        why = ", ".join(f"{r} ({n})" for r, n in reasons) or ""
        rows.append(f"| {s['step']} | {s.get('in', 0)} | {s.get('kept', 0)} | {s.get('dropped', 0)} | {why} |")
    rows.append(f"\nInput {funnel.get('input', 0)} -> kept {funnel.get('kept', 0)}.")
    return "\n".join(rows)


def plot_run(funnel: dict[str, Any], losses: list[float], out_path: Path) -> Path:
    """Draw the funnel (kept and dropped per step) and, when the local model scored the rows, the
    distribution of their losses, into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = funnel.get("steps", [])
    has_scores = bool(losses)
    fig, axes = plt.subplots(1, 2 if has_scores else 1, figsize=(13 if has_scores else 8, 0.5 * len(steps) + 2.5))
    ax = axes[0] if has_scores else axes
    names = [s["step"] for s in steps][::-1]
    kept = [s.get("kept", 0) for s in steps][::-1]
    dropped = [s.get("dropped", 0) for s in steps][::-1]
    y = range(len(names))
    ax.barh(y, kept, color="#4c72b0", label="kept")
    ax.barh(y, dropped, left=kept, color="#dd8452", label="dropped")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("rows")
    ax.set_title(f"Funnel: {funnel.get('input', 0)} in, {funnel.get('kept', 0)} kept")
    for i, (k, d) in enumerate(zip(kept, dropped, strict=True)):
        ax.text(k + d, i, f" {k}" + (f" (-{d})" if d else ""), va="center", fontsize=8)
    ax.legend(loc="lower right")
    if has_scores:
        finite = [x for x in losses if math.isfinite(x)]
        axes[1].hist(finite, bins=min(40, max(5, len(finite) // 3)), color="#55a868")
        axes[1].set_xlabel("local-model loss on assistant tokens")
        axes[1].set_ylabel("dialogues")
        axes[1].set_title(f"Score distribution ({len(finite)} dialogues)")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
