"""The quota planner: pilot, rate-sized waves, reserve and top-up, budget trimming, stops; and a
simulated run over cells accepting 10% to 90% of their rows."""

from __future__ import annotations

import math
import random

import pytest

from datagen.errors import ConfigError
from datagen.run.quota import Budget, CellProgress, QuotaPolicy, plan_wave, rate_upper_bound, wave_size

#: Sizing by the measured rate alone: no confidence bound, no slack.
EXACT = QuotaPolicy(confidence=0.0, slack=0)


def test_the_pilot_asks_a_share_of_each_target_never_more_than_it():
    plan = plan_wave({"a": 20, "b": 3, "c": 200, "d": 0}, {})
    assert plan.attempts == {"a": 5, "b": 3, "c": 20}
    assert [c.state for c in plan.cells] == ["pilot", "pilot", "pilot", "full"]
    assert plan.stop is None and plan.total == 28


def test_a_wave_is_sized_from_the_rate_bound():
    progress = {"a": CellProgress(attempted=10, accepted=5)}
    bound = rate_upper_bound(5, 10, 1.0)
    assert 0.5 < bound < 0.75
    plan = plan_wave({"a": 20}, progress, wave=2)
    # 15 rows short, one row of slack: the most attempts whose yield stays under 16 even one
    # standard deviation above the mean, at the rate's upper bound
    n = wave_size(16, bound, 1.0)
    assert plan.attempts == {"a": n} and n * bound + math.sqrt(n * bound * (1 - bound)) <= 16
    assert (n + 1) * bound + math.sqrt((n + 1) * bound * (1 - bound)) > 16
    # with no margin for luck it asks exactly what the measured rate needs
    assert plan_wave({"a": 20}, progress, wave=2, policy=EXACT).attempts == {"a": 30}


def test_a_low_rate_grows_step_by_step_and_a_hopeless_cell_is_given_up():
    plan = plan_wave({"a": 100}, {"a": CellProgress(attempted=5, accepted=0)}, wave=2)
    assert plan.attempts == {"a": 20}  # max_growth 4 x 5 tried
    plan = plan_wave(
        {"a": 100, "b": 10},
        {"a": CellProgress(attempted=1000, accepted=0), "b": CellProgress(attempted=10, accepted=10)},
        wave=5,
    )
    assert [c.state for c in plan.cells] == ["starved", "full"] and plan.stop == "starved" and plan.total == 0
    plan = plan_wave({"a": 100}, {"a": CellProgress(attempted=1000, accepted=0)}, wave=5)
    assert plan.stop == "starved" and plan.total == 0


def test_rows_past_a_target_are_a_reserve_for_a_raised_one():
    progress = {"a": CellProgress(attempted=40, accepted=25, cost=4.0)}
    plan = plan_wave({"a": 20}, progress, wave=3)
    assert plan.stop == "done" and plan.cells[0].state == "full"
    plan = plan_wave({"a": 30}, progress, wave=3, policy=EXACT)
    assert plan.attempts == {"a": 8}  # 5 more rows at 62.5%
    c = plan.cells[0]
    assert c.cost_per_accepted == pytest.approx(0.16) and c.projected_cost == pytest.approx(5 / 0.625 * 0.1)


def test_the_budget_trims_a_wave_and_stops_the_run_when_nothing_fits():
    progress = {
        "a": CellProgress(attempted=10, accepted=5, cost=1.0),
        "b": CellProgress(attempted=10, accepted=5, cost=2.0),
    }
    policy = QuotaPolicy(confidence=0.0, slack=0, cost_margin=0.0)
    full = plan_wave({"a": 25, "b": 25}, progress, wave=2, policy=policy)
    assert full.attempts == {"a": 40, "b": 40} and full.cost == pytest.approx(40 * 0.1 + 40 * 0.2)
    plan = plan_wave(
        {"a": 25, "b": 25}, progress, budget=Budget(usd=9.0), spent_usd=3.0, wave=2, policy=policy
    )
    assert plan.cost <= 6.0 and plan.cost > 5.5  # what fits, flooring given back
    assert {c.state for c in plan.cells} == {"trimmed"}
    assert (
        plan_wave(
            {"a": 25, "b": 25}, progress, budget=Budget(usd=3.05), spent_usd=3.0, wave=2, policy=policy
        ).stop
        == "budget"
    )
    # the margin is kept: 20% over the measured cost must fit too
    plan = plan_wave(
        {"a": 25},
        {"a": progress["a"]},
        budget=Budget(usd=5.0),
        spent_usd=1.0,
        wave=2,
        policy=QuotaPolicy(confidence=0.0, slack=0, cost_margin=0.2),
    )
    assert plan.attempts == {"a": 33} and plan.cost <= 4.0


