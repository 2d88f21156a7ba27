"""One wording for an unknown key and for a bad count, whichever config section has it."""

import re

import pytest

from datagen.errors import ConfigError
from datagen.filters.config import FilterConfig
from datagen.generate.config import DialogueConfig, ExpandConfig
from datagen.run.config import build_config
from datagen.settings import check_int, reject_unknown

UNKNOWN = re.compile(r"^(?P<field>[\w.]+): unknown key \(known: (?P<known>[\w, ]+)\)$")


def test_reject_unknown_names_the_first_unknown_key_and_the_known_ones():
    reject_unknown({"a": 1}, ["a", "b"], "sec")
    with pytest.raises(ConfigError) as err:
        reject_unknown({"a": 1, "zz": 2, "c": 3}, ["b", "a"], "sec")
    assert err.value.field == "sec.c"
    assert str(err.value) == "sec.c: unknown key (known: a, b)"
    with pytest.raises(ConfigError) as err:
        reject_unknown({"x": 1}, ["a"])
    assert str(err.value) == "x: unknown key (known: a)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "n.k: must be at least 1, got 0"),
        (True, "n.k: must be a whole number, got True"),
        (1.0, "n.k: must be a whole number, got 1.0"),
        ("2", "n.k: must be a whole number, got '2'"),
    ],
)
def test_check_int(value, message):
    with pytest.raises(ConfigError) as err:
        check_int(value, "k", minimum=1, where="n")
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ExpandConfig.from_dict({"batchsize": 8}), "expand.batchsize"),
        (lambda: DialogueConfig.from_dict({"turnz": 3}), "dialogues.turnz"),
        (lambda: FilterConfig.from_dict({"stepz": []}), "stepz"),
        (
            lambda: FilterConfig.from_dict({"steps": {"near_dedup": {"treshold": 0.5}}}),
            "steps.near_dedup.treshold",
        ),
        (lambda: build_config({"filterz": {}}), "filterz"),
        (lambda: build_config({"seeds": {"pth": "x"}}), "seeds.pth"),
        (lambda: build_config({"check": {"max_los": 1}}), "check.max_los"),
        (lambda: build_config({"expand": {"batchsize": 8}}), "expand.batchsize"),
        (lambda: build_config({"filters": {"workerz": 2}}), "filters.workerz"),
        (lambda: build_config({"dialogues": {"hhh": {"max_dialogs": 2}}}), "dialogues.hhh.max_dialogs"),
    ],
)
def test_every_section_words_an_unknown_key_the_same(build, field):
    with pytest.raises(ConfigError) as err:
        build()
    m = UNKNOWN.match(str(err.value))
    assert m, str(err.value)
    assert m["field"] == field == err.value.field


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ExpandConfig.from_dict({"batch_size": 0}), "expand.batch_size"),
        (lambda: FilterConfig.from_dict({"workers": 0}), "workers"),
        (lambda: build_config({"check": {"batch_size": 0}}), "check.batch_size"),
    ],
)
def test_every_section_words_a_bad_count_the_same(build, field):
    with pytest.raises(ConfigError) as err:
        build()
    assert str(err.value) == f"{field}: must be at least 1, got 0"
