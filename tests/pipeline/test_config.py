"""The run config: typed sections, line-numbered errors, --set overrides, fingerprints."""

from pathlib import Path

import pytest

from datagen.errors import ConfigError
from datagen.run.config import apply_overrides, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_and_demo_configs_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # their seed file is found from any working directory
    for name in ("example.yaml", "demo.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.teacher.base_url.startswith("http")
        assert cfg.name
        assert Path(cfg.seeds.path) == REPO / "seeds" / "starter.jsonl", name


def test_unknown_top_level_key_names_key_and_line(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: m\nfilterz: {}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}:4: filterz: unknown key")


def test_mistyped_nested_key_names_key_and_line(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: m\n  concurency: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert f"{p}:4:" in msg and "concurency" in msg


def test_mistyped_key_in_pipeline_section(tmp_path):
    p = write(tmp_path, "check:\n  enabled: true\n  max_los: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}:3: check.max_los: unknown key")


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "name: x\nteacher: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(p) in str(exc.value) and "invalid YAML" in str(exc.value)


def test_set_overrides_are_typed_and_nested(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: m\n")
    cfg = load_config(
        p,
        [
            "teacher.model=gpt-4o-mini",
            "teacher.concurrency=7",
            "check.enabled=true",
            "check.model=m",
            "publish.repo_id=org/name",
        ],
    )
    assert cfg.teacher.model == "gpt-4o-mini"
    assert cfg.teacher.concurrency == 7
    assert cfg.check.enabled is True
    assert cfg.publish.repo_id == "org/name"


def test_set_rejects_unknown_key(tmp_path):
    p = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, ["teacher.modle=x"])
    assert "modle" in str(exc.value)


def test_apply_overrides_without_equals_is_an_error():
    with pytest.raises(ConfigError):
        apply_overrides({}, ["teacher.model"])


def test_fingerprint_ignores_publish_but_not_teacher(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: a\n")
    base = load_config(p).fingerprint()
    assert load_config(p, ["publish.repo_id=o/n"]).fingerprint() == base
    assert load_config(p, ["teacher.model=b"]).fingerprint() != base
    # a stage fingerprint only moves with its own sections
    assert load_config(p, ["teacher.model=b"]).fingerprint("filters") == load_config(p).fingerprint("filters")


def test_fingerprint_ignores_how_hard_the_teacher_is_pushed(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: a\n  concurrency: 4\n")
    base = load_config(p).fingerprint()
    assert load_config(p, ["teacher.concurrency=64", "teacher.rpm=100"]).fingerprint() == base
    assert load_config(p, ["teacher.params={seed: 3}"]).fingerprint() != base


@pytest.mark.parametrize(
    "text,override,where,message",
    [
        ("seed: abc\n", None, "seed", "must be a whole number"),
        ("dialogues: [hhh]\n", None, "dialogues", "must be a mapping"),
        ("seeds:\n  per_cell: '5'\n", None, "seeds.per_cell", "must be a whole number"),
        ("seeds:\n  languages: en\n", None, "seeds.languages", "must be a list of strings"),
        ("dialogues:\n  hhh:\n    enabled: maybe\n", None, "dialogues.hhh.enabled", "must be true or false"),
        ("check:\n  enabled: true\n", None, "check.model", "needs a model"),
        ("check:\n  percentile: 150\n  model: m\n", None, "check.percentile", "between 0 and 100"),
        ("finetune:\n  bogus: 1\n", None, "finetune.bogus", "unknown"),
        ("name: x\n", "publish.private=sure", "publish.private", "true or false"),
    ],
)
def test_section_values_are_checked_with_their_line(tmp_path, text, override, where, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, [override] if override else [])
    msg = str(exc.value)
    assert msg.startswith(str(p)) and where in msg and message in msg, msg


def test_dataset_fingerprint_follows_the_license_but_not_visibility(tmp_path):
    p = write(tmp_path, "name: x\npublish:\n  license: mit\n")
    base = load_config(p).fingerprint("dataset", "publish")
    assert load_config(p, ["publish.private=true"]).fingerprint("dataset", "publish") == base
    assert load_config(p, ["publish.license=apache-2.0"]).fingerprint("dataset", "publish") != base


def test_fingerprint_leaves_out_speed_knobs_and_other_kinds(tmp_path):
    p = write(
        tmp_path,
        "name: x\ndialogues:\n  hhh:\n    options: {turns: {default: [2]}}\n"
        "  plugin:\n    options: {turns: {default: [1]}}\ntools:\n  search: {}\n  solver: {}\n",
    )
    base = load_config(p)
    faster = load_config(
        p,
        [
            "dialogues.hhh.options.concurrency=8",
            "tools.search.concurrency=16",
            "tools.solver.timeout=5",
            "check.batch_size=16",
            "filters.workers=2",
        ],
    )
    assert faster.fingerprint() == base.fingerprint()
    other_kind = load_config(p, ["dialogues.plugin.options.max_tokens=100"])
    assert other_kind.fingerprint("dialogues.hhh") == base.fingerprint("dialogues.hhh")
    assert other_kind.fingerprint("dialogues.plugin") != base.fingerprint("dialogues.plugin")
    assert load_config(p, ["check.model=m", "check.percentile=50"]).fingerprint(
        "check.model"
    ) != base.fingerprint("check.model")


def test_relative_paths_in_the_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "lex").mkdir()
    (folder / "rubrics").mkdir()
    (folder / "lex" / "extra.tsv").write_text("moonshine\tdrugs\t2\n", encoding="utf-8")
    p = folder / "run.yaml"
    p.write_text(
        "seeds:\n  path: ../seeds/mine.jsonl\n"
        "expand:\n  templates_dir: templates\n"
        "dialogues:\n  plugin:\n    options: {templates_dir: ./tpl}\n"
        "tools:\n  search: {docs: [docs/a.jsonl, /abs/b.jsonl]}\n"
        "filters:\n  steps:\n    - {name: safety, lexicons: [lex/extra.tsv]}\n"
        "    - {name: judge, rubrics_dir: rubrics}\n"
        "check:\n  model: models\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rel = "../project/configs"  # the config as the user named it, relative to the working directory
    cfg = load_config(f"{rel}/run.yaml")
    assert cfg.seeds.path == "../project/seeds/mine.jsonl"
    assert cfg.expand.templates_dir == f"{rel}/templates"
    assert cfg.dialogues["plugin"].options["templates_dir"] == f"{rel}/tpl"
    assert cfg.tools["search"]["docs"] == [f"{rel}/docs/a.jsonl", "/abs/b.jsonl"]
    assert cfg.filters.step("safety").params["lexicons"] == [f"{rel}/lex/extra.tsv"]
    assert cfg.filters.step("judge").params["rubrics_dir"] == f"{rel}/rubrics"
    assert cfg.check.model == f"{rel}/models"
    # what the user wrote is what fingerprints and manifests see
    assert cfg.raw["seeds"]["path"] == "../seeds/mine.jsonl"
    assert cfg.raw["tools"]["search"]["docs"] == ["docs/a.jsonl", "/abs/b.jsonl"]
    assert load_config(p).fingerprint() == cfg.fingerprint()


def test_a_missing_file_named_in_the_config_is_named_in_the_error(tmp_path):
    p = write(tmp_path, "filters:\n  steps:\n    safety: {lexicons: [extra.tsv]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value) == (
        f"{p}:3: filters.steps.safety: step 'safety': {tmp_path / 'extra.tsv'}: "
        "cannot read lexicon: No such file or directory"
    )


def test_set_paths_and_defaults_stay_relative_to_the_working_directory(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    p = folder / "run.yaml"
    p.write_text("seeds:\n  path: mine.jsonl\ncheck:\n  model: smollm2\n", encoding="utf-8")
    assert load_config(p).seeds.path == str(folder / "mine.jsonl")
    assert load_config(p).check.model == "smollm2"  # an alias, not a file
    cfg = load_config(p, ["seeds.path=data/other.jsonl", "expand.templates_dir=tpl"])
    assert cfg.seeds.path == "data/other.jsonl" and cfg.expand.templates_dir == "tpl"
    assert load_config(write(tmp_path, "name: x\n")).seeds.path == "seeds/starter.jsonl"


def test_a_set_on_an_aliased_block_changes_only_that_place(tmp_path):
    p = write(
        tmp_path, "dialogues:\n  hhh:\n    options: &opts {max_tokens: 100}\n  plugin:\n    options: *opts\n"
    )
    cfg = load_config(p, ["dialogues.hhh.options.max_tokens=5"])
    assert cfg.dialogues["hhh"].options["max_tokens"] == 5
    assert cfg.dialogues["plugin"].options["max_tokens"] == 100


def test_a_key_written_twice_names_both_lines(tmp_path):
    p = write(tmp_path, "teacher:\n  model: a\n  concurrency: 4\n  model: b\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value) == f"{p}:4: teacher.model: duplicate key (first given on line 2)"


@pytest.mark.parametrize("name", ["demo", "my-run_2.v1", "数据", 2024])
def test_plain_run_names_load(tmp_path, name):
    assert load_config(write(tmp_path, f"name: {name}\n")).name == str(name)


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "a\\\\b", "''", "null", "-x", "'a b'"])
def test_run_names_that_are_not_plain_are_refused(tmp_path, name):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, f"name: {name}\n"))
    assert exc.value.field == "name" and exc.value.line == 1


@pytest.mark.parametrize(
    "text,where",
    [
        ("dialogues:\n  plugin:\n    max_dialogues: -3\n", "dialogues.plugin.max_dialogues"),
        ("check:\n  max_rows: -1\n", "check.max_rows"),
        ("check:\n  max_length: 0\n", "check.max_length"),
        ("check:\n  max_loss: -0.5\n", "check.max_loss"),
        ("filters:\n  parallel_min_rows: -1\n", "filters.parallel_min_rows"),
        ("filters:\n  workers: true\n", "filters.workers"),
    ],
)
def test_negative_counts_are_refused_naming_the_key(tmp_path, text, where):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert exc.value.field == where and exc.value.line == text.count("\n")


def test_mixed_key_types_are_an_unknown_key_not_a_crash(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "1: a\nzz: b\n"))
    assert exc.value.field == "1" and exc.value.line == 1


def test_a_resolved_path_inside_the_working_directory_stays_relative(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    p = tmp_path / "configs" / "run.yaml"
    p.write_text("seeds:\n  path: ../seeds/mine.jsonl\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(p.resolve()).seeds.path == "seeds/mine.jsonl"  # no machine path to record
    monkeypatch.chdir(tmp_path / "configs")
    assert load_config(p.resolve()).seeds.path == str(tmp_path.resolve() / "seeds" / "mine.jsonl")


def test_preference_paths_in_the_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "models" / "moss").mkdir(parents=True)
    p = folder / "run.yaml"
    p.write_text(
        "preference:\n  templates_dir: tpl\n  sources:\n    - {kind: original}\n"
        "    - {kind: local, model: models/moss}\n    - {kind: local, model: smollm2}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../configs/run.yaml")
    assert cfg.preference.templates_dir == "../configs/tpl"
    assert [s.model for s in cfg.preference.sources] == [
        None,
        "../configs/models/moss",
        "smollm2",
    ]  # alias kept
