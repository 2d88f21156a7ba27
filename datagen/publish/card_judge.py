"""The card's `Judge scores` section: what the run's `judge` filter step recorded (its `judge.json`,
see `datagen.filters.judge_report`), written for a dataset's reader: the judge model(s) and rubric
versions, the scale, each cell's score distribution, what the judge dropped and why, the
score/length correlation and the second judge's agreement. Every number is read from the report,
never recomputed; a run without a judge step gets no section.

    report = read_judge_report(run_dir, manifest)      # None: no judge step in the run's config
    text = judge_section(report, manifest["config"])
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.funnel import _md_table
from datagen.paths import portable

#: Where a run keeps its judge report: a run in waves sums every wave's at the top, a plain run has
#: the filter stage's.
QUOTA_REPORT = "judge.json"
FILTER_REPORT = "filtered/judge.json"
_SCORES = ("1", "2", "3", "4", "5")
#: The anchored scale every shipped rubric uses, in one line (each rubric file words it per criterion).
SCALE = (
    "each criterion is scored on an anchored 1-5 scale (5 fully meets it, 4 a small gap, 3 one clear "
    "gap of some importance, 2 mostly misses it, 1 fails it or does harm); every level has a written "
    "description and examples short and long, so that length alone earns nothing"
)
_WHY = {
    "judge_unparseable": "the judge's reply was not the asked JSON, asked twice; recorded, never scored",
    "judge_unavailable": "the judge could not be reached (rate limit, server error, timeout)",
    "judge_error": "the judge refused the call",
}


def judge_step(config: dict[str, Any] | None, step: str = "judge") -> dict[str, Any] | None:
    """The settings of the enabled filter step named `step` in a run config as written (`filters.steps`
    as a list or a mapping), or None when the config has no such step, or has it switched off."""
    steps = ((config or {}).get("filters") or {}).get("steps")
    found: Any = None
    if isinstance(steps, list):
        found = next((s for s in steps if isinstance(s, dict) and s.get("name") == step), None)
    elif isinstance(steps, dict) and step in steps:
        found = steps[step]
        found = {} if found is None or found is True else found
    if not isinstance(found, dict) or found.get("enabled", True) is False:
        return None
    return found


def read_judge_report(run_dir: str | Path, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The judge report of a run directory, or None when the run has none to show: no manifest, no
    enabled judge step in its config (a report an earlier config left is not this run's), no report
    file, or a report that judged no row. Raises InputError naming the file when it is not JSON."""
    config = (manifest or {}).get("config") or {}
    path = Path(run_dir) / (QUOTA_REPORT if config.get("targets") is not None else FILTER_REPORT)
    if not manifest or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    if not isinstance(report, dict) or not report.get("judged"):
        return None
    if judge_step(config, str(report.get("step") or "judge")) is None:
        return None
    return report


def _default_min_score() -> int:
    from datagen.filters.judge import JudgeFilter

    return int(inspect.signature(JudgeFilter.__init__).parameters["min_score"].default)


def _thresholds(settings: dict[str, Any]) -> str:
    base = settings.get("min_score", _default_min_score())
    own = settings.get("min_scores") or {}
    text = f"The lowest score kept is {base} for every criterion"
    if isinstance(own, dict) and own:
        text += " (" + ", ".join(f"{c}: {v}" for c, v in sorted(own.items())) + ")"
    text += ", for the dialogue score and for each graded turn's"
    if settings.get("policy") == "tag":
        text += "; the step's policy is `tag`, so rows under it were kept with a tag, not dropped"
    return text


def _models(counts: dict[str, int]) -> str:
    return ", ".join(f"`{portable(m)}` ({n:,} judgments)" for m, n in counts.items()) or "-"


def _drops(report: dict[str, Any], settings: dict[str, Any], row: dict[str, Any] | None) -> list[str]:
    """What the step dropped (or tagged) and why: the funnel's row of the step where there is one
    (it counts tagged rows too), else the report's drop reasons."""
    reasons: dict[str, int] = dict((row or {}).get("reasons") or report.get("reasons") or {})
    dropped = int(row["dropped"]) if row else sum((report.get("reasons") or {}).values())
    tagged = int((row or {}).get("tagged", 0))
    scored = f"{report['judged']:,} got scores ({report['kept']:,} of them kept)"
    if row:
        head = (
            f"{int(row.get('in', 0)):,} dialogues reached the judge step (before the later steps); {scored}"
        )
    else:
        head = f"The judge gave {scored}"
    out = [
        head
        + f"; it dropped {dropped:,}"
        + (f" and tagged {tagged:,}" if tagged else "")
        + ". "
        + _thresholds(settings)
        + "."
    ]
    if reasons:
        out.append("")
        rows = []
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            criterion = reason.removeprefix("low_")
            why = _WHY.get(reason) or (
                f"a `{criterion}` score under the threshold" if reason != criterion else ""
            )
            rows.append([f"`{reason}`", n, why])
        out.append(_md_table(["tagged as" if tagged else "dropped as", "dialogues", "why"], rows, "lrl"))
    out.append("")
    out.append(
        f"Replies that never parsed: {int(reasons.get('judge_unparseable', 0)):,} dialogues (the judge was "
        "asked twice; the reply is recorded as the row's evidence and no score is guessed)."
    )
    return out


