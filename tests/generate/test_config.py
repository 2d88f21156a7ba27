"""Stage configs: validation, unknown keys, turn distributions."""

import random

import pytest

from datagen.errors import ConfigError
from datagen.generate.config import DialogueConfig, ExpandConfig, TurnDistribution, normalize_category


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"expand\.batchsize: unknown key"):
        ExpandConfig.from_dict({"batchsize": 3})
    with pytest.raises(ConfigError, match=r"dialogues\.turn: unknown key"):
        DialogueConfig.from_dict({"turn": 3})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"batch_size": 0}, "expand.batch_size"),
        ({"near_dup_threshold": 1.5}, "expand.near_dup_threshold"),
        ({"targets": {"code": -1}}, "expand.targets.code"),
        ({"blacklist": "image"}, "expand.blacklist"),
    ],
)
def test_expand_bad_values(data, field):
    with pytest.raises(ConfigError) as exc:
        ExpandConfig.from_dict(data)
    assert exc.value.field == field


def test_expand_targets_per_cell():
    c = ExpandConfig.from_dict({"targets": {"default": 5, "code": 3, "harmless/en": 1}})
    assert c.target_for("code", "zh") == 3
    assert c.target_for("harmless_en", "en") == 1  # normalised category, language-specific key
    assert c.target_for("harmless_zh", "zh") == 5
    assert ExpandConfig(targets=7).target_for("x", "en") == 7


def test_turn_distributions():
    c = DialogueConfig.from_dict({"turns": {"writing": "2-3", "code": {"4": 1, "6": 3}}})
    assert c.turn_distribution("harmless_zh").values == (2, 3, 4)  # default kept for other keys
    assert c.turn_distribution("writing").values == (2, 3)
    assert c.turn_distribution("brainstorming").values == (5, 6)
    d = c.turn_distribution("code")
    assert d.mean == pytest.approx(5.5)
    one = DialogueConfig(turns=4)
    assert {one.turn_distribution(cat).draw(random.Random(i)) for i, cat in enumerate(["honest", "x"])} == {4}
    assert DialogueConfig(kind="plugin").turn_distribution("tool").values == (1, 2, 3)


def test_turn_draw_is_deterministic_given_the_rng():
    d = TurnDistribution.parse("1-9")
    assert [d.draw(random.Random("7:hhh-a")) for _ in range(3)] == [d.draw(random.Random("7:hhh-a"))] * 3


@pytest.mark.parametrize("spec", ["a-b", [0], {}, "x", [True], None, [51], "4-2", {3: float("nan")}])
def test_bad_turns(spec):
    with pytest.raises(ConfigError):
        TurnDistribution.parse(spec)


def test_dialogue_bad_values():
    with pytest.raises(ConfigError, match="unknown plugin 'weather'"):
        DialogueConfig(plugins=["weather"])
    with pytest.raises(ConfigError, match="kind 'hhh' does not match 'plugin'"):
        DialogueConfig.from_dict({"kind": "hhh"}, kind="plugin")


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("harmless_zh", "harmless"),
        ("helpful_role_playing", "role_play"),
        ("rp", "role_play"),
        (None, "default"),
        ("Code", "code"),
        ("advice", "brainstorming"),
        ("helpful_writing_prompts", "writing"),
    ],
)
def test_normalize_category(raw, norm):
    assert normalize_category(raw) == norm


def test_a_huge_turn_range_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match="must lie within 1-50"):
        TurnDistribution.parse("1-1000000000")


def test_keys_of_mixed_types_are_named_not_a_crash():
    with pytest.raises(ConfigError) as exc:
        ExpandConfig.from_dict({1: 2, "batchsize": 3})
    assert exc.value.field == "expand.1"
