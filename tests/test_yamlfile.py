"""The one YAML loader (`datagen.yamlfile`): lines, duplicate keys, bounded aliases, and every
command that reads YAML going through it."""

import pytest

from datagen.cli import main
from datagen.errors import ConfigError
from datagen.run.config import parse_override
from datagen.yamlfile import MAX_ALIAS_VALUES, load_yaml


def test_lines_of_nested_keys_and_list_items():
    doc = load_yaml("a:\n  b: 1\n  c:\n    - {d: 2}\n", path="x.yaml")
    assert doc.data == {"a": {"b": 1, "c": [{"d": 2}]}}
    assert doc.lines == {"a": 1, "a.b": 2, "a.c": 3, "a.c.0.d": 4}
    assert doc.line_of("a.c.0.d.e") == 4 and doc.line_of("zz") is None


def test_merge_keys_may_be_overridden_without_counting_as_duplicates():
    doc = load_yaml("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  x: 3\n", path="x.yaml")
    assert doc.data["mine"] == {"x": 3, "y": 2}


def test_same_key_in_two_mappings_is_no_duplicate():
    assert load_yaml("a: {k: 1}\nb: {k: 2}\n", path="x.yaml").data == {"a": {"k": 1}, "b": {"k": 2}}


def test_duplicate_in_a_list_item_names_both_lines():
    with pytest.raises(ConfigError) as exc:
        load_yaml("steps:\n  - name: a\n    name: b\n", path="x.yaml")
    assert str(exc.value) == "x.yaml:3: steps.0.name: duplicate key (first given on line 2)"


def test_reused_anchors_within_the_bound_load_as_independent_copies():
    text = "opts: &o {n: 1}\n" + "".join(f"k{i}: *o\n" for i in range(50))
    data = load_yaml(text, path="x.yaml").data
    data["k0"]["n"] = 9
    assert data["k1"] == {"n": 1} and data["opts"] == {"n": 1}


def test_aliases_past_the_bound_are_refused_at_the_alias():
    big = "[" + ", ".join(["x"] * 100) + "]"
    uses = MAX_ALIAS_VALUES // 100 + 1
    text = f"big: &big {big}\nuses:\n" + "  - *big\n" * uses
    with pytest.raises(ConfigError) as exc:
        load_yaml(text, path="x.yaml")
    crossing = MAX_ALIAS_VALUES // 101  # each use repeats the list and its 100 items
    assert exc.value.line == 3 + crossing and exc.value.field == f"uses.{crossing}"
    assert "aliases expand to more than" in exc.value.reason


@pytest.mark.parametrize(
    "text,message",
    [
        ("[" * 1000, "x.yaml: invalid YAML: nested too deeply"),
        (
            "a: 1\n---\nb: 2\n",
            "x.yaml:2: invalid YAML: expected a single document in the stream, but found another document",
        ),
        ("? [a]\n: b\n", "x.yaml:1: invalid YAML: while constructing a mapping, found unhashable key"),
    ],
)
def test_malformed_yaml_is_a_config_error(text, message):
    with pytest.raises(ConfigError) as exc:
        load_yaml(text, path="x.yaml")
    assert str(exc.value) == message


def test_set_values_go_through_the_loader():
    assert parse_override("teacher.params={seed: 3}") == (["teacher", "params"], {"seed": 3})
    assert parse_override("name=[unclosed") == (["name"], "[unclosed")  # not YAML: the text
    with pytest.raises(ConfigError) as exc:
        parse_override("teacher.params={seed: 1, seed: 2}")
    assert str(exc.value) == "--set teacher.params:1: seed: duplicate key (first given on line 1)"


def test_filter_config_file_errors_name_line_and_key(tmp_path, capsys):
    cfg = tmp_path / "filters.yaml"
    cfg.write_text("filters:\n  steps:\n    near_dedup: {threshold: high}\n", encoding="utf-8")
    assert (
        main(["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--config", str(cfg)])
        == 1
    )
    assert capsys.readouterr().err == (
        f"Error: {cfg}:3: filters.steps.near_dedup.threshold: step 'near_dedup': "
        "must be a number or null, got 'high' (str)\n"
    )
    cfg.write_text("steps:\n  safety: {policy: drop}\n  safety: {policy: tag}\n", encoding="utf-8")
    assert (
        main(["filter", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--config", str(cfg)])
        == 1
    )
    assert capsys.readouterr().err == f"Error: {cfg}:3: steps.safety: duplicate key (first given on line 2)\n"


def test_filter_config_lexicons_resolve_against_the_file(tmp_path, monkeypatch):
    from datagen.filters.config import FilterConfig

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "extra.tsv").write_text("moonshine\tdrugs\t2\n", encoding="utf-8")
    cfg = tmp_path / "conf" / "filters.yaml"
    cfg.write_text("steps:\n  safety: {lexicons: [extra.tsv]}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert FilterConfig.from_file("conf/filters.yaml").step("safety").params["lexicons"] == ["conf/extra.tsv"]


def test_finetune_config_goes_through_the_loader(tmp_path, capsys):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("finetune:\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    assert (
        main(
            [
                "finetune",
                str(tmp_path / "in.jsonl"),
                "--model",
                "m",
                "--out",
                str(tmp_path / "ft"),
                "--config",
                str(cfg),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err == f"Error: {cfg}:3: finetune.lr: duplicate key (first given on line 2)\n"
