"""A run's funnel as tables and a picture.

The funnel is a list of steps, each `{"step", "in", "kept", "dropped", "tagged", "reasons"}`; the
whole-run funnel chains expansion, dialogue generation, every filter step and the local-model check.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def plot_run(
    funnel: dict[str, Any],
    losses: list[float],
    out_path: Path,
    *,
    cutoff: float | None = None,
    dropped_losses: list[float] | None = None,
) -> Path:
    """Draw the funnel and, when the local model scored the rows, the distribution of their losses
    (kept and dropped, with the cutoff), into one PNG.

    Prompt stages (seeds, expansion) count prompts and dialogue stages count dialogues, so they get
    a panel each rather than one axis where the seed count dwarfs everything else.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = funnel.get("steps", [])
    prompt_steps = [s for s in steps if s["step"] in ("seeds", "expand")]
    dialogue_steps = [s for s in steps if s["step"] not in ("seeds", "expand")]
    dropped_losses = dropped_losses or []
    has_scores = bool(losses or dropped_losses)
    panels = [p for p in (prompt_steps, dialogue_steps) if p]
    ncols = len(panels) + (1 if has_scores else 0)
    height = 0.42 * max(len(dialogue_steps), 4) + 2.2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols + 1.5, height), squeeze=False)
    titles = {id(prompt_steps): "Prompts", id(dialogue_steps): "Dialogues"}
    for ax, panel in zip(axes[0], panels, strict=False):
        names = [s["step"] for s in panel][::-1]
        kept = [s.get("kept", 0) for s in panel][::-1]
        dropped = [s.get("dropped", 0) for s in panel][::-1]
        y = list(range(len(names)))
        ax.barh(y, kept, color="#4c72b0", label="kept")
        ax.barh(y, dropped, left=kept, color="#dd8452", label="dropped")
        ax.set_yticks(y, names)
        ax.set_xlabel("rows")
        ax.set_title(titles[id(panel)])
        for i, (k, d) in enumerate(zip(kept, dropped, strict=True)):
            ax.text(k + d, i, f" {k}" + (f" (-{d})" if d else ""), va="center", fontsize=8)
        ax.legend(loc="best", fontsize=8)
    if has_scores:
        ax = axes[0][-1]
        finite = [x for x in losses if math.isfinite(x)]
        gone = [x for x in dropped_losses if math.isfinite(x)]
        bins = min(40, max(8, (len(finite) + len(gone)) // 3))
        ax.hist(
            [finite, gone] if gone else [finite],
            bins=bins,
            stacked=True,
            color=["#55a868", "#c44e52"][: 2 if gone else 1],
            label=["kept", "dropped"][: 2 if gone else 1],
        )
        if cutoff is not None and math.isfinite(cutoff):
            ax.axvline(cutoff, color="black", linestyle="--", linewidth=1)
            ax.text(cutoff, ax.get_ylim()[1] * 0.95, f" cutoff {cutoff:.2f}", fontsize=8, va="top")
        ax.set_xlabel("local-model loss on assistant tokens")
        ax.set_ylabel("dialogues")
        ax.set_title(f"Scores ({len(finite) + len(gone)} dialogues)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{funnel.get('input', 0)} seed prompts in, {funnel.get('kept', 0)} dialogues kept")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
