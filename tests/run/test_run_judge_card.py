"""A plain `datagen run` with a judge step and the dataset folder, against the fake teacher with
scripted judgments: funnel.json carries the judge's distributions per cell, funnel.png its panel,
and the card its section, each from the report the filter stage wrote."""

from __future__ import annotations

import json

import yaml

from datagen.cli import main
from datagen.publish.card import split_card
from datagen.run.plot import plot_run
from tests.pipeline.test_quota_run import _config, responder
from tests.run.test_judge_plot import png_size


def test_a_run_with_a_judge_reports_it_in_funnel_png_and_card(fake_openai, tmp_path):
    fake_openai.set_responder(responder)
    path = _config(tmp_path, fake_openai, targets={})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    del config["targets"]
    config["expand"]["targets"] = {"default": 1, "tool": 1}
    config["dataset"] = {"enabled": True, "validation_fraction": 0.0}
    config["publish"] = {"license": "mit"}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0

    report = json.loads((out / "filtered" / "judge.json").read_text(encoding="utf-8"))
    assert report["judged"] > 0 and report["reasons"].get("low_helpful")
    funnel = json.loads((out / "funnel.json").read_text(encoding="utf-8"))
    assert funnel["judge"]["cells"] == report["cells"]
    assert funnel["judge"]["length_correlation"] == report["length_correlation"]
    assert "Score/length correlation" in (out / "funnel.md").read_text(encoding="utf-8")

    # the run's picture is the funnel's plus the judge panel
    plain = {k: v for k, v in funnel.items() if k != "judge"}
    width, height = png_size(plot_run(plain, [], tmp_path / "plain.png"))
    assert png_size(out / "funnel.png")[1] > height

    body = split_card((out / "dataset" / "README.md").read_text(encoding="utf-8"))[1]
    section = body.split("## Judge scores\n", 1)[1].split("\n## ", 1)[0]
    step = next(s for s in funnel["steps"] if s["step"] == "judge")
    assert f"{step['in']} dialogues reached the judge step" in section
    assert (
        f"{report['judged']} got scores ({report['kept']} of them kept); it dropped {step['dropped']}."
        in section
    )
    assert f"| `low_helpful` | {report['reasons']['low_helpful']} |" in section
    for cell, v in report["cells"].items():
        d = v["criteria"]["helpful"]
        hist = " | ".join(str(d["hist"][str(s)]) for s in range(1, 6))
        assert f"| `{cell}` | {v['judged']} | {v['kept']} | follows_meta |" in section
        assert f"|  |  |  | helpful | {d['n']} | {d['mean']:.2f} | {hist} |" in section
