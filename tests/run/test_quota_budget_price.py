"""A run in waves with `budget.usd` needs a price for every model it calls (the teacher's, the
judge's, the second judge's): without one those calls cost $0 in the ledger and the budget would
never stop a wave, so the run refuses to start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datagen.cli import main
from datagen.errors import DatagenError
from datagen.run.config import load_config
from datagen.run.waves import QuotaRun

CONFIG = """\
name: priced
teacher: {base_url: "http://127.0.0.1:9/v1", model: m1%s}
targets: {writing/en/hhh: 5}
budget: {%s}
%s"""


def _config(tmp_path: Path, prices: str, budget: str, judge: str = "") -> Path:
    path = tmp_path / "run.yaml"
    filters = f"filters: {{steps: {{judge: {judge}}}}}\n" if judge else ""
    path.write_text(CONFIG % (prices, budget, filters), encoding="utf-8")
    return path


def test_a_usd_budget_without_a_price_for_the_model_is_refused(tmp_path, capsys):
    path = _config(tmp_path, ", prices: {other: {input: 1, output: 2}}", "usd: 1.0")
    with pytest.raises(DatagenError, match=r"^budget\.usd: teacher\.prices has no price for the model 'm1'"):
        QuotaRun(load_config(path), tmp_path / "run")
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert err.count("Error:") == 1 and "Traceback" not in err and "budget.usd" in err


@pytest.mark.parametrize(
    ("prices", "budget"), [(", prices: {m1: {input: 1, output: 2}}", "usd: 1.0"), ("", "tokens: 1000")]
)
def test_a_priced_model_or_a_token_budget_is_taken(tmp_path, prices, budget):
    QuotaRun(load_config(_config(tmp_path, prices, budget)), tmp_path / "run")


PRICED = ", prices: {m1: {input: 1, output: 2}}"


@pytest.mark.parametrize(
    ("judge", "message"),
    [
        ("{model: m2}", "teacher.prices has no price for the model 'm2'"),
        ("{second: {model: m3}}", "teacher.prices has no price for the model 'm3'"),
        (
            '{teacher: {base_url: "http://127.0.0.1:9/v1", model: j1}}',
            "filters.steps.judge.teacher.prices has no price for the model 'j1'",
        ),
        (
            '{second: {teacher: {base_url: "http://127.0.0.1:9/v1", model: j2, prices: {j1: {input: 1, output: 1}}}}}',
            "filters.steps.judge.second.teacher.prices has no price for the model 'j2'",
        ),
    ],
)
def test_every_judge_model_needs_a_price_too(tmp_path, judge, message):
    with pytest.raises(DatagenError, match=re.escape(f"budget.usd: {message}")):
        QuotaRun(load_config(_config(tmp_path, PRICED, "usd: 1.0", judge)), tmp_path / "run")


def test_a_judge_priced_where_it_is_called_is_taken(tmp_path):
    judge = (
        '{model: m2, second: {teacher: {base_url: "http://127.0.0.1:9/v1", model: j2, '
        "prices: {j2: {input: 1, output: 1}}}}}"
    )
    prices = ", prices: {m1: {input: 1, output: 2}, m2: {input: 3, output: 4}}"
    QuotaRun(load_config(_config(tmp_path, prices, "usd: 1.0", judge)), tmp_path / "run")