def _cells_table(report: dict[str, Any]) -> str:
    rows: list[list[Any]] = []

    def group(label: str, judged: int, kept: int, criteria: dict[str, Any]) -> None:
        for i, (c, d) in enumerate(criteria.items()):
            head = [label, judged, kept] if i == 0 else ["", "", ""]
            mean = "-" if d.get("mean") is None else f"{d['mean']:.2f}"
            rows.append([*head, c, d.get("n", 0), mean, *(d["hist"].get(s, 0) for s in _SCORES)])

    for cell, v in report.get("cells", {}).items():
        group(f"`{cell}`", v["judged"], v["kept"], v["criteria"])
    group("**all cells**", report["judged"], report["kept"], report.get("criteria", {}))
    return _md_table(["cell", "judged", "kept", "criterion", "scored", "mean", *_SCORES], rows, "lrrlrrrrrrr")


def _length(report: dict[str, Any]) -> str:
    parts = []
    for c, d in (report.get("length_correlation") or {}).items():
        rho = "n/a (one score only)" if d.get("spearman") is None else f"{d['spearman']:+.2f}"
        parts.append(f"{c} {rho} over {d['turns']:,} turns")
    return (
        "Score/length correlation (Spearman's rho between a turn's score and its answer's length in "
        "characters; near 0: the judge does not reward length): " + ("; ".join(parts) or "-") + "."
    )


def _second(second: dict[str, Any]) -> list[str]:
    rows = [
        [
            c,
            a["n"],
            f"{a['exact']:.1%}",
            f"{a['within_1']:.1%}",
            "-" if a["kappa"] is None else f"{a['kappa']:.2f}",
        ]
        for c, a in second.get("agreement", {}).items()
    ]
    return [
        f"A second judge, {_models(second.get('models', {}))}, graded the same dialogues again for this "
        "agreement figure only (its scores decide nothing), compared score by score (dialogues and turns):",
        "",
        _md_table(
            ["criterion", "score pairs", "same score", "within 1", "weighted kappa"],
            rows,
        ),
    ]


def judge_section(
    report: dict[str, Any], config: dict[str, Any] | None, funnel: dict[str, Any] | None = None
) -> str:
    """The card's `Judge scores` section for a report `read_judge_report` returned; `funnel` (the
    run's) gives the step's dropped and tagged counts."""
    step = str(report.get("step") or "judge")
    settings = judge_step(config, step) or {}
    row = next((r for r in (funnel or {}).get("steps", []) if r.get("step") == step), None)
    rubrics = ", ".join(f"`{r}`" for r in report.get("rubrics", [])) or "-"
    out = [
        f"An LLM judge (the run's `{step}` filter step) graded every dialogue and assistant turn. Judge "
        f"model: {_models(report.get('models', {}))}. Rubrics: {rubrics} (versioned prompt files in "
        "datagen's `datagen/filters/rubrics/`).",
        "",
        f"Scale: {SCALE}.",
        "",
    ]
    out += _drops(report, settings, row)
    out += [
        "",
        "Scores per cell (`category/language/kind/plugins`) and criterion: the dialogue scores of every "
        "judged dialogue, kept or dropped (`scored`: dialogues with that criterion; `1`-`5`: how many got "
        "each score):",
        "",
        _cells_table(report),
        "",
        _length(report),
    ]
    if report.get("second"):
        out += ["", *_second(report["second"])]
    out += [
        "",
        f"Each published row keeps its judge scores in `scores` (`{step}_<criterion>`: the dialogue score, "
        f"`{step}_min_<criterion>`: its weakest graded turn) and the model, rubric and one-sentence reasons in "
        f'`tags` (`"{step}.rubrics"`).',
    ]
    return "\n".join(out)
