"""Prompt templates are files with versions and sections; users can override them."""

import pytest

from datagen.errors import ConfigError
from datagen.generate.templates import TEMPLATES_DIR, available, load_template, parse_template

SHIPPED = ["expand", "hhh_assistant", "hhh_user", "plugin_commands", "plugin_answer"]


def test_shipped_templates_have_versions_and_sections():
    names = available()
    for name in SHIPPED:
        assert names[name], name
        t = load_template(name)
        assert t.id == f"{name}.v{max(names[name])}"
        assert "system" in t.sections
        assert t.doc  # a readable header for users
    guidance = [n for n in names if n.startswith("guidance/")]
    for cat in ("default", "harmless", "honest", "continue", "switching", "tool"):
        assert f"guidance/{cat}" in guidance
        assert set(load_template(f"guidance/{cat}").sections) == {"expand", "assistant", "user"}


def test_render_substitutes_and_leaves_braces_alone():
    t = parse_template("doc\n<!-- section: user -->\nHi $name, {json: 1} costs $$5\n", name="x", version=3)
    assert t.id == "x.v3"
    assert t.render("user", name="Ann", extra="ignored") == "Hi Ann, {json: 1} costs $5"
    with pytest.raises(ConfigError, match=r"\$name"):
        t.render("user")
    with pytest.raises(ConfigError, match="no section 'system'"):
        t.render("system")


def test_bad_template_files():
    with pytest.raises(ConfigError, match="no `<!-- section"):
        parse_template("just text", name="x", version=1)
    with pytest.raises(ConfigError, match="appears twice"):
        parse_template("<!-- section: a -->\nx\n<!-- section: a -->\ny", name="x", version=1)


def test_user_folder_overrides_and_highest_version_wins(tmp_path):
    (tmp_path / "expand.v1.md").write_text("<!-- section: system -->\nmine v1\n<!-- section: user -->\nu\n")
    (tmp_path / "expand.v7.md").write_text("<!-- section: system -->\nmine v7\n<!-- section: user -->\nu\n")
    t = load_template("expand", directory=tmp_path)
    assert t.version == 7 and t.render("system") == "mine v7"
    assert load_template("expand", 1, directory=tmp_path).render("system") == "mine v1"
    # a name only shipped falls back to the shipped file
    assert load_template("hhh_user", directory=tmp_path).path.startswith(str(TEMPLATES_DIR))
    with pytest.raises(ConfigError, match="no template 'expand' version 99"):
        load_template("expand", 99, directory=tmp_path)


def test_section_variants_by_language_and_their_lines():
    t = parse_template(
        "doc\n<!-- section: examples -->\nen\n\n<!-- section: examples.zh -->\n\nzh\n", name="x", version=1
    )
    assert t.variant("examples", "zh-Hant") == "examples.zh" and t.variant("examples", "zh") == "examples.zh"
    assert t.variant("examples", "fr") == "examples" and t.variant("examples", None) == "examples"
    assert t.variant("missing", "zh") is None
    assert t.line_of("examples") == 3 and t.line_of("examples.zh") == 7
