"""Ranking candidates: the pairwise judge's verdicts, read in both orders.

Each pair (x, y) is judged twice, x shown first and then y shown first. Each order gives a score
difference x - y (`Order.diff`); the pair's margin is their mean. A judge that adds `b` points to
whatever it reads first turns a true difference `d` into `d + b` and `d - b`: the mean is `d`, so
the position bias cancels. What is dropped, with its reason:

    judge_failed      a call of either order failed (the engine's reason is counted too)
    judge_unparsed    a reply held no scores
    position_bias     the two orders disagree on the winner
    tie               the mean difference is 0
    low_margin        the winner leads by less than `min_margin` points

A kept pair names the chosen and the rejected candidate and its margin (points on the 1-10 scale).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

DROP_REASONS = ("judge_failed", "judge_unparsed", "position_bias", "tie", "low_margin")
SCORE_RANGE = (1.0, 10.0)

_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_FIELD = re.compile(r"score[_\s-]*([ab])\W{0,4}(\d+(?:\.\d+)?)", re.I)


def parse_scores(text: str | None) -> tuple[float, float] | None:
    """(score of A, score of B) from a judge reply: a JSON object with `score_a` and `score_b`
    (anywhere in the reply, code fences and prose around it allowed), else `score_a: 7` style
    lines. Scores are clamped to 1-10. None when the reply holds no pair of scores."""
    if not text:
        return None
    for m in _OBJECT.finditer(text):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            a, b = _number(obj.get("score_a")), _number(obj.get("score_b"))
            if a is not None and b is not None:
                return _clamp(a), _clamp(b)
    found: dict[str, float] = {}
    for m in _FIELD.finditer(text):
        found.setdefault(m.group(1).lower(), float(m.group(2)))
    if "a" in found and "b" in found:
        return _clamp(found["a"]), _clamp(found["b"])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _clamp(x: float) -> float:
    low, high = SCORE_RANGE
    return min(high, max(low, x))


@dataclass(slots=True)
class Order:
    """One judge call of a pair: `first` is the candidate shown as A. `scores` are (A, B) as the
    judge gave them; `error` says why there are none."""

    first: str
    scores: tuple[float, float] | None = None
    error: str | None = None
    cached: bool = False

    def diff(self, x: str) -> float:
        """Candidate `x`'s score minus the other's, in this order."""
        assert self.scores is not None
        a, b = self.scores
        return a - b if self.first == x else b - a

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"first": self.first, "scores": list(self.scores) if self.scores else None}
        if self.error:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class Verdict:
    """What the judge made of a pair (x, y): kept with `chosen`, `rejected` and `margin`, or
    dropped with `reason`."""

    x: str
    y: str
    orders: list[Order] = field(default_factory=list)
    mean: float | None = None  # x's lead over y, averaged over the orders
    chosen: str | None = None
    rejected: str | None = None
    margin: float | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def kept(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "x": self.x,
            "y": self.y,
            "orders": [o.to_dict() for o in self.orders],
            "mean": self.mean,
        }
        if self.kept:
            d.update(chosen=self.chosen, rejected=self.rejected, margin=self.margin)
        else:
            d["reason"] = self.reason
            if self.detail:
                d["detail"] = self.detail
        return d


def decide(x: str, y: str, orders: list[Order], *, min_margin: float) -> Verdict:
    """Combine the judge's calls on (x, y) into a Verdict (see the module docstring)."""
    v = Verdict(x=x, y=y, orders=list(orders))
    failed = [o for o in orders if o.scores is None]
    if failed:
        unparsed = all(o.error == "unparsed" for o in failed)
        v.reason = "judge_unparsed" if unparsed else "judge_failed"
        v.detail = "; ".join(o.error or "?" for o in failed)
        return v
    diffs = [o.diff(x) for o in orders]
    v.mean = sum(diffs) / len(diffs)
    if any(d > 0 for d in diffs) and any(d < 0 for d in diffs):
        v.reason = "position_bias"
        v.detail = "the winner changed with the order: " + ", ".join(f"{d:+g}" for d in diffs)
        return v
    if v.mean == 0:
        v.reason = "tie"
        return v
    if abs(v.mean) < min_margin:
        v.reason = "low_margin"
        v.detail = f"{abs(v.mean):g} < {min_margin:g}"
        return v
    v.chosen, v.rejected = (x, y) if v.mean > 0 else (y, x)
    v.margin = abs(v.mean)
    return v
