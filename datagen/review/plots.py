"""The funnel and score plots as geometry for the SVG templates (drawn on the server: no chart
library in the browser). Prompt steps and dialogue steps get a panel each, as in `funnel.png`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROMPT_STEPS = ("seeds", "expand")
BAR_H = 22
LABEL_W = 150
PLOT_W = 420


@dataclass(slots=True)
class Bar:
    step: str
    y: int
    kept: int
    dropped: int
    kept_w: float
    dropped_w: float


@dataclass(slots=True)
class Panel:
    title: str
    height: int
    bars: list[Bar] = field(default_factory=list)


def funnel_panels(steps: list[dict[str, Any]]) -> list[Panel]:
    """One panel of bars per unit (prompts, dialogues): kept and dropped, scaled to the panel's
    largest step."""
    groups = [
        ("Prompts", [s for s in steps if s.get("step") in PROMPT_STEPS]),
        ("Dialogues", [s for s in steps if s.get("step") not in PROMPT_STEPS]),
    ]
    panels = []
    for title, group in groups:
        if not group:
            continue
        top = max((int(s.get("kept", 0)) + int(s.get("dropped", 0)) for s in group), default=0) or 1
        panel = Panel(title, BAR_H * len(group) + 8)
        for i, s in enumerate(group):
            kept, dropped = int(s.get("kept", 0)), int(s.get("dropped", 0))
            panel.bars.append(
                Bar(
                    str(s.get("step")),
                    4 + i * BAR_H,
                    kept,
                    dropped,
                    PLOT_W * kept / top,
                    PLOT_W * dropped / top,
                )
            )
        panels.append(panel)
    return panels


@dataclass(slots=True)
class Bin:
    x: float
    w: float
    lo: float
    hi: float
    counts: dict[str, int]
    heights: dict[str, float]


@dataclass(slots=True)
class Histogram:
    bins: list[Bin]
    lo: float
    hi: float
    top: int
    cutoff_x: float | None
    width: int = 560
    height: int = 160


def histogram(
    binned: dict[str, Any] | None, *, cutoff: float | None = None, width: int = 560, height: int = 160
) -> Histogram | None:
    """Stacked bars of a score's bins by row status (`{"lo", "hi", "counts": {status: [n per bin]}}`,
    as the index stores them); None without values."""
    if not binned or not binned.get("counts"):
        return None
    lo, hi, by_status = float(binned["lo"]), float(binned["hi"]), binned["counts"]
    n = len(next(iter(by_status.values())))
    step = (hi - lo) / n
    counts = [{status: c[i] for status, c in by_status.items()} for i in range(n)]
    top = max(sum(c.values()) for c in counts) or 1
    w = width / n
    out = [
        Bin(i * w, w, lo + i * step, lo + (i + 1) * step, c, {k: height * x / top for k, x in c.items()})
        for i, c in enumerate(counts)
    ]
    cutoff_x = width * (cutoff - lo) / (hi - lo) if cutoff is not None and lo <= cutoff <= hi else None
    return Histogram(out, lo, hi, top, cutoff_x, width, height)
