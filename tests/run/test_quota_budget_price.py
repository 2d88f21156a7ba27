"""A run in waves with `budget.usd` needs a price for the teacher's model: without one every call
costs $0 in the ledger and the budget would never stop a wave, so the run refuses to start."""

from __future__ import annotations

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
"""


def _config(tmp_path: Path, prices: str, budget: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG % (prices, budget), encoding="utf-8")
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
