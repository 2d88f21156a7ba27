"""TeacherConfig validation: every bad field is named."""

from __future__ import annotations

import pytest

from datagen.errors import ConfigError
from datagen.teacher.config import PLACEHOLDER_API_KEY, TeacherConfig


def test_defaults_point_at_the_local_teacher():
    config = TeacherConfig()
    assert config.base_url == "http://127.0.0.1:8089/v1"
    assert (config.concurrency, config.rpm, config.tpm, config.api_key_env) == (
        16,
        None,
        None,
        "OPENAI_API_KEY",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("base_url", "localhost:8000", "http"),
        ("model", "", "non-empty"),
        ("api_key_env", "  ", "non-empty"),
        ("concurrency", 0, "at least 1"),
        ("concurrency", 2.5, "whole number"),
        ("concurrency", True, "whole number"),
        ("rpm", 0, "at least 1"),
        ("tpm", -5, "at least 1"),
        ("timeout", 0, "> 0"),
        ("max_attempts", 0, "at least 1"),
        ("min_backoff", -1, ">= 0"),
        ("max_backoff", float("nan"), "> 0"),
        ("stall_seconds", "10", "> 0"),
        ("rate_window", 0, "> 0"),
        ("progress", "yes", "true or false"),
        ("params", ["temperature"], "mapping"),
        ("params", {"stream": True}, "stream"),
        ("params", {"n": 2}, "n cannot"),
        ("params", {"temperature": "hot"}, "number"),
        ("params", {"max_tokens": 0}, "at least 1"),
        ("prices", {"gpt": 1.0}, "mapping"),
        ("prices", {"gpt": {"input": 1, "outptu": 2}}, "outptu"),
        ("prices", {"gpt": {"input": -1}}, ">= 0"),
    ],
)
def test_bad_field_is_named(field, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        TeacherConfig(**{field: value})
    assert info.value.field.startswith(f"teacher.{field}")


def test_min_backoff_above_max_is_rejected():
    with pytest.raises(ConfigError, match="exceeds max_backoff"):
        TeacherConfig(min_backoff=5, max_backoff=1)


def test_from_dict_rejects_unknown_keys_by_name():
    with pytest.raises(ConfigError, match="concurency") as info:
        TeacherConfig.from_dict({"model": "m", "concurency": 4})
    assert info.value.field == "teacher.concurency"
    config = TeacherConfig.from_dict(
        {"model": "m", "concurrency": 4, "rpm": 100, "prices": {"m": {"input": 0.5, "output": 1.5}}}
    )
    assert (config.model, config.concurrency, config.rpm) == ("m", 4, 100)
    assert config.price_of("m", 2_000_000, 1_000_000) == pytest.approx(2.5)
    assert config.price_of("unknown", 1, 1) is None


def test_api_key_is_read_from_the_environment_only(monkeypatch):
    config = TeacherConfig(api_key_env="DATAGEN_TEST_KEY_VAR")
    monkeypatch.delenv("DATAGEN_TEST_KEY_VAR", raising=False)
    assert config.api_key() == PLACEHOLDER_API_KEY
    monkeypatch.setenv("DATAGEN_TEST_KEY_VAR", "sk-abc")
    assert config.api_key() == "sk-abc"
    assert "sk-abc" not in repr(config) and "sk-abc" not in str(config.to_dict())


def test_trailing_slash_is_dropped():
    assert TeacherConfig(base_url="https://api.example.com/v1/").base_url == "https://api.example.com/v1"


def test_runtime_fields_are_real_fields_and_exclude_what_changes_answers():
    import dataclasses

    from datagen.teacher.config import RUNTIME_FIELDS

    names = {f.name for f in dataclasses.fields(TeacherConfig)}
    assert RUNTIME_FIELDS <= names
    assert not RUNTIME_FIELDS & {"base_url", "model", "params"}


@pytest.mark.parametrize("name", ["temperature", "top_p", "max_tokens"])
def test_a_run_config_may_not_set_what_every_stage_overrides(name, tmp_path):
    """`--set teacher.params.temperature=0.9` did nothing: the stages set it on every request."""
    from datagen.run.config import load_config

    with pytest.raises(ConfigError, match=r"is set by each stage") as info:
        TeacherConfig.from_dict({"model": "m", "params": {name: 1}})
    assert info.value.field == f"teacher.params.{name}"
    assert f"expand.{name}" in str(info.value) and f"dialogues.KIND.options.{name}" in str(info.value)
    path = tmp_path / "run.yaml"
    path.write_text("name: x\nteacher:\n  model: m\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, [f"teacher.params.{name}=1"])
    assert info.value.field == f"teacher.params.{name}"
    assert TeacherConfig.from_dict({"model": "m", "params": {"seed": 7, "stop": ["\n\n"]}}).params == {
        "seed": 7,
        "stop": ["\n\n"],
    }


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("sk-abc def", "has a space at character 7 of 10"),
        ("sk-abcdef\n", "has a newline at the end"),
        ("\tsk-abcdef", "has a tab at character 1 of 10"),
        ("sk-abc\u00a0def", "has a non-ASCII character (U+00A0, no-break space) at character 7 of 10"),
        ("sk-abcdéf", "has a non-ASCII character (U+00E9) at character 8 of 9"),
        ("sk-abc\x07def", "has a control character (U+0007) at character 7 of 10"),
        ("   ", "is only whitespace (3 characters)"),
    ],
)
def test_a_key_that_cannot_be_a_header_says_what_is_wrong_not_what_it_is(monkeypatch, key, problem):
    monkeypatch.setenv("DATAGEN_TEST_KEY_VAR", key)
    config = TeacherConfig(api_key_env="DATAGEN_TEST_KEY_VAR")
    with pytest.raises(ConfigError) as info:
        config.api_key()
    assert info.value.field == "$DATAGEN_TEST_KEY_VAR"
    assert f"the API key in it {problem};" in str(info.value)
    assert "abc" not in str(info.value)


def test_redact_masks_remembered_keys_and_bearer_tokens(monkeypatch):
    from datagen.teacher.redact import redact

    monkeypatch.setenv("DATAGEN_TEST_KEY_VAR", "sk-remembered-0123456789")
    TeacherConfig(api_key_env="DATAGEN_TEST_KEY_VAR").api_key()
    text = (
        'HTTP 401: key sk-remembered-0123456789 refused; {"authorization": "Bearer sk-other-987654321"} '
        "Authorization: bearer abc.def"
    )
    assert redact(text) == (
        'HTTP 401: key *** refused; {"authorization": "Bearer ***"} Authorization: bearer ***'
    )
    assert redact("temperature 0.7, 12 tokens") == "temperature 0.7, 12 tokens"
