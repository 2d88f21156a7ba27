"""The card's `Judge scores` section: built from the report the judge step wrote (the step run
against the fake teacher with scripted judgments), every number read from `judge.json`; no section
when the run had no judge, or only a report an earlier config left behind."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from huggingface_hub import DatasetCard

from datagen.filters.config import FilterConfig
from datagen.filters.judge_report import judge_report_from_dir, write_judge_report
from datagen.filters.run import run_filters
from datagen.io import iter_conversations
from datagen.publish.build import build_dataset_folder
from datagen.publish.card import split_card
from datagen.publish.verify import check_dataset_folder
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.filters.judge_script import scripted_judge
from tests.publish.runs import hhh, make_run_dir, plugin_calc

#: The judge step as the run config wrote it (the card reads its thresholds from here).
STEP = {"min_score": 3, "min_scores": {"harmless": 4}, "second": {"model": "judge-b"}}


def _marked(conv, marker):
    conv.turns[0].human += f" {marker}"
    return conv


def _dialogues():
    return [
        hhh(1, turns=2),
        _marked(hhh(2, turns=2), "JUDGE:helpful=2"),  # dropped: low_helpful
        _marked(hhh(3, turns=3, category="code"), "JUDGE:honest=4"),
        _marked(hhh(4, language="zh"), "JUDGE:garbage2"),  # never parses: judge_unparseable
        _marked(hhh(5, language="zh", turns=2), "JUDGE:harmless=3"),  # under harmless's own 4
        hhh(6),
        _marked(hhh(7, turns=3), "JUDGE:follows_meta=4"),
        plugin_calc(1),
        plugin_calc(2, fail=True),
    ]


def _judged_run(fake, tmp_path, step=STEP, *, name="run", config_step=True):
    """A run directory whose final rows went through a real judge step, with the step's report."""
    fake.set_responder(scripted_judge(second_model="judge-b", second_offset=1))
    run = tmp_path / name
    filtered = run / "filtered"
    teacher = make_teacher_config_for(fake, params={}).to_dict()
    config = FilterConfig.from_dict(
        {
            "steps": [{"name": "judge", "teacher": teacher, "journal": str(tmp_path / "j.sqlite"), **step}],
            "workers": 1,
        }
    )
    run_filters(_dialogues(), config, filtered)
    write_judge_report(judge_report_from_dir(filtered), filtered)
    make_run_dir(run, list(iter_conversations(filtered / "kept.jsonl")))
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    if config_step:
        manifest["config"]["filters"] = {"steps": {"judge": step}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    funnel = json.loads((run / "funnel.json").read_text(encoding="utf-8"))
    funnel["steps"] += json.loads((filtered / "funnel.json").read_text(encoding="utf-8"))["steps"]
    (run / "funnel.json").write_text(json.dumps(funnel), encoding="utf-8")
    return run, json.loads((filtered / "judge.json").read_text(encoding="utf-8"))


def _section(body: str) -> str:
    assert body.count("## Judge scores\n") == 1
    return body.split("## Judge scores\n", 1)[1].split("\n## ", 1)[0]


def _cell_rows(section: str) -> dict[tuple[str, str], list[str]]:
    """(cell, criterion) -> [judged, kept, scored, mean, 1..5] from the per-cell table (a blank cell
    column continues the cell above)."""
    lines = section.split("| cell | judged |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    out, cell, head = {}, None, None
    for line in lines:
        cols = [c.strip() for c in line.strip("|").split("|")]
        if cols[0]:
            cell, head = cols[0].strip("`*"), cols[1:3]
        out[(cell, cols[3])] = [*head, *cols[4:]]
    return out


def _hist(d):
    return [str(d["hist"][str(s)]) for s in range(1, 6)]


def test_the_card_reports_the_judge_from_its_report(fake_openai, tmp_path):
    run, report = _judged_run(fake_openai, tmp_path)
    assert report["reasons"] == {"low_helpful": 1, "judge_unparseable": 1, "low_harmless": 1}
    folder = build_dataset_folder(run, tmp_path / "ds")
    text = folder.card_path.read_text(encoding="utf-8")
    meta, body = split_card(text)
    section = _section(body)

    # who judged, with which rubric versions, on which scale and thresholds
    for model, n in report["models"].items():
        assert f"`{model}` ({n:,} judgments)" in section
    assert report["rubrics"] == ["grounded.v1", "hhh.v1"]
    assert "`grounded.v1`, `hhh.v1`" in section and "anchored 1-5 scale" in section
    assert "The lowest score kept is 3 for every criterion (harmless: 4)" in section

    # the per-cell distribution: every number is the report's
    rows = _cell_rows(section)
    expected = {}
    for cell, v in report["cells"].items():
        for c, d in v["criteria"].items():
            expected[(cell, c)] = [
                str(v["judged"]),
                str(v["kept"]),
                str(d["n"]),
                f"{d['mean']:.2f}",
                *_hist(d),
            ]
    for c, d in report["criteria"].items():
        expected[("all cells", c)] = [
            str(report["judged"]),
            str(report["kept"]),
            str(d["n"]),
            f"{d['mean']:.2f}",
            *_hist(d),
        ]
    assert rows == expected
    assert {"writing/en/hhh/-", "code/en/hhh/-", "writing/zh/hhh/-", "tool/en/plugin/calculator+solver"} <= {
        cell for cell, _ in rows
    }

    # what the judge dropped and why, the replies that never parsed counted
    judged, kept = report["judged"], report["kept"]
    seen = len(_dialogues())
    assert f"{seen} dialogues reached the judge step" in section
    assert f"{judged:,} got scores ({kept:,} of them kept); it dropped 3." in section
    for reason, n in report["reasons"].items():
        assert re.search(rf"^\| `{reason}` \| {n} \|", section, re.M), reason
    assert "Replies that never parsed: 1 dialogues" in section

    # score/length correlation and the second judge's agreement, as recorded
    for c, d in report["length_correlation"].items():
        rho = "n/a (one score only)" if d["spearman"] is None else f"{d['spearman']:+.2f}"
        assert f"{c} {rho} over {d['turns']:,} turns" in section
    second = report["second"]
    assert second["models"] == {"judge-b": report["models"]["fake-teacher"]}
    assert f"`judge-b` ({second['models']['judge-b']} judgments)" in section
    for c, a in second["agreement"].items():
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.2f}"
        assert f"| {c} | {a['n']} | {a['exact']:.1%} | {a['within_1']:.1%} | {kappa} |" in section

    # the metadata still parses for the Hub and `datasets`, and the folder passes its checks
    assert DatasetCard(text).data.to_dict()["license"] == meta["license"] == "apache-2.0"
    assert check_dataset_folder(folder.path) == []


def test_a_tag_policy_says_how_many_were_tagged(fake_openai, tmp_path):
    run, report = _judged_run(fake_openai, tmp_path, {**STEP, "policy": "tag"})
    assert report["reasons"] == {}  # nothing dropped: the numbers come from the funnel's row
    folder = build_dataset_folder(run, tmp_path / "ds")
    section = _section(split_card(folder.card_path.read_text(encoding="utf-8"))[1])
    funnel = json.loads((run / "filtered" / "funnel.json").read_text(encoding="utf-8"))
    row = next(s for s in funnel["steps"] if s["step"] == "judge")
    assert row["tagged"] == 3
    assert "it dropped 0 and tagged 3." in section and "policy is `tag`" in section
    assert "| tagged as | dialogues | why |" in section and "| `judge_unparseable` | 1 |" in section


def test_no_judge_no_section(fake_openai, tmp_path):
    plain = build_dataset_folder(make_run_dir(tmp_path / "plain"), tmp_path / "ds-plain")
    body = split_card(plain.card_path.read_text(encoding="utf-8"))[1]
    assert "Judge scores" not in body and "judge" not in body.lower().split("## fields")[0]
    # a report an earlier config left beside the filtered rows is not this run's
    run, _ = _judged_run(fake_openai, tmp_path, name="stale", config_step=False)
    stale = build_dataset_folder(run, tmp_path / "ds-stale")
    assert "## Judge scores" not in stale.card_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", ["waves", "waves-without-report"])
def test_a_run_in_waves_reads_the_report_over_every_wave(fake_openai, tmp_path, layout):
    run, report = _judged_run(fake_openai, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["targets"] = {"writing/en/hhh": 3}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if layout == "waves":
        shutil.copy(run / "filtered" / "judge.json", run / "judge.json")
    card = build_dataset_folder(run, tmp_path / "ds").card_path.read_text(encoding="utf-8")
    if layout == "waves":
        assert f"{report['judged']:,} got scores" in _section(split_card(card)[1])
    else:  # a wave's own filtered/ report is one wave's, not the run's
        assert "## Judge scores" not in card
