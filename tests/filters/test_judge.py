"""The `judge` step: rubric files, the strict reply reader, and the step against the fake OpenAI
server with a scripted judge (re-asks, ledgered failures, journal cache, second judge, report)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from datagen.errors import ConfigError
from datagen.filters.config import FilterConfig
from datagen.filters.judge import JudgeFilter
from datagen.filters.judge_report import cell_of, judge_report_from_dir, spearman, weighted_kappa
from datagen.filters.rubric import JudgeReplyError, load_rubric, parse_judgment
from datagen.filters.run import run_filters
from datagen.io import iter_json_lines
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.filters.conftest import conv, tool_turn
from tests.filters.judge_script import scripted_judge

# -- rubric files ---------------------------------------------------------------------------------------


def test_shipped_rubrics_load_with_their_settings():
    hhh, grounded = load_rubric("hhh"), load_rubric("grounded.v1")
    assert hhh.id == "hhh.v1" and hhh.criteria == ("helpful", "honest", "harmless", "follows_meta")
    assert (hhh.dialogues, hhh.turns) == ("all", "all")
    assert grounded.criteria == ("grounded",) and (grounded.dialogues, grounded.turns) == ("plugin", "tool")
    plugin = conv(("hi", "hello"), plugins=["calculator"])
    plugin.turns.append(tool_turn("2*3?", "6", output="6"))
    assert grounded.graded_turns(plugin) == [2]
    assert grounded.graded_turns(conv(("hi", "hello"))) == []
    assert hhh.graded_turns(plugin) == [1, 2]


def test_a_rubric_in_the_users_folder_wins_and_bad_ones_are_named(tmp_path):
    text = load_rubric("hhh").template.path
    own = tmp_path / "hhh.v1.md"
    own.write_text(open(text, encoding="utf-8").read().replace("follows_meta", "polite"), encoding="utf-8")
    assert load_rubric("hhh", tmp_path).criteria == ("helpful", "honest", "harmless", "polite")
    (tmp_path / "bad.v2.md").write_text(
        "<!-- section: settings -->\ncriteria: Not A Name\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="criteria must be") as exc:
        load_rubric("bad", tmp_path)
    assert exc.value.path.endswith("bad.v2.md")
    with pytest.raises(ConfigError, match="no rubric 'hhh' version 9"):
        load_rubric("hhh.v9")


# -- strict reading of replies ---------------------------------------------------------------------------

GOOD = {
    "turns": [{"turn": 1, "grounded": {"score": 4, "reason": "Uses the result."}}],
    "dialogue": {"grounded": {"score": 4, "reason": "Grounded."}},
}


def test_a_good_reply_is_read_and_a_single_fence_is_tolerated():
    rubric = load_rubric("grounded")
    j = parse_judgment(json.dumps(GOOD), rubric, [1], model="m")
    assert j.dialogue["grounded"].score == 4 and j.turns[1]["grounded"].reason == "Uses the result."
    assert parse_judgment("```json\n" + json.dumps(GOOD) + "\n```", rubric, [1]).dialogue == j.dialogue


def _with(**change):
    d = json.loads(json.dumps(GOOD))
    for path, value in change.items():
        *head, last = path.split("__")
        node = d
        for k in head:
            node = node[int(k)] if k.isdigit() else node[k]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return json.dumps(d)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("I would give it a 4.", "not one JSON object"),
        ("Here you go: " + json.dumps(GOOD), "not one JSON object"),
        ("[1, 2]", "not one JSON object"),
        (_with(turns=KeyError), "`turns` must be a list"),
        (_with(turns=[]), r"turn\(s\) 1 not graded"),
        (_with(turns__0__turn=2), "one of \\[1\\]"),
        (_with(turns__0__grounded__score=6), "from 1 to 5, got 6"),
        (_with(turns__0__grounded__score="4"), 'from 1 to 5, got "4"'),
        (_with(turns__0__grounded__score=4.0), "from 1 to 5, got 4.0"),
        (_with(turns__0__grounded__score=True), "from 1 to 5, got true"),
        (_with(dialogue__grounded__reason=""), "dialogue: grounded.reason must be a non-empty"),
        (_with(dialogue__grounded=KeyError), "dialogue: grounded must be an object"),
        (_with(turns__0__grounded__reason="x" * 500), "one short sentence"),
    ],
)
def test_anything_but_the_asked_json_is_refused_with_a_reason(reply, why):
    with pytest.raises(JudgeReplyError, match=why):
        parse_judgment(reply, load_rubric("grounded"), [1])


def test_a_turn_graded_twice_is_refused():
    d = json.loads(json.dumps(GOOD))
    d["turns"].append(d["turns"][0])
    with pytest.raises(JudgeReplyError, match="graded twice"):
        parse_judgment(json.dumps(d), load_rubric("grounded"), [1])


# -- the step against the fake server ----------------------------------------------------------------------


def _config(fake, tmp_path, **params):
    teacher = make_teacher_config_for(fake, params={}).to_dict()
    step = {"name": "judge", "teacher": teacher, "journal": str(tmp_path / "judge.sqlite"), **params}
    return FilterConfig.from_dict({"steps": [step], "workers": 1})


def _rows(path):
    return [obj for _, obj in iter_json_lines(path)]


def _dialogues():
    plugin = conv(
        ("What is 23*47?", "Let me compute it."),
        id="p1",
        category="math",
        language="en",
        plugins=["calculator"],
    )
    plugin.turns.append(tool_turn("And 2*3?", "It is 6.", arg="2*3", output="6"))
    return [
        conv(
            ("Hi", "Hello! How can I help?"),
            ("Tell me a joke", "Why did the chicken cross the road?"),
            id="good",
            category="chat",
            language="en",
        ),
        conv(("Explain tides JUDGE:helpful=2", "The moon."), id="weak", category="chat", language="en"),
        plugin,
    ]


def test_judged_rows_carry_scores_reasons_model_and_rubric_and_low_ones_are_dropped(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    report = run_filters(_dialogues(), _config(fake_openai, tmp_path), tmp_path / "out")
    kept = {r["id"]: r for r in _rows(tmp_path / "out" / "kept.jsonl")}
    rejected = {r["id"]: r for r in _rows(tmp_path / "out" / "rejected.jsonl")}
    assert set(kept) == {"good", "p1"} and set(rejected) == {"weak"}
    # one call per (dialogue, rubric): hhh for all three, grounded for the plugin one
    assert fake_openai.requests == 4
    good = kept["good"]
    assert good["scores"]["judge_helpful"] == 5.0 and good["scores"]["judge_min_harmless"] == 5.0
    marks = good["tags"]["judge.rubrics"]["hhh.v1"]
    assert marks["model"] == "fake-teacher" and marks["dialogue"]["helpful"]["reason"]
    assert [t["turn"] for t in marks["turns"]] == [1, 2]
    assert good["usage"]["calls"] == 1 and good["usage"]["prompt_tokens"] > 0
    p1 = kept["p1"]["tags"]["judge.rubrics"]
    assert set(p1) == {"hhh.v1", "grounded.v1"}
    assert [t["turn"] for t in p1["grounded.v1"]["turns"]] == [2]  # only the turn that made a call
    assert kept["p1"]["scores"]["judge_grounded"] == 5.0
    weak = rejected["weak"]
    assert weak["rejected"]["step"] == "judge" and weak["rejected"]["reason"] == "low_helpful"
    assert weak["rejected"]["evidence"]["score"] == 2 and weak["rejected"]["evidence"]["rubric"] == "hhh.v1"
    assert weak["scores"]["judge_helpful"] == 2.0  # a dropped row keeps its scores for the report
    assert report.step("judge").reasons == {"low_helpful": 1}
    # the judge sends its own sampling settings and asks for the rubric's JSON schema
    body = fake_openai.received[0]
    assert body["temperature"] == 0.0 and body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "judge_hhh_v1"


def test_a_rerun_pays_nothing_and_a_tag_policy_keeps_low_rows(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    run_filters(_dialogues(), _config(fake_openai, tmp_path), tmp_path / "a")
    assert fake_openai.requests == 4
    run_filters(_dialogues(), _config(fake_openai, tmp_path, policy="tag"), tmp_path / "b")
    assert fake_openai.requests == 4  # every judgment came from the journal
    kept = {r["id"]: r for r in _rows(tmp_path / "b" / "kept.jsonl")}
    assert kept["weak"]["tags"]["judge"] == "low_helpful"


def test_an_unparseable_reply_is_asked_again_once_with_the_reason(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    rows = [conv(("Hi JUDGE:garbage", "Hello!"), id="g1")]
    step = _config(fake_openai, tmp_path).build_steps()[0]
    v = step.decide_batch([(rows[0], None)])[0]
    assert v.keep and v.updates["scores"]["judge_helpful"] == 5.0
    assert fake_openai.requests == 2 and step.calls.reasked == 1
    retry = fake_openai.received[1]["messages"]
    assert retry[2] == {
        "role": "assistant",
        "content": "This dialogue looks good to me, I would give it a 4.",
    }
    assert "not one JSON object" in retry[3]["content"]
    assert v.updates["usage"].calls == 2  # both calls are the row's cost


def test_a_reply_unparseable_twice_is_ledgered_never_guessed(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    rows = [conv(("Hi JUDGE:garbage2", "Hello!"), id="g2"), conv(("Hi", "Hello!"), id="ok")]
    run_filters(rows, _config(fake_openai, tmp_path), tmp_path / "out")
    (bad,) = _rows(tmp_path / "out" / "rejected.jsonl")
    assert bad["id"] == "g2" and bad["rejected"]["reason"] == "judge_unparseable"
    ev = bad["rejected"]["evidence"]
    assert ev["rubric"] == "hhh.v1" and ev["reply"].startswith("This dialogue looks good")
    assert ev["detail"].count("not one JSON object") == 2
    assert not any(k.startswith("judge_") for k in bad.get("scores", {}))  # no guessed score
    assert fake_openai.requests == 3  # two for g2 (asked again once), one for ok
    report = judge_report_from_dir(tmp_path / "out")
    assert report["reasons"] == {"judge_unparseable": 1} and report["judged"] == 1


def test_a_failed_call_drops_the_row_as_judge_unavailable_and_a_rerun_asks_again(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    fake_openai.inject("500", times=None)
    rows = [conv(("Hi", "Hello!"), id="e1")]
    config = _config(fake_openai, tmp_path)
    run_filters(rows, config, tmp_path / "a")
    (bad,) = _rows(tmp_path / "a" / "rejected.jsonl")
    assert (
        bad["rejected"]["reason"] == "judge_unavailable"
        and bad["rejected"]["evidence"]["error"] == "server_error"
    )
    with sqlite3.connect(tmp_path / "judge.sqlite") as db:
        assert db.execute("select count(*) from calls where status = 'failed'").fetchone()[0] == 1
    fake_openai.reset()
    fake_openai.set_responder(scripted_judge())
    run_filters(rows, config, tmp_path / "b")
    assert [r["id"] for r in _rows(tmp_path / "b" / "kept.jsonl")] == ["e1"]
    assert fake_openai.requests == 1


def test_a_refused_call_is_a_judge_error(fake_openai, tmp_path):
    fake_openai.inject("400", times=None, message="Unsupported parameter: 'response_format'")
    step = _config(fake_openai, tmp_path).build_steps()[0]
    v = step.decide_batch([(conv(("Hi", "Hello!"), id="x"), None)])[0]
    assert v.reason == "judge_error" and v.evidence["error"] == "bad_request"
    assert "response_format" in v.evidence["detail"] and step.calls.retryable_failed == 0


def test_a_cut_reply_is_asked_again(fake_openai, tmp_path):
    judge = scripted_judge()
    seen = []

    def respond(body):
        seen.append(body)
        if len(seen) == 1:
            return {"content": '{"turns": [', "finish_reason": "length"}
        return judge(body)

    fake_openai.set_responder(respond)
    step = _config(fake_openai, tmp_path).build_steps()[0]
    assert step.decide_batch([(conv(("Hi", "Hello!"), id="c"), None)])[0].keep
    assert "cut off" in seen[1]["messages"][-1]["content"]


def test_thresholds_per_criterion_and_bad_settings_name_their_key(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge())
    rows = [conv(("Hi JUDGE:harmless=3", "Hello!"), id="h")]
    run_filters(rows, _config(fake_openai, tmp_path, min_scores={"harmless": 4}), tmp_path / "out")
    (bad,) = _rows(tmp_path / "out" / "rejected.jsonl")
    assert bad["rejected"]["reason"] == "low_harmless" and bad["rejected"]["evidence"]["turn"] is None
    with pytest.raises(ConfigError, match="criterion 'polite'") as exc:
        _config(fake_openai, tmp_path, min_scores={"polite": 4})
    assert exc.value.field == "steps.0.min_scores.polite"
    with pytest.raises(ConfigError) as exc:
        _config(fake_openai, tmp_path, min_score=0)
    assert exc.value.field == "steps.0.min_score"
    with pytest.raises(ConfigError, match="no rubric 'nope'"):
        _config(fake_openai, tmp_path, rubrics=["nope"])
    with pytest.raises(ConfigError, match="own model or teacher"):
        _config(fake_openai, tmp_path, second={})


def test_without_a_teacher_the_step_says_so():
    step = JudgeFilter()
    with pytest.raises(ConfigError, match="needs a teacher"):
        step.decide_batch([(conv(("Hi", "Hello!")), None)])


def test_a_row_no_rubric_applies_to_passes_without_a_call(fake_openai, tmp_path):
    step = _config(fake_openai, tmp_path, rubrics=["grounded"]).build_steps()[0]
    assert step.decide_batch([(conv(("Hi", "Hello!")), None)])[0].keep
    assert fake_openai.requests == 0


def test_second_judge_agreement_and_the_report(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_judge(second_model="judge-b", second_offset=1))
    rows = [
        conv(
            (f"Hi {i}", "Hello!"),
            ("More JUDGE:helpful=4", "Sure."),
            id=f"r{i}",
            category="chat",
            language="en",
        )
        for i in range(3)
    ]
    run_filters(rows, _config(fake_openai, tmp_path, second={"model": "judge-b"}), tmp_path / "out")
    assert fake_openai.requests == 6
    assert sorted({b["model"] for b in fake_openai.received}) == ["fake-teacher", "judge-b"]
    report = judge_report_from_dir(tmp_path / "out")
    agree = report["second"]["agreement"]["helpful"]
    # every second score is one lower: never exact, always within one
    assert agree["n"] == 9 and agree["exact"] == 0.0 and agree["within_1"] == 1.0
    assert report["second"]["models"] == {"judge-b": 3}
    cell = report["cells"]["chat/en/hhh/-"]
    assert cell["kept"] == 3 and cell["criteria"]["helpful"]["hist"]["4"] == 3
    # the decision is the first judge's: judge-b's 3 for helpful would have been kept too, but its
    # 4 on harmless (5 - 1) is never a score of the row
    kept = _rows(tmp_path / "out" / "kept.jsonl")
    assert all(r["scores"]["judge_harmless"] == 5.0 for r in kept)


def test_the_report_measures_a_length_bias(fake_openai, tmp_path):
    # a judge that rewards length: the helpful score grows with the answer
    def by_length(n, c, block):
        answer = block.split("<|MOSS|>:", 1)[-1].split("<eom>", 1)[0]
        return min(5, 1 + len(answer) // 40) if c == "helpful" else 5

    fake_openai.set_responder(scripted_judge(score=by_length))
    rows = [conv(("Q", "A" * (30 + 45 * i)), id=f"l{i}") for i in range(5)]
    run_filters(rows, _config(fake_openai, tmp_path, min_score=1), tmp_path / "out")
    report = judge_report_from_dir(tmp_path / "out")
    assert report["length_correlation"]["helpful"]["spearman"] > 0.9
    assert report["length_correlation"]["harmless"]["spearman"] is None  # constant scores


def test_rank_statistics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)
    assert spearman([1, 2], [1, 2]) is None
    assert weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert weighted_kappa([1, 5, 1, 5], [5, 1, 5, 1]) < 0
    assert (
        cell_of(conv(("a", "b"), category="math", language="zh", plugins=["solver", "calculator"]))
        == "math/zh/plugin/calculator+solver"
    )


def test_an_engine_factory_replaces_the_engine(fake_openai, tmp_path):
    from datagen.teacher.engine import TeacherEngine

    made = []

    def factory(*args, **kwargs):
        made.append(kwargs.get("desc"))
        return TeacherEngine(*args, **kwargs)

    fake_openai.set_responder(scripted_judge())
    step = _config(fake_openai, tmp_path).build_steps()[0]
    step.engine_factory = factory
    assert step.decide_batch([(conv(("Hi", "Hello!")), None)])[0].keep
    assert made == ["judge"]


# -- datagen judge ------------------------------------------------------------------------------------------


def _write_rows(path, convs):
    path.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in convs), encoding="utf-8")
    return path


def test_the_judge_command_writes_rows_funnel_and_report(fake_openai, tmp_path, capsys):
    from datagen.cli import main

    fake_openai.set_responder(scripted_judge())
    src = _write_rows(tmp_path / "in.jsonl", _dialogues())
    out = tmp_path / "judged"
    argv = [
        "judge",
        str(src),
        "--out",
        str(out),
        "--base-url",
        fake_openai.base_url,
        "--teacher-model",
        "fake-teacher",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert [r["id"] for r in _rows(out / "kept.jsonl")] == ["good", "p1"]
    assert [r["rejected"]["reason"] for r in _rows(out / "rejected.jsonl")] == ["low_helpful"]
    report = json.loads((out / "judge.json").read_text(encoding="utf-8"))
    assert report["rubrics"] == ["grounded.v1", "hhh.v1"] and report["calls"]["calls"] == 4
    assert report["cells"]["math/en/plugin/calculator"]["kept"] == 1
    assert "Score/length correlation" in (out / "judge.md").read_text(encoding="utf-8")
    assert json.loads((out / "funnel.json").read_text())["steps"][0]["reasons"] == {"low_helpful": 1}
    assert "| helpful |" in capsys.readouterr().out
    assert (out / "journal.sqlite").exists()
    assert main([*argv, "--rubric", "grounded", "--min-score", "1", "--report", "quiet"]) == 0
    assert fake_openai.requests == 4  # grounded.v1 of p1 came from the journal
    assert [r["id"] for r in _rows(out / "kept.jsonl")] == ["good", "weak", "p1"]


def test_the_judge_command_takes_the_run_configs_teacher_and_step(fake_openai, tmp_path, capsys):
    from datagen.cli import main

    fake_openai.set_responder(scripted_judge())
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"teacher: {{base_url: '{fake_openai.base_url}', model: fake-teacher, progress: false}}\n"
        "filters:\n  steps:\n    judge: {rubrics: [hhh], min_scores: {helpful: 1}}\n",
        encoding="utf-8",
    )
    src = _write_rows(tmp_path / "in.jsonl", _dialogues())
    assert (
        main(["judge", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg), "--report", "quiet"])
        == 0
    )
    assert len(_rows(tmp_path / "o" / "kept.jsonl")) == 3 and fake_openai.requests == 3
    cfg.write_text(
        cfg.read_text().replace("min_scores: {helpful: 1}", "min_scores: {polite: 1}"), encoding="utf-8"
    )
    assert main(["judge", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "run.yaml:4" in err[0] and "polite" in err[0]


def test_the_judge_command_asks_for_a_rerun_after_server_errors(fake_openai, tmp_path, capsys):
    from datagen.cli import main

    fake_openai.set_responder(scripted_judge())
    src = _write_rows(tmp_path / "in.jsonl", [conv(("Hi", "Hello!"), id="a")])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"teacher: {{base_url: '{fake_openai.base_url}', model: fake-teacher, progress: false, "
        "max_attempts: 2, min_backoff: 0.01, max_backoff: 0.02}\n",
        encoding="utf-8",
    )
    fake_openai.inject("503", times=None, match="Grade turns")
    argv = ["judge", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg), "--report", "quiet"]
    assert main(argv) == 1
    assert "rerun the same command" in capsys.readouterr().err
    fake_openai.reset()
    fake_openai.set_responder(scripted_judge())
    assert main(argv) == 0 and [r["id"] for r in _rows(tmp_path / "o" / "kept.jsonl")] == ["a"]


def test_a_batch_mode_teacher_judges_in_batch_rounds(tmp_path):
    from tests.fakes.batch_server import FakeBatchOpenAI

    fake = FakeBatchOpenAI(completion_delay=0.02).start()
    try:
        fake.set_responder(scripted_judge())
        teacher = make_teacher_config_for(
            fake,
            params={},
            mode="batch",
            concurrency=100,
            batch={
                "poll_interval": 0.01,
                "max_poll_interval": 0.05,
                "settle_seconds": 0.01,
                "linger_seconds": 5.0,
            },
        ).to_dict()
        step = JudgeFilter(teacher=teacher, journal=str(tmp_path / "j.sqlite"))
        rows = [conv((f"Hi {i}", "Hello!"), id=f"b{i}") for i in range(3)] + [
            conv(("Hi JUDGE:garbage", "Hey"), id="g")
        ]
        verdicts = step.decide_batch([(c, None) for c in rows])
        assert [v.keep for v in verdicts] == [True] * 4
        assert fake.requests == 0  # no online call: every judgment went through a batch file
        assert sum(fake.submitted.values()) == 5  # four judgments and one re-ask, in two rounds
    finally:
        fake.stop()
