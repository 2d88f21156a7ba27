"""Part of the former datagen/report.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.io import atomic_write, write_json_atomic
from datagen.stage import StageStats


def funnel_table(funnel: dict[str, Any]) -> str:
    """A Markdown table of the funnel: one row per step, with its top drop reasons."""
    rows = ["| step | in | kept | dropped | top reasons |", "|---|---:|---:|---:|---|"]
    for s in funnel.get("steps", []):
        reasons = sorted((s.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:4]
        why = ", ".join(f"{r} ({n})" for r, n in reasons) or ""
        rows.append(
            f"| {s['step']} | {s.get('in', 0)} | {s.get('kept', 0)} | {s.get('dropped', 0)} | {why} |"
        )
    rows.append(f"\nInput {funnel.get('input', 0)} -> kept {funnel.get('kept', 0)}.")
    return "\n".join(rows)


FORMAT_STEP = "format"
KEPT_FILE = "kept.jsonl"
REJECTED_FILE = "rejected.jsonl"
FUNNEL_JSON = "funnel.json"
FUNNEL_MD = "funnel.md"


@dataclass(slots=True)
class FunnelReport:
    """Counts per step: `input` rows in, `kept` rows out, and each step's StageStats in order.

    `funnel.json` shape: `{"input": N, "kept": N, "steps": [row, ...]}`, each row
    `StageStats.funnel_row()`: `{"step", "in", "kept", "dropped", "tagged", "reasons"}`, and for a
    filter step also `redacted` and `seconds`.
    """

    input: int = 0
    kept: int = 0
    steps: list[StageStats] = field(default_factory=list)

    def add_step(
        self,
        step: str | StageStats,
        *,
        in_: int | None = None,
        kept: int | None = None,
        dropped: int = 0,
        tagged: int = 0,
        reasons: dict[str, int] | None = None,
        seconds: float = 0.0,
    ) -> StageStats:
        """Append a step after the existing ones; its kept count becomes the report's final `kept`
        (and the first step's `in` the report's `input`). A step given by name (e.g. the local-model
        `moss_check`) gets `in_` = the current `kept` and `kept` = `in_ - dropped` by default."""
        if isinstance(step, StageStats):
            st = step
            if not self.steps:
                self.input = st.in_
        else:
            n_in = self.kept if in_ is None else in_
            st = StageStats(
                step,
                n_in,
                n_in - dropped if kept is None else kept,
                dropped,
                tagged,
                0,
                Counter(reasons or {}),
                seconds=seconds,
                detail=True,
            )
        self.steps.append(st)
        self.kept = st.kept
        return st

    def step(self, name: str) -> StageStats:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def __add__(self, other: FunnelReport) -> FunnelReport:
        """Sum two shards' reports (same steps in the same order; the `format` step, listed only
        where it rejected rows, counts as passing every row where it is not listed)."""
        a, b = self.steps, other.steps
        if any(s.name == FORMAT_STEP for s in (*a, *b)):
            a, b = self._with_format_step(), other._with_format_step()
        if [s.name for s in a] != [s.name for s in b]:
            raise ValueError("cannot add funnels with different steps")
        return FunnelReport(
            self.input + other.input, self.kept + other.kept, [x + y for x, y in zip(a, b, strict=True)]
        )

    def _with_format_step(self) -> list[StageStats]:
        if self.steps and self.steps[0].name == FORMAT_STEP:
            return self.steps
        return [StageStats(FORMAT_STEP, self.input, self.input, detail=True), *self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "kept": self.kept, "steps": [s.funnel_row() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FunnelReport:
        return cls(
            d.get("input", 0), d.get("kept", 0), [StageStats.from_funnel_row(s) for s in d.get("steps", [])]
        )

    @classmethod
    def read(cls, path: str | Path) -> FunnelReport:
        """Read a funnel.json (or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / FUNNEL_JSON
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def to_markdown(self) -> str:
        """A readable table: one line per step, then its reasons indented below it."""
        pct = lambda n, d: f"{100 * n / d:.1f}%" if d else "-"  # noqa: E731
        lines = [
            f"Input: {self.input:,} conversations; kept {self.kept:,} ({pct(self.kept, self.input)}).",
            "",
            "| step / reason | in | kept | dropped | tagged | redacted | kept % | rows |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in self.steps:
            lines.append(
                f"| {s.name} | {s.in_:,} | {s.kept:,} | {s.dropped:,} | {s.tagged:,} | {s.redacted:,} | "
                f"{pct(s.kept, s.in_)} | |"
            )
            for reason, n in sorted(s.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"| &nbsp;&nbsp;↳ {reason} | | | | | | | {n:,} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        """Write funnel.json and funnel.md into out_dir (atomically)."""
        out_dir = Path(out_dir)
        write_json_atomic(out_dir / FUNNEL_JSON, self.to_dict())
        with atomic_write(out_dir / FUNNEL_MD) as fh:
            fh.write(self.to_markdown())


# ------------------------------------------------------------------------------------------ body


def _md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def funnel_markdown(funnel: dict[str, Any] | None) -> str:
    """The run's funnel as a Markdown table (step, in, kept, dropped, tagged, kept share, reasons)."""
    if not funnel or not funnel.get("steps"):
        return (
            "**Funnel unknown.** This dataset was published from a plain conversations file, not a "
            "datagen run directory, so the steps that produced and filtered it are not recorded here."
        )
    rows = []
    for step in funnel["steps"]:
        n_in, kept = int(step.get("in", 0)), int(step.get("kept", 0))
        reasons = sorted((step.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        why = ", ".join(f"{r} ({n:,})" for r, n in reasons[:5])
        if len(reasons) > 5:
            why += f", {len(reasons) - 5} more"
        rows.append(
            [
                step.get("step", "?"),
                n_in,
                kept,
                int(step.get("dropped", 0)),
                int(step.get("tagged", 0)),
                _pct(kept, n_in),
                why,
            ]
        )
    table = _md_table(
        ["step", "in", "kept", "dropped", "tagged", "kept share", "drop reasons"], rows, "lrrrrrl"
    )
    n_in, kept = int(funnel.get("input", 0)), int(funnel.get("kept", 0))
    return f"{table}\n\nOverall: {n_in:,} in, {kept:,} kept ({_pct(kept, n_in)})."
