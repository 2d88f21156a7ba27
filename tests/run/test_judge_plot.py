"""funnel.png with a judge: a panel of each cell's score distribution, drawn from the report the
judge step wrote (against the fake teacher with scripted judgments); no panel without a judge."""

from __future__ import annotations

import struct

import pytest

from datagen.filters.config import FilterConfig
from datagen.filters.judge_report import judge_report_from_dir
from datagen.filters.run import run_filters
from datagen.run.plot import JUDGE_TITLE, funnel_figure, plot_run
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.filters.conftest import conv, tool_turn
from tests.filters.judge_script import scripted_judge


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _rows():
    plugin = conv(
        ("What is 2*3? JUDGE:grounded=2", "6."),
        id="p",
        category="math",
        language="en",
        plugins=["calculator"],
    )
    plugin.turns.append(tool_turn("And 2*4?", "8.", arg="2*4", output="8"))
    rows = [plugin]
    for i in range(12):  # a dozen cells: categories x languages
        mark = f" JUDGE:helpful={1 + i % 5}"
        rows.append(
            conv(
                (f"Question {i}{mark}", f"Answer {i}."),
                id=f"r{i}",
                category=f"cat{i // 2}",
                language="en zh".split()[i % 2],
            )
        )
    return rows


@pytest.fixture
def judged(fake_openai, tmp_path):
    """A funnel as a run writes it, with the judge step's report."""
    fake_openai.set_responder(scripted_judge())
    teacher = make_teacher_config_for(fake_openai, params={}).to_dict()
    config = FilterConfig.from_dict(
        {
            "steps": [
                {"name": "judge", "teacher": teacher, "journal": str(tmp_path / "j.sqlite"), "min_score": 2}
            ],
            "workers": 1,
        }
    )
    report = run_filters(_rows(), config, tmp_path / "filtered")
    judge = judge_report_from_dir(tmp_path / "filtered")
    funnel = {"input": 13, "kept": report.kept, "steps": report.to_dict()["steps"]}
    return funnel, {k: judge[k] for k in ("rubrics", "models", "criteria", "cells", "length_correlation")}


def test_the_judge_panel_shows_every_cells_score_shares(judged):
    import matplotlib.pyplot as plt

    funnel, judge = judged
    assert len(judge["cells"]) == 13
    plain = funnel_figure(funnel, [])
    fig = funnel_figure({**funnel, "judge": judge}, [])
    assert JUDGE_TITLE not in [ax.get_title() for ax in plain.axes]
    (panel,) = [ax for ax in fig.axes if ax.get_title() == JUDGE_TITLE]
    assert len(fig.axes) == len(plain.axes) + 1
    labels = [t.get_text() for t in panel.get_yticklabels()]
    assert sorted(labels) == sorted(judge["cells"])
    # each cell's bar: five segments, one per score, as wide as that score's share of the cell's
    # scores over every criterion
    for label, y in zip(labels, panel.get_yticks(), strict=True):
        counts = [
            sum(d["hist"][str(s)] for d in judge["cells"][label]["criteria"].values()) for s in range(1, 6)
        ]
        widths = [p.get_width() for p in panel.patches if abs(p.get_y() + p.get_height() / 2 - y) < 1e-9]
        assert widths == pytest.approx([n / sum(counts) for n in counts]), label
    plt.close(plain)
    plt.close(fig)
    low = [
        s
        for s in range(1, 6)
        if any(judge["cells"][c]["criteria"]["helpful"]["hist"][str(s)] for c in judge["cells"])
    ]
    assert low == [1, 2, 3, 4, 5]  # the scripted scores reach every bar segment


def test_the_png_grows_a_panel_only_with_a_judge(judged, tmp_path):
    funnel, judge = judged
    without = png_size(plot_run(funnel, [], tmp_path / "plain.png"))
    with_judge = png_size(plot_run({**funnel, "judge": judge}, [], tmp_path / "judged.png"))
    assert with_judge[0] == without[0] and with_judge[1] > without[1]
    empty = png_size(plot_run({**funnel, "judge": {**judge, "cells": {}}}, [], tmp_path / "empty.png"))
    assert empty == without
