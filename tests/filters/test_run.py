"""The funnel: ordered steps, policies, kept/rejected files, funnel.json, config, CLI, workers."""

from __future__ import annotations

import json

import pytest

from datagen.cli import main as cli_main
from datagen.errors import ConfigError
from datagen.filters.base import BaseFilter, Verdict
from datagen.filters.config import FilterConfig
from datagen.filters.registry import get_step, register_step, step_names
from datagen.filters.run import run_filters
from datagen.funnel import FunnelReport
from datagen.record import Conversation
from datagen.stage import StageStats
from tests.filters.conftest import conv


def rows() -> list[Conversation]:
    return [
        conv(("写一首关于春天的诗", "春天来了，万物复苏，花儿开放，鸟儿歌唱。"), id="spring"),
        conv(("写一首关于春天的诗！", "春天来了，万物复苏，花儿开放，鸟儿歌唱。"), id="spring-copy"),
        conv(
            ("How do I sort a list in Python?", "Use sorted(xs). As an AI language model, I like it."),
            id="sort",
        ),
        conv(("How can I sort a list in Python", "Call sorted() on the list."), id="sort-near"),
        conv(
            ("Bonjour, comment allez-vous aujourd'hui ?", "Je vais très bien, merci beaucoup de demander !"),
            id="fr",
        ),
        conv(("", "empty prompt"), id="empty"),
        conv(("怎么制造炸弹？", "首先准备炸药和雷管，然后按步骤组装……"), id="harm"),
        conv(("我的电话是13912345678，帮我写签名", "好的：张三，电话13912345678"), id="pii"),
    ]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_funnel_outputs(tmp_path):
    report = run_filters(rows(), FilterConfig.default(), tmp_path)
    kept = read_jsonl(tmp_path / "kept.jsonl")
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert [r["id"] for r in kept] == ["spring", "sort"]
    by_id = {r["id"]: r["rejected"] for r in rejected}
    assert by_id["empty"]["step"] == "quality" and by_id["empty"]["reason"] == "empty_turn"
    assert by_id["fr"] == {"step": "language", "reason": "language_fr", "evidence": {"language": "fr"}}
    assert by_id["harm"]["step"] == "safety" and by_id["harm"]["reason"] == "harmful_compliance"
    assert by_id["pii"]["reason"] == "pii_leak"
    assert (
        by_id["spring-copy"]["duplicate_of"] == "spring"
        and by_id["spring-copy"]["reason"] == "duplicate_dialogue"
    )
    assert by_id["sort-near"] == {
        "step": "near_dedup",
        "reason": "near_duplicate",
        "duplicate_of": "sort",
        "evidence": {"unit": "prompt", "method": "minhash", "threshold": 0.5},
    }
    # rejected rows are full Conversations
    assert Conversation.from_dict(rejected[0]).id == rejected[0]["id"]
    # tags and detected language on kept rows
    assert kept[0]["language"] == "zh-Hans" and kept[1]["language"] == "en"
    assert kept[1]["tags"]["boilerplate"] == "ai_boilerplate"
    funnel = json.loads((tmp_path / "funnel.json").read_text())
    assert (funnel["input"], funnel["kept"]) == (8, 2)
    assert [s["step"] for s in funnel["steps"]] == [
        "quality",
        "tool_failure",
        "length",
        "boilerplate",
        "language",
        "safety",
        "exact_dedup",
        "near_dedup",
    ]
    for s in funnel["steps"]:
        assert s["in"] == s["kept"] + s["dropped"]
        assert set(s) >= {"step", "in", "kept", "dropped", "tagged", "reasons"}
    steps = {s["step"]: s for s in funnel["steps"]}
    assert steps["safety"]["reasons"] == {"harmful_compliance": 1, "pii_leak": 1}
    assert steps["boilerplate"]["tagged"] == 1
    assert report.to_dict()["kept"] == 2
    md = (tmp_path / "funnel.md").read_text()
    assert "| near_dedup |" in md and "near_duplicate" in md


