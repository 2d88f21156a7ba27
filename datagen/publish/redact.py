"""Part of the former datagen/card.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit

#: Config keys whose values must never reach a card, even if a user put them in the run config. Whole
#: key names (after `_key_words`) or suffixes, never substrings: `max_tokens` or `plan_max_tokens` are
#: settings to publish, and `api_key_env` only names an environment variable.
SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "api_token",
        "hf_token",
        "hub_token",
        "huggingface_token",
        "access_token",
        "auth_token",
        "bearer_token",
        "refresh_token",
        "id_token",
        "session_token",
        "github_token",
        "openai_api_key",
        "secret",
        "secrets",
        "client_secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "private_key",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "auth",
        "credentials",
        "cookie",
        "cookies",
    }
)
#: ... and any key ending in one of these (`openai_api_key`, `azure_secret`, `proxy_password`).
SECRET_SUFFIXES = (
    "_api_key",
    "_apikey",
    "_secret",
    "_secret_key",
    "_password",
    "_access_token",
    "_auth_token",
    "_private_key",
)
#: Keys ending in `_token` or `_key` are credentials too (`hf_write_token`, `wandb_token`, `x-api-token`,
#: `access_key`, `subscription_key`), except these settings that merely look like one: tokenizer
#: special tokens and lookup keys. (`max_tokens` and `sort_keys` end in an `s` and never match.)
NOT_SECRET_KEYS = frozenset(
    {
        "eos_token",
        "bos_token",
        "pad_token",
        "unk_token",
        "sep_token",
        "cls_token",
        "mask_token",
        "stop_token",
        "start_token",
        "end_token",
        "eom_token",
        "eoh_token",
        "eot_token",
        "image_token",
        "sort_key",
        "primary_key",
        "foreign_key",
        "public_key",
        "cache_key",
        "group_key",
        "partition_key",
        "shard_key",
        "split_key",
        "dedup_key",
        "hash_key",
        "id_key",
        "text_key",
        "join_key",
        "lookup_key",
        "index_key",
        "order_key",
        "field_key",
        "column_key",
        "label_key",
        "dict_key",
        "made_key",
        "request_key",
        "body_key",
        "band_key",
        "metric_key",
        "score_key",
        "message_key",
        "content_key",
        "role_key",
    }
)
#: Query parameters that carry a credential without a credential-like name (Azure SAS, presigned URLs).
SECRET_QUERY_PARAMS = frozenset(
    {"sig", "signature", "x_amz_signature", "x_amz_credential", "x_goog_signature", "x_goog_credential"}
)

#: License ids the Hub's metadata validation knows (huggingface.co/docs/hub/repositories-licenses);
#: another id still builds, with a warning that the Hub may reject the card.
HUB_LICENSES = frozenset(
    """
apache-2.0 mit openrail openrail++ bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0
cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0
cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
mpl-2.0 odc-by odbl osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma other
""".split()
)
#: Values that name no license at all: publishing with one of them is refused like a missing license.
NOT_A_LICENSE = frozenset({"unknown", "none", "n/a", "unlicensed", "tbd"})


def normalize_license(value: str | None) -> tuple[str | None, list[str]]:
    """(license id for the card, warnings). Lowercases; None/empty and placeholders such as
    `unknown` give None (no license: datagen never fills one in). Raises ValueError on text that
    cannot be a license id."""
    if value is None or not str(value).strip():
        return None, []
    lic = str(value).strip().lower()
    if lic in NOT_A_LICENSE:
        return None, [f"{value!r} is not a license; the card gets none"]
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", lic):
        raise ValueError(f"{value!r} is not a license id (e.g. apache-2.0, cc-by-4.0, mit, other)")
    warnings = []
    if lic not in HUB_LICENSES:
        warnings.append(
            f"license {lic!r} is not one the Hub knows; it may reject the card (use `other` for a "
            "custom license)"
        )
    return lic, warnings


def _key_words(key: Any) -> str:
    """`apiKey`, `API-Key`, `api key` -> `api_key`."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key).strip())
    return re.sub(r"[\s.-]+", "_", text).lower()


def is_secret_key(key: Any) -> bool:
    """True when a config key names a credential, case-insensitive: a whole name in `SECRET_KEYS`,
    a suffix in `SECRET_SUFFIXES`, or any name ending in `_token`/`-token` or `_key`/`-key` that is
    not in `NOT_SECRET_KEYS`."""
    words = _key_words(key)
    if words in SECRET_KEYS or words.endswith(SECRET_SUFFIXES):
        return True
    return words.endswith(("_token", "_key")) and words not in NOT_SECRET_KEYS


def _secret_query_param(param: str) -> bool:
    name = unquote_plus(param.split("=", 1)[0])
    return is_secret_key(name) or _key_words(name) in SECRET_QUERY_PARAMS


def redact_url(value: str) -> str:
    """`value` without user:password in its authority and without query parameters whose names are
    secret (`?api_key=...`, `&access_token=...`, `&sig=...`); the other parameters keep their exact
    text. A string that is not a URL is returned unchanged."""
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    changed = False
    if parts.username or parts.password:
        host = f"[{host}]" if host and ":" in host else (host or "")
        parts = parts._replace(netloc=host + (f":{port}" if port else ""))
        changed = True
    if parts.query:
        params = parts.query.split("&")
        kept = [p for p in params if not _secret_query_param(p)]
        if len(kept) != len(params):
            parts = parts._replace(query="&".join(kept))
            changed = True
    return parts.geturl() if changed else value


def redact(value: Any) -> Any:
    """A copy of a config value with secret keys (`is_secret_key`) dropped and credentials removed
    from URLs (`redact_url`)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value
