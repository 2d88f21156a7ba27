"""`datagen filter` and `datagen check` on released MOSS files outside the grammar: never a stopped
run, every such file rejected with its reason, counted in the funnel (nothing dropped silently)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from datagen.cli import main
from datagen.filters.config import FilterConfig
from datagen.filters.run import run_filters
from datagen.formats.reader import read_conversations
from datagen.funnel import FunnelReport
from datagen.stage import StageStats
from tests.formats.moss_defects import DEFECTS, write_defects

FORMAT_REASONS = Counter(d.reason for d in DEFECTS.values() if d.step == "format")


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_filter_rejects_each_defect_with_its_reason(tmp_path, shared_dir, moss_samples, capsys):
    write_defects(tmp_path / "in", moss_samples)
    out = tmp_path / "filtered"
    argv = [
        "filter",
        str(tmp_path / "in"),
        str(shared_dir / "moss-samples"),
        "--out",
        str(out),
        "--workers",
        "1",
        "--report",
        "json",
    ]
    assert main(argv) == 0
    funnel = json.loads(capsys.readouterr().out)
    n = len(DEFECTS) + len(moss_samples)
    rejected = {r["id"]: r["rejected"] for r in _rows(out / "rejected.jsonl")}
    for name, d in DEFECTS.items():
        assert (rejected[name]["step"], rejected[name]["reason"]) == (d.step, d.reason), name
        if d.step == "format":
            assert rejected[name]["evidence"]["turn"] == d.turn
    assert rejected["numbered_commands"]["evidence"]["segment"] == "Commands"
    assert not set(DEFECTS) & {r["id"] for r in _rows(out / "kept.jsonl")}
    first = funnel["steps"][0]
    assert (first["step"], first["in"], first["dropped"]) == ("format", n, sum(FORMAT_REASONS.values()))
    assert first["reasons"] == dict(FORMAT_REASONS)
    assert funnel["input"] == n and funnel["kept"] + sum(s["dropped"] for s in funnel["steps"]) == n
    assert "malformed_commands" in (out / "funnel.md").read_text(encoding="utf-8")


def test_the_format_step_runs_in_worker_processes_too(tmp_path, moss_samples):
    write_defects(tmp_path / "in", moss_samples)
    cfg = FilterConfig.from_dict(
        {"steps": [{"name": "quality"}], "workers": 2, "chunk_size": 3, "parallel_min_rows": 1}
    )
    report = run_filters(read_conversations(tmp_path / "in"), cfg, tmp_path / "out")
    assert [s.name for s in report.steps] == ["format", "quality"]
    assert report.steps[0].reasons == FORMAT_REASONS and dict(report.steps[1].reasons) == {"broken_tags": 1}
    assert report.kept == 0


def test_funnels_add_with_and_without_the_format_step():
    a = FunnelReport(
        10,
        6,
        [StageStats("format", 10, 8, 2, reasons=Counter(missing_result=2)), StageStats("quality", 8, 6, 2)],
    )
    b = FunnelReport(5, 5, [StageStats("quality", 5, 5, 0)])  # nothing malformed in this shard
    total = a + b
    assert [(s.name, s.in_, s.kept, s.dropped) for s in total.steps] == [
        ("format", 15, 13, 2),
        ("quality", 13, 11, 2),
    ]
    assert (b + a).to_dict()["steps"] == total.to_dict()["steps"]


@pytest.fixture(scope="module")
def tiny_moss(tmp_path_factory, moss_samples):
    from tests.moss.conftest import build_tiny_moss, corpus, sample_records

    folder = tmp_path_factory.mktemp("tiny-moss")
    build_tiny_moss(folder, corpus(sample_records(moss_samples)))
    return folder


@pytest.mark.slow
def test_check_rejects_malformed_rows_unscored_and_counts_them(tmp_path, moss_samples, tiny_moss, capsys):
    from datagen.check.files import check_files

    src = tmp_path / "in"
    write_defects(src, moss_samples)
    good = sorted((p for p in moss_samples if "without_plugins" in str(p)), key=lambda p: p.stat().st_size)[
        :2
    ]
    for p in good:
        (src / p.name).write_bytes(p.read_bytes())
    n_bad = sum(FORMAT_REASONS.values())
    n = len(DEFECTS) + len(good)
    out = tmp_path / "scored.jsonl"
    summary = check_files([src], out, model=str(tiny_moss), max_length=1024, progress=False)
    assert (
        f"warning: {n_bad} input rows are not well-formed MOSS 003 and were rejected unscored"
        in capsys.readouterr().err
    )
    scored = {r["id"] for r in _rows(out)}
    assert scored == {p.stem for p in good} | {"end_tag_in_answer"}  # the quality filter's, not check's
    step = summary["funnel_step"]
    assert (step["in"], step["kept"], step["dropped"], step["reasons"]) == (
        n,
        n - n_bad,
        n_bad,
        dict(FORMAT_REASONS),
    )
    rejected = {r["id"]: r["rejected"] for r in _rows(tmp_path / "scored.rejected.jsonl")}
    assert {k: v["reason"] for k, v in rejected.items()} == {
        k: d.reason for k, d in DEFECTS.items() if d.step == "format"
    }

    # with a threshold and a sample run: malformed rows past max_rows are not passed on unscored
    summary = check_files(
        [src],
        out,
        model=str(tiny_moss),
        max_length=1024,
        progress=False,
        max_loss=1e9,
        max_rows=2,
        kept_path=tmp_path / "kept.jsonl",
        rejected_path=tmp_path / "rejected.jsonl",
    )
    kept = {r["id"] for r in _rows(tmp_path / "kept.jsonl")}
    assert kept == {p.stem for p in good} | {"end_tag_in_answer"}
    assert {r["id"] for r in _rows(tmp_path / "rejected.jsonl")} == set(rejected)
    assert summary["malformed"] == dict(FORMAT_REASONS)
    assert f"warning: {n_bad} input rows are not well-formed" in capsys.readouterr().err
    step = summary["funnel_step"]
    assert (step["in"], step["kept"] + step["dropped"], step["reasons"]) == (n, n, dict(FORMAT_REASONS))