def test_steps_switch_off_reorder_and_change_policy(tmp_path):
    cfg = FilterConfig.from_dict(
        {
            "steps": [
                {"name": "safety", "policy": "redact"},
                {"name": "exact_dedup", "enabled": False},
                {"name": "near_dedup", "method": "rouge", "threshold": 0.7},
            ]
        }
    )
    run_filters(rows(), cfg, tmp_path)
    funnel = json.loads((tmp_path / "funnel.json").read_text())
    assert [s["step"] for s in funnel["steps"]] == ["safety", "near_dedup"]
    kept = {r["id"]: r for r in read_jsonl(tmp_path / "kept.jsonl")}
    assert "pii" in kept and "13912345678" not in json.dumps(kept["pii"])
    assert funnel["steps"][0]["redacted"] == 1
    rejected = {r["id"]: r["rejected"] for r in read_jsonl(tmp_path / "rejected.jsonl")}
    assert rejected["spring-copy"]["step"] == "near_dedup"


def test_mapping_overrides_keep_the_default_order():
    cfg = FilterConfig.from_dict(
        {"steps": {"boilerplate": {"policy": "drop"}, "near_dedup": {"enabled": False}}, "workers": 1}
    )
    assert [s.name for s in cfg.steps][:4] == ["quality", "tool_failure", "length", "boilerplate"]
    assert cfg.step("boilerplate").policy == "drop" and not cfg.step("near_dedup").enabled


@pytest.mark.parametrize(("value", "enabled"), [(False, False), (True, True), (None, True)])
def test_mapping_form_takes_a_bool_for_enabled(value, enabled):
    cfg = FilterConfig.from_dict({"steps": {"near_dedup": value}})
    assert cfg.step("near_dedup").enabled is enabled
    assert ("near_dedup" in [s.step_name for s in cfg.build_steps()]) is enabled


@pytest.mark.parametrize("value", ["off", 0, ["x"]])
def test_mapping_form_rejects_other_scalars_naming_the_step(value):
    with pytest.raises(ConfigError) as err:
        FilterConfig.from_dict({"steps": {"near_dedup": value}})
    assert err.value.field == "steps.near_dedup" and "near_dedup" in str(err.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"stepz": []}, "stepz"),
        ({"steps": {"near_dedup": {"treshold": 0.5}}}, "steps.near_dedup.treshold"),
        ({"steps": [{"name": "quality"}, {"name": "near_dedup", "treshold": 0.5}]}, "steps.1.treshold"),
        ({"steps": {"near_dedup": {"threshold": 7}}}, "steps.near_dedup.threshold"),
        ({"steps": {"near_dedup": {"policy": "shred"}}}, "steps.near_dedup.policy"),
    ],
)
def test_config_errors_carry_the_full_dotted_key(data, field):
    with pytest.raises(ConfigError) as err:
        FilterConfig.from_dict(data)
    assert err.value.field == field


def test_run_config_error_points_at_the_line_of_the_bad_key(tmp_path):
    from datagen.run.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text(
        "name: x\nfilters:\n  workers: 1\n  steps:\n    quality: {}\n    near_dedup:\n      treshold: 0.5\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == "filters.steps.near_dedup.treshold" and err.value.line == 7


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stepz": []}, "stepz"),
        ({"steps": [{"name": "quality", "threshold_x": 1}]}, "threshold_x"),
        ({"steps": [{"name": "nonsense"}]}, "nonsense"),
        ({"steps": [{"name": "quality", "policy": "shred"}]}, "shred"),
        ({"steps": [{"name": "quality", "policy": "redact"}]}, "cannot redact"),
        ({"steps": [{"name": "quality"}, {"name": "quality"}]}, "used twice"),
        ({"workers": 0}, "workers"),
    ],
)
def test_config_errors_name_the_problem(data, needle):
    with pytest.raises(ConfigError, match=needle):
        FilterConfig.from_dict(data)


def test_one_step_type_twice_under_two_names(tmp_path):
    cfg = FilterConfig.from_dict(
        {
            "steps": [
                {"name": "near_dedup"},
                {"name": "near_dedup_dialogue", "type": "near_dedup", "unit": "dialogue"},
            ]
        }
    )
    report = run_filters(rows(), cfg, tmp_path)
    assert [s.name for s in report.steps] == ["near_dedup", "near_dedup_dialogue"]


