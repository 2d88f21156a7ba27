"""The `preference:` section: defaults, short forms, and errors that name the key."""

from __future__ import annotations

import pytest

from datagen.errors import ConfigError
from datagen.preference.config import CONTRASTIVE_KINDS, PreferenceConfig


def test_defaults_and_short_source_form():
    cfg = PreferenceConfig()
    assert [s.label for s in cfg.sources] == ["original", "teacher"]
    assert cfg.contrastive == list(CONTRASTIVE_KINDS) and cfg.judge.min_margin == 1.0
    cfg = PreferenceConfig.from_dict(
        {
            "sources": [
                "original",
                {"kind": "teacher", "model": "org/other-7b"},
                {"kind": "local", "model": "models/moss-sft/"},
            ]
        }
    )
    assert [s.label for s in cfg.sources] == ["original", "teacher:other-7b", "local:moss-sft"]
    assert cfg.to_dict()["sources"][1]["model"] == "org/other-7b"


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"sourcez": []}, "preference.sourcez", "unknown key"),
        (
            {"sources": [{"kind": "teacher", "temprature": 1}]},
            "preference.sources[0].temprature",
            "unknown key",
        ),
        ({"sources": ["original", {"kind": "oracle"}]}, "preference.sources[1].kind", "must be one of"),
        ({"sources": [{"kind": "local"}]}, "preference.sources[0].model", "needs `model`"),
        (
            {"sources": [{"kind": "teacher", "temperatures": [0.7, 3]}]},
            "preference.sources[0].temperatures",
            "within",
        ),
        ({"sources": [{"kind": "teacher", "samples": 0}]}, "preference.sources[0].samples", "at least 1"),
        (
            {"sources": [{"kind": "server", "base_url": "localhost:8089"}]},
            "preference.sources[0].base_url",
            "http",
        ),
        ({"sources": ["teacher", "teacher"]}, "preference.sources", "give one a `name`"),
        ({"sources": []}, "preference.sources", "at least one source"),
        ({"contrastive": ["wrong_tool"]}, "preference.contrastive", "must be a list of"),
        ({"judge": {"min_margin": -1}}, "preference.judge.min_margin", "within"),
        ({"judge": {"modle": "x"}}, "preference.judge.modle", "unknown key"),
        ({"turns": "middle"}, "preference.turns", "must be one of"),
    ],
)
def test_bad_values_name_their_key(data, field, message):
    with pytest.raises(ConfigError) as err:
        PreferenceConfig.from_dict(data)
    assert err.value.field == field and message in err.value.reason
