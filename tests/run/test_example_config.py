"""configs/example.yaml documents `targets`, `budget`, `quota` and the judge filter step in
commented blocks: uncommented, they load (the run config and the filter step accept every key shown)
and they name every setting those sections take, so the example cannot drift from the code."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from datagen.filters.judge import JudgeFilter
from datagen.run.config import load_config
from datagen.run.quota import Budget, QuotaPolicy
from datagen.run.waves import QuotaRun

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "example.yaml"
BLOCKS = ("targets", "budget", "quota", "judge")


def uncommented(text: str) -> tuple[str, dict[str, str]]:
    """The example with its commented `targets`, `budget`, `quota` and `judge` blocks uncommented
    (a block: `# key:` at some indent, then the lines commented at that indent and indented
    further), and each block's text."""
    out, blocks = [], {}
    lines = iter(text.splitlines())
    head = re.compile(rf"^(\s*)# ({'|'.join(BLOCKS)}):")
    current, indent = None, ""
    for line in lines:
        m = head.match(line)
        if m:
            current, indent = m.group(2), m.group(1)
            blocks[current] = ""
        elif current is not None and not line.startswith(f"{indent}#   "):
            current = None
        if current is not None:
            line = indent + line[len(indent) + 2 :]
            blocks[current] += line + "\n"
        out.append(line)
    return "\n".join(out) + "\n", blocks


def _variant(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    text, blocks = uncommented(EXAMPLE.read_text(encoding="utf-8"))
    assert set(blocks) == set(BLOCKS), f"example.yaml lacks the commented blocks {set(BLOCKS) - set(blocks)}"
    path = tmp_path / "example.yaml"
    path.write_text(text.replace("../seeds/", f"{REPO}/seeds/"), encoding="utf-8")
    return path, blocks


def test_the_commented_targets_budget_and_quota_load_and_name_every_setting(tmp_path):
    path, blocks = _variant(tmp_path)
    cfg = load_config(path)
    assert cfg.quota is not None
    assert cfg.quota.targets == {"writing/en/hhh/-": 200, "math/zh/plugin/calculator": 50}
    assert cfg.quota.budget == Budget(usd=20.0, tokens=5_000_000)
    assert cfg.quota.policy == QuotaPolicy()  # the example shows the defaults
    for cls, block in ((Budget, "budget"), (QuotaPolicy, "quota")):
        for f in dataclasses.fields(cls):
            assert re.search(rf"^\s+{f.name}: ", blocks[block], re.M), (
                f"{block}.{f.name} is not in the example"
            )
    QuotaRun(cfg, tmp_path / "run")  # a run in waves takes it (its budget.usd has a price to count in)


def test_the_commented_judge_step_loads_and_names_every_setting(tmp_path):
    path, blocks = _variant(tmp_path)
    cfg = load_config(path)
    step = cfg.filters.step("judge")
    assert [s.name for s in cfg.filters.enabled_steps()][-1] == "judge"  # added after the others
    judge = step.build()
    assert isinstance(judge, JudgeFilter)
    assert [r.id for r in judge.rubrics] == ["hhh.v1", "grounded.v1"]
    assert judge.min_scores["harmless"] == 4 and judge.min_scores["helpful"] == 3
    assert judge.second_model == "gpt-4o" and judge.second_rate == 0.2
    params = set(inspect.signature(JudgeFilter.__init__).parameters) - {"self", "journal"}
    for name in sorted(params):  # `journal` is the run's own, never set in a config
        assert re.search(rf"^\s+{name}: ", blocks["judge"], re.M), f"judge.{name} is not in the example"


def test_the_example_as_shipped_runs_without_waves_or_judge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLE)
    assert cfg.quota is None
    assert "judge" not in [s.name for s in cfg.filters.enabled_steps()]