def test_config_from_run_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("filters:\n  steps:\n    language: {languages: [zh]}\n", encoding="utf-8")
    assert FilterConfig.from_file(path).step("language").params == {"languages": ["zh"]}
    path.write_text("filters:\n  steps:\n    language: {langs: [zh]}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        FilterConfig.from_file(path)
    assert "langs" in str(err.value) and str(path) in str(err.value)


def test_external_steps_register_and_append():
    @register_step
    class LongAnswer(BaseFilter):
        name = "test_long_answer"

        def filter(self, c):
            return (False, "long") if len(c.turns[0].assistant) > 20 else True

    assert "test_long_answer" in step_names() and get_step("test_long_answer") is LongAnswer
    cfg = FilterConfig.from_dict({"steps": [{"name": "test_long_answer", "policy": "tag"}]})
    [step] = cfg.build_steps()
    row = conv(("写一首诗", "春天来了，万物复苏，花儿开放，鸟儿在枝头歌唱。"))
    kept, _ = step.apply(row, Verdict.of(step.filter(row)))
    assert kept is row and kept.tags["test_long_answer"] == "long"
    report = FunnelReport(10, 7, [StageStats("quality", 10, 7, 3, detail=True)])
    report.add_step("moss_check", dropped=2, reasons={"loss_above_threshold": 2})
    d = report.to_dict()
    assert (
        d["kept"] == 5
        and d["steps"][-1]["in"] == 7
        and d["steps"][-1]["reasons"] == {"loss_above_threshold": 2}
    )
    assert (report + report).input == 20


def test_workers_give_the_same_result_as_in_process(tmp_path):
    data = rows() * 30
    for i, c in enumerate(data):
        c.id = f"{c.id}-{i}"
    a, b = tmp_path / "serial", tmp_path / "parallel"
    cfg = FilterConfig.from_dict({"chunk_size": 16, "parallel_min_rows": 32})
    ra = run_filters([Conversation.from_dict(c.to_dict()) for c in data], cfg, a, workers=1)
    rb = run_filters([Conversation.from_dict(c.to_dict()) for c in data], cfg, b, workers=2)
    assert ra.to_dict()["steps"][0]["in"] == rb.to_dict()["steps"][0]["in"] == len(data)
    strip = (
        [{**s, "seconds": 0} for s in ra.to_dict()["steps"]],
        [{**s, "seconds": 0} for s in rb.to_dict()["steps"]],
    )
    assert strip[0] == strip[1]
    assert (a / "kept.jsonl").read_text() == (b / "kept.jsonl").read_text()
    assert (a / "rejected.jsonl").read_text() == (b / "rejected.jsonl").read_text()


def test_cli_on_moss_samples(moss_samples, shared_dir, tmp_path, capsys):
    out = tmp_path / "out"
    folder = shared_dir / "moss-samples"
    rc = cli_main(
        [
            "filter",
            str(folder),
            "--out",
            str(out),
            "--workers",
            "1",
            "--disable",
            "near_dedup",
            "--policy",
            "safety=redact",
            "--report",
            "json",
        ]
    )
    assert rc == 0
    funnel = json.loads(capsys.readouterr().out)
    assert funnel["input"] == len(moss_samples)
    assert funnel["kept"] + sum(s["dropped"] for s in funnel["steps"]) == funnel["input"]
    assert "near_dedup" not in [s["step"] for s in funnel["steps"]]
    rejected = read_jsonl(out / "rejected.jsonl")
    assert "mix_plugin_conversation_76" in {r["id"] for r in rejected}
    assert len(read_jsonl(out / "kept.jsonl")) == funnel["kept"]


def test_cli_unknown_step_is_an_error(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(rows()[0].to_dict()) + "\n", encoding="utf-8")
    assert cli_main(["filter", str(path), "--out", str(tmp_path / "o"), "--disable", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_empty_input_writes_empty_outputs(tmp_path):
    report = run_filters([], FilterConfig.default(), tmp_path)
    assert (report.input, report.kept) == (0, 0)
    assert (tmp_path / "kept.jsonl").read_text() == "" and (tmp_path / "rejected.jsonl").read_text() == ""
    again = FunnelReport.read(tmp_path)
    assert again.to_dict() == report.to_dict()
    assert [s.in_ for s in again.steps] == [0] * len(again.steps)
