"""The dataset card: metadata fields and what the body says (or admits it does not know)."""

from __future__ import annotations

import pytest

from datagen.errors import InputError
from datagen.io import write_jsonl_atomic
from datagen.publish.build import build_dataset_folder
from datagen.publish.card import split_card
from datagen.publish.redact import normalize_license, redact
from datagen.publish.stats import base_language, size_category
from tests.publish.runs import hhh, sample_conversations


@pytest.mark.parametrize(
    "n, label",
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (1_074_551, "1M<n<10M"),
        (10_000_000, "10M<n<100M"),
    ],
)
def test_size_category(n, label):
    assert size_category(n) == label


@pytest.mark.parametrize(
    "code, base",
    [("zh-cn", "zh"), ("zh_TW", "zh"), ("EN", "en"), ("unknown", None), (None, None), ("und", None)],
)
def test_base_language(code, base):
    assert base_language(code) == base


@pytest.mark.parametrize(
    "value, lic, warned",
    [
        ("Apache-2.0", "apache-2.0", False),
        ("cc-by-nc-4.0", "cc-by-nc-4.0", False),
        ("other", "other", False),
        ("my-company-eula", "my-company-eula", True),
        ("unknown", None, True),
        ("", None, False),
        (None, None, False),
    ],
)
def test_normalize_license(value, lic, warned):
    got, warnings = normalize_license(value)
    assert got == lic and bool(warnings) == warned


def test_normalize_license_rejects_prose():
    with pytest.raises(ValueError, match="not a license id"):
        normalize_license("Apache License, Version 2.0")


def test_redact_drops_secrets_and_url_credentials():
    cfg = {
        "teacher": {
            "api_key": "sk-1",
            "api_key_env": "OPENAI_API_KEY",
            "hf_token": "hf_x",
            "base_url": "https://bob:pw@example.com:8443/v1",
            "params": {"temperature": 0.2},
        }
    }
    assert redact(cfg) == {
        "teacher": {
            "api_key_env": "OPENAI_API_KEY",
            "base_url": "https://example.com:8443/v1",
            "params": {"temperature": 0.2},
        }
    }


def test_redact_keeps_settings_that_only_contain_a_secret_word():
    cfg = {
        "teacher": {
            "params": {"max_tokens": 256, "temperature": 0.7},
            "api_key_env": "OPENAI_API_KEY",
            "tokenizer": "gpt2",
            "secret_sauce_level": 1,
        },
        "dialogues": {"hhh": {"options": {"user_max_tokens": 128, "plan_max_tokens": 64}}},
        "filters": {"steps": [{"name": "length", "max_tokens": 4096}]},
    }
    assert redact(cfg) == cfg


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "apiKey",
        "Api-Key",
        "token",
        "HF_TOKEN",
        "access_token",
        "accessToken",
        "secret",
        "client_secret",
        "password",
        "Authorization",
        "openai_api_key",
        "proxy_password",
    ],
)
def test_redact_drops_whole_secret_key_names_in_any_case(key):
    assert redact({"teacher": {key: "hunter2", "model": "m"}, "list": [{key: "x"}]}) == {
        "teacher": {"model": "m"},
        "list": [{}],
    }


@pytest.mark.parametrize(
    "key",
    [
        "hf_write_token",
        "wandb_token",
        "search_token",
        "serpapi_token",
        "bot_token",
        "x-api-token",
        "X-Api-Token",
        "slackBotToken",
        "access_key",
        "subscription_key",
        "AWS_ACCESS_KEY",
        "encryption_key",
        "x-api-key",
    ],
)
def test_redact_drops_keys_ending_in_token_or_key(key):
    assert redact({"teacher": {key: "hunter2", "model": "m"}}) == {"teacher": {"model": "m"}}


