"""The run config: typed sections, line-numbered errors, --set overrides, fingerprints."""

from pathlib import Path

import pytest

from datagen.config import apply_overrides, load_config
from datagen.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_and_demo_configs_load():
    for name in ("example.yaml", "demo.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.teacher.base_url.startswith("http")
        assert cfg.name


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
    cfg = load_config(p, ["teacher.model=gpt-4o-mini", "teacher.concurrency=7", "check.enabled=true", "check.model=m",
                          "publish.repo_id=org/name"])
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
    assert load_config(p, ["teacher.params={temperature: 0.1}"]).fingerprint() != base


@pytest.mark.parametrize("text,override,where,message", [
    ("seed: abc\n", None, "seed", "must be a whole number"),
    ("dialogues: [hhh]\n", None, "dialogues", "must be a mapping"),
    ("seeds:\n  per_cell: '5'\n", None, "seeds.per_cell", "must be a whole number"),
    ("seeds:\n  languages: en\n", None, "seeds.languages", "must be a list of strings"),
    ("dialogues:\n  hhh:\n    enabled: maybe\n", None, "dialogues.hhh.enabled", "must be true or false"),
    ("check:\n  enabled: true\n", None, "check.model", "needs a model"),
    ("check:\n  percentile: 150\n  model: m\n", None, "check.percentile", "between 0 and 100"),
    ("finetune:\n  bogus: 1\n", None, "finetune.bogus", "unknown"),
    ("name: x\n", "publish.private=sure", "publish.private", "true or false"),
])
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
    p = write(tmp_path, "name: x\ndialogues:\n  hhh:\n    options: {turns: {default: [2]}}\n"
                        "  plugin:\n    options: {turns: {default: [1]}}\ntools:\n  search: {}\n")
    base = load_config(p)
    faster = load_config(p, ["dialogues.hhh.options.concurrency=8", "tools.search.concurrency=16",
                             "tools.search.timeout=5", "check.batch_size=16", "filters.workers=2"])
    assert faster.fingerprint() == base.fingerprint()
    other_kind = load_config(p, ["dialogues.plugin.options.max_tokens=100"])
    assert other_kind.fingerprint("dialogues.hhh") == base.fingerprint("dialogues.hhh")
    assert other_kind.fingerprint("dialogues.plugin") != base.fingerprint("dialogues.plugin")
    assert load_config(p, ["check.model=m", "check.percentile=50"]).fingerprint("check.model") != \
        base.fingerprint("check.model")
