"""Quotas and budget: how many dialogues to ask for in each cell, wave after wave.

A run with `targets` (accepted rows wanted per cell: category, language, kind, plugins) and a
`budget` (USD and/or tokens) works in waves. The first is a pilot: a few dialogues per cell. Each
wave's rows go through every filter and the judge; what each cell got accepted, what it tried and
what that cost are its `CellProgress`. `plan_wave` sizes the next wave from those figures:

- a full cell asks for nothing, and rows accepted past a target are a reserve that a later, raised
  target uses first (a rerun with a higher target tops up without redoing anything);
- a cell short of `r` rows asks for `ceil(r / p)`, where `p` is an upper confidence bound of its
  acceptance rate (Wilson, `confidence` standard deviations): a cell is overshot only by the
  chance that more rows pass than even that bound expects, so by about one wave's rounding;
- a wave never asks more than `max_growth` times what the cell has tried so far (a cell with a
  low measured rate grows step by step), and a cell whose rate bound falls under `min_rate` is
  given up as `starved`;
- the wave's projected cost (cost per attempt of each cell, or the run's average for a cell not yet
  measured, raised by `cost_margin`) must fit the budget left: a wave that does not fit is scaled
  down to what fits, and when nothing fits the run stops with `budget`.

The planner is pure: figures in, a `WavePlan` out. The runner asks it before each wave, and
`datagen status` shows its table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError

#: Why planning stopped (None while there is a wave to run).
STOP_REASONS = ("done", "budget", "starved", "max_waves")


@dataclass(frozen=True, slots=True)
class Budget:
    """The most a run may spend: `usd` and/or `tokens` (prompt + completion); None is no limit."""

    usd: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.usd is not None and (
            isinstance(self.usd, bool)
            or not isinstance(self.usd, int | float)
            or not math.isfinite(self.usd)
            or self.usd < 0
        ):
            raise ConfigError(f"must be a number >= 0, got {self.usd!r}", field="budget.usd")
        if self.tokens is not None and (
            isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0
        ):
            raise ConfigError(f"must be an integer >= 0, got {self.tokens!r}", field="budget.tokens")


@dataclass(slots=True)
class CellProgress:
    """One cell so far, over every wave: dialogues `attempted` (asked for, whatever became of
    them), rows `accepted` after every filter and the judge, and what the attempts cost."""

    attempted: int = 0
    accepted: int = 0
    cost: float = 0.0
    tokens: int = 0

    def add(self, other: CellProgress) -> None:
        self.attempted += other.attempted
        self.accepted += other.accepted
        self.cost += other.cost
        self.tokens += other.tokens


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """How waves are sized (see the module docstring).

    Args:
        pilot_share: share of a cell's target asked for in its pilot wave.
        pilot_min: at least this many in a pilot (never more than the target).
        confidence: standard deviations of the acceptance rate's upper bound; higher means smaller
            waves, fewer overshoots and more waves.
        cost_margin: a wave's projected cost is raised by this share before the budget check.
        max_growth: a wave asks a cell for at most this many times what it has tried so far.
        min_rate: a cell whose acceptance rate bound falls under this is given up.
        max_waves: the most waves of one run.
        slack: rows a wave aims for past what a cell still needs, so that a wave a little unlucky
            still fills it (fewer waves, at the price of a few reserve rows).
    """

    pilot_share: float = 0.1
    pilot_min: int = 5
    confidence: float = 1.0
    cost_margin: float = 0.2
    max_growth: float = 4.0
    min_rate: float = 0.01
    max_waves: int = 50
    slack: int = 1

    def __post_init__(self) -> None:
        checks = (
            ("pilot_share", 0.0, 1.0),
            ("confidence", 0.0, 10.0),
            ("cost_margin", 0.0, 10.0),
            ("max_growth", 1.0, 1e6),
            ("min_rate", 0.0, 1.0),
        )
        for name, lo, hi in checks:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise ConfigError(f"must be a number from {lo:g} to {hi:g}, got {v!r}", field=f"quota.{name}")
        if isinstance(self.slack, bool) or not isinstance(self.slack, int) or self.slack < 0:
            raise ConfigError(f"must be an integer >= 0, got {self.slack!r}", field="quota.slack")
        for name in ("pilot_min", "max_waves"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"must be an integer >= 1, got {v!r}", field=f"quota.{name}")


def rate_upper_bound(accepted: int, attempted: int, z: float) -> float:
    """Wilson score upper bound of an acceptance rate (`z` standard deviations)."""
    if attempted <= 0:
        return 1.0
    p = accepted / attempted
    z2 = z * z
    centre = p + z2 / (2 * attempted)
    spread = z * math.sqrt(p * (1 - p) / attempted + z2 / (4 * attempted * attempted))
    return min(1.0, (centre + spread) / (1 + z2 / attempted))


def wave_size(remaining: int, rate: float, z: float) -> int:
    """Attempts whose accepted rows, at acceptance rate `rate`, stay within `remaining` even `z`
    standard deviations above their mean: the largest n with n p + z sqrt(n p (1 - p)) <= remaining
    (at least 1)."""
    b = z * math.sqrt(rate * (1 - rate))
    root = (-b + math.sqrt(b * b + 4 * rate * remaining)) / (2 * rate)
    return max(1, math.floor(root * root + 1e-9))


@dataclass(slots=True)
class CellPlan:
    """One cell's figures and what the next wave asks of it. `state`: `full`, `pilot`, `wave`,
    `starved` (given up), `trimmed` (asked less than it needs, to fit the budget) or `budget`
    (asked nothing: the budget is spent)."""

    cell: str
    target: int
    accepted: int
    attempted: int
    cost: float
    attempts: int = 0
    state: str = "full"
    cost_per_attempt: float | None = None
    tokens_per_attempt: float | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.target - self.accepted)

    @property
    def rate(self) -> float | None:
        """The measured acceptance rate (None before any attempt)."""
        return self.accepted / self.attempted if self.attempted else None

    @property
    def cost_per_accepted(self) -> float | None:
        return self.cost / self.accepted if self.accepted else None

    @property
    def projected_cost(self) -> float | None:
        """What finishing the cell should cost at its measured rate and cost (0 when full; None
        while unmeasured)."""
        if not self.remaining:
            return 0.0
        if not self.accepted or self.cost_per_attempt is None:
            return None
        return self.remaining / (self.accepted / self.attempted) * self.cost_per_attempt


@dataclass(slots=True)
class WavePlan:
    """The next wave: what to ask of each cell, its projected cost and tokens (margin included),
    and `stop` (a `STOP_REASONS` entry) when there is no wave to run."""

    wave: int
    cells: list[CellPlan] = field(default_factory=list)
    cost: float = 0.0
    tokens: float = 0.0
    stop: str | None = None

    @property
    def attempts(self) -> dict[str, int]:
        return {c.cell: c.attempts for c in self.cells if c.attempts}

    @property
    def total(self) -> int:
        return sum(c.attempts for c in self.cells)

    def table(self) -> str:
        """A Markdown table of every cell: accepted / target, rate, cost per accepted row,
        projected cost to finish, and what the next wave asks."""

        def money(v: float | None) -> str:
            return "-" if v is None else f"${v:.4f}"

        lines = [
            "| cell | accepted / target | rate | cost / accepted | to finish | next wave | state |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for c in self.cells:
            rate = "-" if c.rate is None else f"{c.rate:.0%}"
            extra = f" (+{c.accepted - c.target} reserve)" if c.accepted > c.target else ""
            lines.append(
                f"| {c.cell} | {min(c.accepted, c.target)} / {c.target}{extra} | {rate} | "
                f"{money(c.cost_per_accepted)} | "
                f"{money(c.projected_cost)} | {c.attempts} | {c.state} |"
            )
        return "\n".join(lines) + "\n"


def _unit(values: list[tuple[float, int]]) -> float | None:
    spent, tried = sum(v for v, _ in values), sum(n for _, n in values)
    return spent / tried if tried else None


def plan_wave(
    targets: Mapping[str, int],
    progress: Mapping[str, CellProgress],
    *,
    budget: Budget | None = None,
    spent_usd: float = 0.0,
    spent_tokens: int = 0,
    wave: int = 1,
    policy: QuotaPolicy | None = None,
    cost_hint: float | None = None,
    tokens_hint: float | None = None,
) -> WavePlan:
    """Size wave number `wave` (1 = the pilot) from each cell's progress so far.

    Args:
        targets: accepted rows wanted per cell.
        progress: each cell's figures over the waves run so far (a missing cell has none).
        budget: the run's limits; `spent_usd` and `spent_tokens` are what the run has spent so
            far, cells' attempts and anything else (expansion, failed calls) alike.
        policy: how waves are sized.
        cost_hint, tokens_hint: cost and tokens of one attempt while no cell has been measured
            (the pilot); without them the pilot is not checked against the budget.
    """
    policy = policy or QuotaPolicy()
    budget = budget or Budget()
    for cell, target in targets.items():
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise ConfigError(f"must be an integer >= 0, got {target!r}", field=f"targets.{cell}")
    plan = WavePlan(wave)
    measured = [(p.cost, p.attempted) for p in progress.values() if p.attempted]
    run_cost = _unit(measured)
    run_tokens = _unit([(p.tokens, p.attempted) for p in progress.values() if p.attempted])
    for cell, target in targets.items():
        p = progress.get(cell) or CellProgress()
        c = CellPlan(cell, target, p.accepted, p.attempted, p.cost)
        c.cost_per_attempt = (
            p.cost / p.attempted if p.attempted else (run_cost if run_cost is not None else cost_hint)
        )
        c.tokens_per_attempt = (
            p.tokens / p.attempted if p.attempted else run_tokens if run_tokens is not None else tokens_hint
        )
        plan.cells.append(c)
        r = c.remaining
        if not r:
            continue
        if not p.attempted:
            c.state, c.attempts = "pilot", min(r, max(policy.pilot_min, math.ceil(policy.pilot_share * r)))
            continue
        bound = rate_upper_bound(p.accepted, p.attempted, policy.confidence)
        if bound < policy.min_rate:
            c.state = "starved"
            continue
        c.state = "wave"
        c.attempts = max(
            1,
            min(
                wave_size(r + policy.slack, bound, policy.confidence),
                math.floor(policy.max_growth * p.attempted),
            ),
        )
    if all(not c.remaining for c in plan.cells):
        plan.stop = "done"
        return plan
    if wave > policy.max_waves:
        plan.stop = "max_waves"
        for c in plan.cells:
            c.attempts = 0
        return plan
    _fit_budget(plan, budget, spent_usd, spent_tokens, policy.cost_margin)
    if not plan.total:
        plan.stop = "budget" if any(c.state in ("budget", "trimmed") for c in plan.cells) else "starved"
    return plan


def _projected(plan: WavePlan, margin: float) -> tuple[float, float]:
    cost = sum(c.attempts * (c.cost_per_attempt or 0.0) for c in plan.cells) * (1 + margin)
    tokens = sum(c.attempts * (c.tokens_per_attempt or 0.0) for c in plan.cells) * (1 + margin)
    return cost, tokens


def _fit_budget(plan: WavePlan, budget: Budget, spent_usd: float, spent_tokens: int, margin: float) -> None:
    """Scale the wave down until its projected cost and tokens fit what the budget has left."""
    cost, tokens = _projected(plan, margin)
    scale = 1.0
    if budget.usd is not None and cost > 0:
        scale = min(scale, max(0.0, budget.usd - spent_usd) / cost)
    if budget.tokens is not None and tokens > 0:
        scale = min(scale, max(0.0, budget.tokens - spent_tokens) / tokens)
    if scale < 1.0:
        wanted = {c.cell: c.attempts for c in plan.cells}
        for c in plan.cells:
            c.attempts = math.floor(c.attempts * scale)
        # flooring leaves up to one attempt per cell unspent: give it back, cheapest cells first
        for c in sorted(plan.cells, key=lambda c: c.cost_per_attempt or 0.0):
            if c.attempts < wanted[c.cell]:
                c.attempts += 1
                cost, tokens = _projected(plan, margin)
                if (budget.usd is not None and cost > budget.usd - spent_usd) or (
                    budget.tokens is not None and tokens > budget.tokens - spent_tokens
                ):
                    c.attempts -= 1
        for c in plan.cells:
            if c.attempts < wanted[c.cell]:
                c.state = "trimmed" if c.attempts else "budget"
    plan.cost, plan.tokens = _projected(plan, margin)


# --------------------------------------------------------------------------- the config sections


def parse_cell(key: Any) -> str:
    """A target's cell, `category/language/kind[/plugins]`, in the form rows are counted in
    (`datagen.filters.judge_report.cell_key`): `math/en/plugin/solver+calculator` becomes
    `math/en/plugin/calculator+solver`, `chat/zh/hhh` becomes `chat/zh/hhh/-`."""
    from datagen.filters.judge_report import cell_key
    from datagen.record import PLUGIN_COMMANDS

    where = f"targets.{key}"
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) not in (3, 4) or not all(p.strip() for p in parts):
        raise ConfigError(
            "a cell is category/language/kind[/plugins], e.g. writing/en/hhh or "
            "math/zh/plugin/calculator (`-` for no category or language)",
            field=where,
        )
    category, language, kind = (p.strip() for p in parts[:3])
    plugins = [] if len(parts) == 3 or parts[3].strip() == "-" else [p.strip() for p in parts[3].split("+")]
    if kind not in ("hhh", "plugin"):
        raise ConfigError(f"kind must be hhh or plugin, got {kind!r}", field=where)
    unknown = [p for p in plugins if p not in PLUGIN_COMMANDS]
    if unknown:
        raise ConfigError(f"unknown plugin {unknown[0]!r} (known: {', '.join(PLUGIN_COMMANDS)})", field=where)
    if (kind == "plugin") != bool(plugins):
        raise ConfigError(
            "a plugin cell names its plugins (math/en/plugin/calculator); an hhh cell none", field=where
        )
    return cell_key(None if category == "-" else category, None if language == "-" else language, plugins)


@dataclass(slots=True)
class QuotaSection:
    """A run's `targets` (accepted rows per cell), `budget` and `quota` (the wave policy)."""

    targets: dict[str, int]
    budget: Budget = field(default_factory=Budget)
    policy: QuotaPolicy = field(default_factory=QuotaPolicy)

    @classmethod
    def from_config(cls, targets: Any, budget: Any = None, quota: Any = None) -> QuotaSection | None:
        """From the run config's sections; None when there are no targets (a run without waves).
        ConfigError names the key."""
        if targets is None:
            if budget is not None or quota is not None:
                raise ConfigError(
                    "budget and quota apply to a run with targets (accepted rows per cell)",
                    field="budget" if budget is not None else "quota",
                )
            return None
        if not isinstance(targets, dict) or not targets:
            raise ConfigError(
                "must be a mapping of cell -> accepted rows, e.g. {writing/en/hhh: 20}", field="targets"
            )
        parsed: dict[str, int] = {}
        for key, count in targets.items():
            cell = parse_cell(key)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"must be an integer >= 0, got {count!r}", field=f"targets.{key}")
            if cell in parsed:
                raise ConfigError(f"the same cell as another target ({cell})", field=f"targets.{key}")
            parsed[cell] = count
        return cls(
            parsed, _from_mapping(Budget, budget, "budget"), _from_mapping(QuotaPolicy, quota, "quota")
        )


def _from_mapping(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", field=where)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})", field=f"{where}.{unknown[0]}"
        )
    return cls(**data)
