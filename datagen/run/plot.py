"""A run's funnel as tables and a picture.

The funnel is a list of steps, each `{"step", "in", "kept", "dropped", "tagged", "reasons"}`; the
whole-run funnel chains expansion, dialogue generation, every filter step and the local-model check.
A run with a judge step also has `funnel["judge"]` (`datagen.filters.judge_report`: score counts per
cell and criterion), drawn as a panel of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: Colours of the judge's scores 1..5, red to green.
_SCORE_COLOURS = ("#c44e52", "#dd8452", "#ccb974", "#8fbf7f", "#55a868")
#: Cells drawn in the judge panel at most (the most judged ones).
MAX_JUDGE_CELLS = 40
JUDGE_TITLE = "Judge scores per cell"


def plot_run(
    funnel: dict[str, Any],
    losses: list[float],
    out_path: Path,
    *,
    cutoff: float | None = None,
    dropped_losses: list[float] | None = None,
) -> Path:
    """Draw `funnel_figure` into one PNG at out_path."""
    import matplotlib.pyplot as plt

    fig = funnel_figure(funnel, losses, cutoff=cutoff, dropped_losses=dropped_losses)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=110)
    finally:
        plt.close(fig)
    return out_path


def funnel_figure(
    funnel: dict[str, Any],
    losses: list[float],
    *,
    cutoff: float | None = None,
    dropped_losses: list[float] | None = None,
) -> Any:
    """The funnel and, when the local model scored the rows, the distribution of their losses
    (kept and dropped, with the cutoff); when the run had a judge (`funnel["judge"]`), a panel below
    with each cell's judge scores. A matplotlib Figure (Agg backend); the caller closes it.

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
    ncols = max(1, len(panels) + (1 if has_scores else 0))
    height = 0.42 * max(len(dialogue_steps), 4) + 2.2
    cells = _judge_cells(funnel.get("judge"))
    judge_height = 0.32 * max(len(cells), 3) + 1.6 if cells else 0.0
    fig = plt.figure(figsize=(5.2 * ncols + 1.5, height + judge_height))
    # The judge panel spans the whole width: cell names are long and there may be a dozen of them.
    grid = (
        fig.add_gridspec(2, ncols, height_ratios=[height, judge_height])
        if cells
        else fig.add_gridspec(1, ncols)
    )
    axes = [fig.add_subplot(grid[0, i]) for i in range(ncols)]
    titles = {id(prompt_steps): "Prompts", id(dialogue_steps): "Dialogues"}
    for ax, panel in zip(axes, panels, strict=False):
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
        ax = axes[-1]
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
    if cells:
        _judge_panel(fig.add_subplot(grid[1, :]), cells)
    fig.suptitle(f"{funnel.get('input', 0)} seed prompts in, {funnel.get('kept', 0)} dialogues kept")
    fig.tight_layout()
    return fig


def _judge_cells(judge: dict[str, Any] | None) -> list[tuple[str, int, int, list[int]]]:
    """(cell, judged, kept, counts of the scores 1..5 over every criterion) of the most judged cells,
    by name."""
    out = []
    for cell, v in ((judge or {}).get("cells") or {}).items():
        counts = [0] * 5
        for d in (v.get("criteria") or {}).values():
            for s in range(5):
                counts[s] += int((d.get("hist") or {}).get(str(s + 1), 0))
        if sum(counts):
            out.append((cell, int(v.get("judged", 0)), int(v.get("kept", 0)), counts))
    out = sorted(out, key=lambda c: -c[1])[:MAX_JUDGE_CELLS]
    return sorted(out, key=lambda c: c[0])


def _judge_panel(ax: Any, cells: list[tuple[str, int, int, list[int]]]) -> None:
    """One stacked bar a cell: the share of each judge score among its criteria's dialogue scores,
    with the cell's judged and kept rows and mean score beside it."""
    y = list(range(len(cells)))[::-1]  # the first cell at the top
    left = [0.0] * len(cells)
    for s in range(5):
        share = [c[3][s] / sum(c[3]) for c in cells]
        ax.barh(y, share, left=left, color=_SCORE_COLOURS[s], label=str(s + 1))
        left = [a + b for a, b in zip(left, share, strict=True)]
    for i, (_, judged, kept, counts) in zip(y, cells, strict=True):
        mean = sum((s + 1) * n for s, n in enumerate(counts)) / sum(counts)
        ax.text(1.01, i, f"{judged} judged, {kept} kept, mean {mean:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, [c[0] for c in cells], fontsize=8)
    ax.set_ylim(-0.6, len(cells) - 0.4)
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("share of the cell's judge scores (the dialogue score of every criterion)")
    ax.set_title(JUDGE_TITLE)
    ax.legend(
        title="score",
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=5,
        fontsize=8,
        title_fontsize=8,
        frameon=False,
    )
