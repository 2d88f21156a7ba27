"""Held-out evaluation of the turn language detector.

`data/language_heldout.jsonl` was written and labelled by someone other than the detector's author,
without reading the detector or its tuning set (`language_turns.jsonl`). Each line is
`{"text", "label", "variant", "kind"}`: `label` is what a careful human would say (ISO 639-1, or null
where no verdict is possible: code only, numbers, emoji, "ok"), `variant` is `zh-Hans` / `zh-Hant` for
Chinese written in one character set (null when no character tells them apart).

Scoring:
- accuracy: of the turns the detector gives a verdict, the share whose verdict equals the label (a
  verdict on a null-labelled turn is wrong);
- coverage: of the labelled turns, the share that get a verdict (abstaining is not an error);
- variant: of the turns labelled and detected `zh`, the share whose `detect_language_tag` is
  `zh-Hans` / `zh-Hant` / plain `zh` as labelled.

Run with `-s` to see the summary; a failure lists every miss as text, expected and got.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datagen.text.language import detect_language, detect_language_tag

DATA = Path(__file__).parent / "data" / "language_heldout.jsonl"
MIN_ACCURACY = 0.99
MIN_VARIANT_ACCURACY = 0.99
VARIANTS = {"zh-Hans", "zh-Hant", None}


@dataclass(slots=True)
class Row:
    line: int
    text: str
    label: str | None
    variant: str | None
    kind: str


@dataclass(slots=True, repr=False)
class Score:
    rows: int = 0
    labelled: int = 0
    verdicts: int = 0
    correct: int = 0
    covered: int = 0
    zh_checked: int = 0
    zh_variant_ok: int = 0
    misses: list[tuple[Row, str | None]] = field(default_factory=list)
    variant_misses: list[tuple[Row, str | None]] = field(default_factory=list)
    abstained: list[Row] = field(default_factory=list)
    by_label: Counter = field(default_factory=Counter)
    by_label_covered: Counter = field(default_factory=Counter)

    def __repr__(self) -> str:  # pytest shows fixture values in failures: keep it to one line
        return f"Score({self.correct}/{self.verdicts} right, {self.covered}/{self.labelled} covered)"

    @property
    def accuracy(self) -> float:
        return self.correct / self.verdicts if self.verdicts else 0.0

    @property
    def coverage(self) -> float:
        return self.covered / self.labelled if self.labelled else 0.0

    @property
    def variant_accuracy(self) -> float:
        return self.zh_variant_ok / self.zh_checked if self.zh_checked else 0.0


def load_rows() -> list[Row]:
    """The held-out turns, with their 1-based line numbers."""
    rows = []
    with DATA.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            d = json.loads(line)
            rows.append(Row(n, d["text"], d["label"], d["variant"], d["kind"]))
    return rows


def score(rows: list[Row]) -> Score:
    """Run the detector over rows and tally verdicts, misses and abstentions."""
    s = Score(rows=len(rows))
    for row in rows:
        got = detect_language(row.text)
        if row.label is not None:
            s.labelled += 1
            s.by_label[row.label] += 1
            if got is not None:
                s.covered += 1
                s.by_label_covered[row.label] += 1
            else:
                s.abstained.append(row)
        if got is None:
            continue
        s.verdicts += 1
        if got != row.label:
            s.misses.append((row, got))
            continue
        s.correct += 1
        if row.label == "zh":
            s.zh_checked += 1
            tag = detect_language_tag(row.text)
            if tag == (row.variant or "zh"):
                s.zh_variant_ok += 1
            else:
                s.variant_misses.append((row, tag))
    return s


def _show(text: str, width: int = 90) -> str:
    one_line = text.replace("\n", "⏎")
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def summary(s: Score) -> list[str]:
    """Accuracy, coverage and variant figures, one per line."""
    return [
        f"held-out language set: {s.rows} turns, {s.labelled} labelled",
        f"accuracy on verdict turns: {s.correct}/{s.verdicts} = {s.accuracy:.3f}",
        f"coverage of labelled turns: {s.covered}/{s.labelled} = {s.coverage:.3f}",
        f"zh variant right: {s.zh_variant_ok}/{s.zh_checked} = {s.variant_accuracy:.3f}",
        "coverage by label: "
        + ", ".join(f"{lab}={s.by_label_covered[lab]}/{n}" for lab, n in s.by_label.most_common()),
    ]


def miss_lines(s: Score) -> list[str]:
    """Every wrong verdict and wrong variant as line | kind | expected -> got | text."""
    lines = []
    if s.misses:
        lines.append(f"MISSES ({len(s.misses)}): line | kind | expected -> got | text")
        lines += [f"  {r.line} | {r.kind} | {r.label} -> {got} | {_show(r.text)}" for r, got in s.misses]
    if s.variant_misses:
        lines.append(f"VARIANT MISSES ({len(s.variant_misses)}): line | kind | expected -> got | text")
        lines += [
            f"  {r.line} | {r.kind} | {r.variant or 'zh'} -> {tag} | {_show(r.text)}"
            for r, tag in s.variant_misses
        ]
    return lines


def report(s: Score) -> str:
    """Summary, misses and the labelled turns that got no verdict."""
    lines = summary(s) + miss_lines(s)
    if s.abstained:
        lines.append(f"no verdict on labelled turns ({len(s.abstained)}): line | label | text")
        lines += [f"  {r.line} | {r.label} | {_show(r.text, 50)}" for r in s.abstained]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def heldout() -> Score:
    s = score(load_rows())
    print("\n" + report(s))
    return s


def test_heldout_set_is_well_formed():
    rows = load_rows()
    assert len(rows) >= 300
    for row in rows:
        assert row.text.strip(), f"line {row.line}: empty text"
        assert row.label is None or (isinstance(row.label, str) and len(row.label) == 2), row
        assert row.variant in VARIANTS, row
        assert row.variant is None or row.label == "zh", f"line {row.line}: variant on a non-zh turn"
        assert row.kind, f"line {row.line}: missing kind"
    assert len({r.text for r in rows}) == len(rows), "duplicate texts"
    labels = Counter(r.label for r in rows)
    for lab in ("zh", "en", "ja", "ko", None):
        assert labels[lab] >= 20, f"too few {lab!r} turns: {labels[lab]}"
    variants = Counter(r.variant for r in rows if r.label == "zh")
    assert variants["zh-Hans"] >= 40 and variants["zh-Hant"] >= 40, variants


def _failure(s: Score) -> str:
    return "\n".join(["", *summary(s), *miss_lines(s)])


def test_accuracy_on_verdict_turns(heldout: Score):
    assert heldout.verdicts > 0
    accuracy = heldout.accuracy
    assert accuracy >= MIN_ACCURACY, _failure(heldout)


def test_chinese_variant(heldout: Score):
    assert heldout.zh_checked > 0
    variant_accuracy = heldout.variant_accuracy
    assert variant_accuracy >= MIN_VARIANT_ACCURACY, _failure(heldout)


def test_coverage_is_reported(heldout: Score):
    # Coverage has no target (abstaining on "好的" is allowed); this guards against a detector that
    # stops answering altogether, which would make the accuracy figure meaningless.
    coverage = heldout.coverage
    assert coverage >= 0.5, _failure(heldout)
