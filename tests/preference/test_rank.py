"""The judge's replies and the verdict of a pair judged in both orders."""

from __future__ import annotations

import pytest

from datagen.preference.rank import Order, decide, parse_scores


@pytest.mark.parametrize(
    "text, scores",
    [
        ('{"score_a": 7, "score_b": 3, "reason": "A cites the result"}', (7.0, 3.0)),
        ('```json\n{"score_a": "8", "score_b": 8.5}\n```', (8.0, 8.5)),
        ('Here you go: {"reason": "x", "score_b": 2, "score_a": 9} Hope it helps.', (9.0, 2.0)),
        ("Score A: 6\nScore B: 4", (6.0, 4.0)),
        ('{"score_a": 14, "score_b": 0}', (10.0, 1.0)),  # clamped to the 1-10 scale
        ("Answer A is better.", None),
        ('{"score_a": 7}', None),
        ("", None),
    ],
)
def test_parse_scores(text, scores):
    assert parse_scores(text) == scores


def test_both_orders_cancel_a_judge_that_favours_the_first_answer():
    # x is 4 points better; the judge adds 3 to whatever it reads first.
    orders = [Order(first="x", scores=(9 + 3, 5)), Order(first="y", scores=(5 + 3, 9))]
    v = decide("x", "y", orders, min_margin=1)
    assert v.kept and (v.chosen, v.rejected, v.margin) == ("x", "y", 4.0)
    # Equal answers: each order alone says "the first one wins by 3"; together they disagree.
    v = decide("x", "y", [Order(first="x", scores=(8, 5)), Order(first="y", scores=(8, 5))], min_margin=1)
    assert not v.kept and v.reason == "position_bias" and v.mean == 0


def test_winner_may_be_either_side_and_drops_have_reasons():
    v = decide("x", "y", [Order(first="x", scores=(2, 9)), Order(first="y", scores=(9, 3))], min_margin=1)
    assert (v.chosen, v.rejected, v.margin) == ("y", "x", 6.5)
    assert decide("x", "y", [Order("x", (6, 6)), Order("y", (6, 6))], min_margin=1).reason == "tie"
    low = decide("x", "y", [Order("x", (6, 5)), Order("y", (6, 6))], min_margin=1)
    assert low.reason == "low_margin" and low.mean == 0.5
    assert decide("x", "y", [Order("x", (6, 5)), Order("y", (6, 6))], min_margin=0.5).kept
    failed = decide("x", "y", [Order("x", (6, 5)), Order("y", error="timeout")], min_margin=1)
    assert failed.reason == "judge_failed" and failed.detail == "timeout"
    assert (
        decide("x", "y", [Order("x", error="unparsed"), Order("y", (1, 2))], min_margin=1).reason
        == "judge_unparsed"
    )
    assert failed.to_dict()["reason"] == "judge_failed" and "chosen" not in failed.to_dict()