def test_a_token_budget_counts_like_money():
    progress = {"a": CellProgress(attempted=10, accepted=5, tokens=10_000)}
    plan = plan_wave(
        {"a": 25},
        progress,
        budget=Budget(tokens=30_000),
        spent_tokens=10_000,
        wave=2,
        policy=QuotaPolicy(confidence=0.0, slack=0, cost_margin=0.0),
    )
    assert plan.attempts == {"a": 20} and plan.tokens == 20_000


def test_an_unmeasured_cell_is_priced_at_the_runs_average_then_at_the_hint():
    progress = {"a": CellProgress(attempted=10, accepted=5, cost=1.0)}
    plan = plan_wave({"a": 25, "b": 10}, progress, wave=2)
    assert plan.cells[1].state == "pilot" and plan.cells[1].cost_per_attempt == pytest.approx(0.1)
    pilot = plan_wave(
        {"a": 20, "b": 20}, {}, budget=Budget(usd=0.5), cost_hint=0.05, policy=QuotaPolicy(cost_margin=0.0)
    )
    assert pilot.total == 10 and pilot.cost == pytest.approx(0.5)
    pilot = plan_wave(
        {"a": 20, "b": 20}, {}, budget=Budget(usd=0.3), cost_hint=0.05, policy=QuotaPolicy(cost_margin=0.0)
    )
    assert pilot.total == 6


def test_waves_stop_after_max_waves():
    plan = plan_wave(
        {"a": 25}, {"a": CellProgress(attempted=10, accepted=5)}, wave=4, policy=QuotaPolicy(max_waves=3)
    )
    assert plan.stop == "max_waves" and plan.total == 0


def test_the_status_table_shows_each_cell():
    plan = plan_wave(
        {"math/en/hhh/-": 20}, {"math/en/hhh/-": CellProgress(attempted=10, accepted=4, cost=0.5)}, wave=2
    )
    table = plan.table()
    assert "| math/en/hhh/- | 4 / 20 | 40% | $0.1250 | $2.0000 |" in table


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Budget(usd=-1), "budget.usd"),
        (lambda: Budget(tokens=1.5), "budget.tokens"),
        (lambda: QuotaPolicy(pilot_min=0), "quota.pilot_min"),
        (lambda: QuotaPolicy(pilot_share=2), "quota.pilot_share"),
        (lambda: plan_wave({"a": -1}, {}), "targets.a"),
    ],
)
def test_bad_settings_name_their_key(make, field):
    with pytest.raises(ConfigError) as exc:
        make()
    assert exc.value.field == field


def simulate(
    rates: dict[str, float],
    targets: dict[str, int],
    *,
    budget: float,
    unit: float,
    seed: int,
    policy: QuotaPolicy | None = None,
) -> tuple[dict[str, CellProgress], float, int, str]:
    """Waves through the planner; each attempt costs `unit` and passes with its cell's rate."""
    rng = random.Random(seed)
    progress = {c: CellProgress() for c in rates}
    spent, wave = 0.0, 1
    while True:
        plan = plan_wave(
            targets,
            progress,
            budget=Budget(usd=budget),
            spent_usd=spent,
            wave=wave,
            policy=policy,
            cost_hint=unit,
        )
        if plan.stop:
            return progress, spent, wave - 1, plan.stop
        for cell, n in plan.attempts.items():
            ok = sum(rng.random() < rates[cell] for _ in range(n))
            progress[cell].add(CellProgress(attempted=n, accepted=ok, cost=n * unit))
            spent += n * unit
        wave += 1


def test_a_simulated_run_fills_every_cell_within_budget_and_overshoots_little():
    rates = {f"c{int(r * 100)}": r for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
    targets = dict.fromkeys(rates, 30)
    overshoots = []
    for seed in range(10):
        progress, spent, waves, stop = simulate(rates, targets, budget=100.0, unit=0.1, seed=seed)
        assert stop == "done" and spent <= 100.0
        assert all(p.accepted >= 30 for p in progress.values())
        overshoots += [p.accepted - 30 for p in progress.values()]
        assert waves <= 12
    # rows past a target come from luck beyond the rate bound: rare and few
    assert max(overshoots) <= 15 and sum(overshoots) / len(overshoots) < 1.5


def test_a_tight_budget_is_never_exceeded():
    rates = {"low": 0.1, "high": 0.9}
    for seed in range(5):
        progress, spent, _, stop = simulate(
            rates, {"low": 100, "high": 100}, budget=30.0, unit=0.1, seed=seed
        )
        assert stop == "budget" and spent <= 30.0
        assert spent > 25.0  # and most of it is used