@pytest.mark.parametrize(
    "key",
    [
        "sort_key",
        "primary_key",
        "cache_key",
        "public_key",
        "api_key_env",
        "token_env",
        "max_tokens",
        "max_new_tokens",
        "special_tokens",
        "eos_token",
        "pad_token",
        "sort_keys",
        "keyword",
    ],
)
def test_redact_keeps_settings_named_like_keys_and_tokens(key):
    cfg = {"teacher": {key: "value", "model": "m"}}
    assert redact(cfg) == cfg


@pytest.mark.parametrize(
    "url, clean",
    [
        (
            "https://serpapi.com/search?engine=google&api-key=SECRET",
            "https://serpapi.com/search?engine=google",
        ),
        ("https://api.example.com/v1?api_key=SECRET", "https://api.example.com/v1"),
        ("https://x.example/q?token=T1&q=cats&access_token=T2#top", "https://x.example/q?q=cats#top"),
        ("https://blob.example/c/f?sv=2024&sig=SAS", "https://blob.example/c/f?sv=2024"),
        ("https://bob:pw@example.com/v1?key=K&page=2", "https://example.com/v1?page=2"),
        (
            "https://example.com/v1?max_tokens=5&sort_key=id",
            "https://example.com/v1?max_tokens=5&sort_key=id",
        ),
    ],
)
def test_redact_drops_secret_query_parameters(url, clean):
    out = redact({"tools": {"search": {"url": url}}, "urls": [url]})
    assert out == {"tools": {"search": {"url": clean}}, "urls": [clean]}
    assert "SECRET" not in str(out) and "SAS" not in str(out)


def test_plain_file_card_says_the_funnel_is_unknown(tmp_path):
    src = tmp_path / "convs.jsonl"
    convs = sample_conversations()
    write_jsonl_atomic(src, convs)
    folder = build_dataset_folder(src, license="mit", repo_id="me/convs", validation_fraction=0.0)
    assert folder.path == tmp_path / "convs-dataset"
    meta, body = split_card((folder.path / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == "mit"
    assert "**Funnel unknown.**" in body and "Unknown: not built from a datagen run directory" in body
    assert folder.counts == {"hhh": {"train": 6}, "plugin": {"train": 4}}
    assert [c["data_files"] for c in meta["configs"]] == [
        [{"split": "train", "path": "data/hhh/train-*"}],
        [{"split": "train", "path": "data/plugin/train-*"}],
    ]
    assert any("no validation rows" in w for w in folder.warnings)
    assert not (folder.path / "datagen/manifest.json").exists()


def test_card_counts_and_distributions(tmp_path):
    convs = [hhh(1, language="zh-cn"), hhh(2, turns=3), hhh(3, turns=3, category="code")]
    src = tmp_path / "c.jsonl"
    write_jsonl_atomic(src, convs)
    folder = build_dataset_folder(src, tmp_path / "ds", license="apache-2.0")
    meta, body = split_card((folder.path / "README.md").read_text(encoding="utf-8"))
    assert meta["language"] == ["en", "zh"] and meta["multilinguality"] == ["multilingual"]
    assert "tool-use" not in meta["tags"]
    assert "| 3 | 2 | 66.7% |" in body  # two dialogues with three turns
    assert "| writing | 2 | 66.7% |" in body and "| code | 1 | 33.3% |" in body
    assert "| zh-cn | 1 | 33.3% |" in body
    longest = max(sum(len(t) for t in c.texts()) for c in convs)
    assert f"| {longest} |" in body.split("whole dialogue")[1].splitlines()[0]


def test_folder_of_conversation_files(tmp_path):
    convs = sample_conversations()
    src = tmp_path / "convs"
    write_jsonl_atomic(src / "part1.jsonl", convs[:5])
    write_jsonl_atomic(src / "more" / "part2.jsonl", convs[5:])
    folder = build_dataset_folder(src, license="apache-2.0")
    assert folder.path == tmp_path / "convs-dataset"
    assert folder.rows == len(convs)
    with pytest.raises(InputError, match="inside the input folder"):
        build_dataset_folder(src, src / "dataset", license="apache-2.0")
