"""The teacher config: which endpoint, how hard to push it, what it costs.

    teacher:
      base_url: https://api.openai.com/v1
      model: gpt-4o-mini
      api_key_env: OPENAI_API_KEY        # the *name* of the variable; the key itself is never stored
      concurrency: 64
      rpm: 5000                          # optional request and token limits per minute
      tpm: 2000000
      params: {seed: 7}                  # extra sampling parameters sent with every request
      prices:                            # USD per 1M tokens
        gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60, batch_input: 0.075, batch_output: 0.30}
      mode: online                       # or batch: the provider's Batch API, half the price, within 24 h
      batch: {max_lines: 50000, poll_interval: 15}   # batch mode's settings (`BatchSettings`)

Every field is validated in `__post_init__`; a bad one raises `ConfigError` naming it. A run config
may not set `params.temperature`, `params.top_p` or `params.max_tokens`: every stage sets its own
(`STAGE_PARAM_KEYS`), so a value here would never be sent.
"""

from __future__ import annotations

import dataclasses
import math
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError
from datagen.settings import check_int, reject_unknown
from datagen.teacher.redact import remember_secret

#: The key sent when the variable named by `api_key_env` is unset (local servers ignore it).
PLACEHOLDER_API_KEY = "not-needed"

#: Parameters the engine controls itself; a config or request may not set them.
RESERVED_PARAMS = frozenset({"model", "messages", "stream", "n"})


#: Fields that change how calls are made, never what the teacher answers: leave them out of a
#: run fingerprint (changing concurrency must not look like a new dataset).
RUNTIME_FIELDS = frozenset(
    {
        "api_key_env",
        "concurrency",
        "rpm",
        "tpm",
        "timeout",
        "max_attempts",
        "min_backoff",
        "max_backoff",
        "max_retry_after",
        "prices",
        "stall_seconds",
        "progress",
        "rate_window",
        "mode",
        "batch",
    }
)

#: How calls are made: one HTTP request each, or rounds of batch files (`datagen.teacher.batch`).
MODES = ("online", "batch")
#: Where batch mode sends a round: the provider's Files and Batches API, or a JSONL file on disk
#: for a self-hosted teacher (`vllm run-batch`; `datagen batch export` / `datagen batch import`).
TRANSPORTS = ("api", "files")
#: The price keys of a model in `prices` (USD per 1M tokens). Missing ones default: cached_input to
#: input, batch_input and batch_output to half of input and output (the Batch API discount of
#: OpenAI and most providers), batch_cached_input to batch_input scaled by the cache discount.
PRICE_KEYS = ("input", "output", "cached_input", "batch_input", "batch_output", "batch_cached_input")


@dataclass(slots=True)
class BatchSettings:
    """Batch mode's settings (`teacher.batch`).

    Args:
        transport: `api` (upload, create, poll, download through the provider's Batch API) or
            `files` (write each round as a JSONL file for `vllm run-batch`, then stop).
        completion_window: the batch window sent with each batch (OpenAI accepts only `24h`).
        max_lines, max_bytes: the most lines and bytes in one batch input file (OpenAI: 50,000 and
            200 MB); a bigger round is split into several files.
        poll_interval, max_poll_interval: seconds between polls of a batch: the first wait, growing
            by half each poll up to the second.
        settle_seconds: a round closes once no request has come for this long and every dialogue
            waits on the teacher (none is running a tool).
        linger_seconds: ... or once no request has come for this long, whatever else runs.
        poll_failures: polls in a row that may fail (server down) before the run gives up on a
            batch for now (its ids stay in the journal: a rerun polls it again).
        export_dir: where the `files` transport writes round files (default: `batches/` beside
            the journal).
    """

    transport: str = "api"
    completion_window: str = "24h"
    max_lines: int = 50_000
    max_bytes: int = 200_000_000
    poll_interval: float = 15.0
    max_poll_interval: float = 300.0
    settle_seconds: float = 0.2
    linger_seconds: float = 60.0
    poll_failures: int = 30
    export_dir: str | None = None

    def __post_init__(self) -> None:
        where = "teacher.batch"
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}", field=f"{where}.transport"
            )
        if not isinstance(self.completion_window, str) or not self.completion_window:
            raise ConfigError(
                f"must be a window such as '24h', got {self.completion_window!r}",
                field=f"{where}.completion_window",
            )
        for name in ("max_lines", "max_bytes", "poll_failures"):
            check_int(getattr(self, name), name, minimum=1, where=where)
        for name in ("poll_interval", "max_poll_interval"):
            _check_number(getattr(self, name), name, positive=True, where=where)
        for name in ("settle_seconds", "linger_seconds"):
            _check_number(getattr(self, name), name, positive=False, where=where)
        if self.export_dir is not None and not isinstance(self.export_dir, str):
            raise ConfigError(f"must be a folder path, got {self.export_dir!r}", field=f"{where}.export_dir")

    @classmethod
    def from_dict(cls, d: Any) -> BatchSettings:
        """Build from `teacher.batch`, rejecting unknown keys by name."""
        if isinstance(d, BatchSettings):
            return d
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError(f"must be a mapping, got {type(d).__name__}", field="teacher.batch")
        reject_unknown(d, [f.name for f in dataclasses.fields(cls)], "teacher.batch")
        return cls(**d)


#: Sampling parameters every stage sets on each of its requests, and the config keys that set them:
#: in a run config's `teacher.params` they would be overridden on every call, so they are refused.
STAGE_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "temperature": (
        "expand.temperature",
        "dialogues.KIND.options.temperature",
        "dialogues.KIND.options.user_temperature",
    ),
    "top_p": ("expand.top_p", "dialogues.KIND.options.top_p"),
    "max_tokens": (
        "expand.max_tokens",
        "dialogues.KIND.options.max_tokens",
        "dialogues.KIND.options.user_max_tokens",
        "dialogues.plugin.options.plan_max_tokens",
    ),
}


@dataclass(slots=True)
class TeacherConfig:
    """How datagen talks to the teacher (any OpenAI-compatible chat completions endpoint).

    Args:
        base_url: the endpoint, ending in `/v1` (OpenAI, vLLM, Ollama, llama.cpp server, DeepSeek...).
        model: the model name sent with each request.
        api_key_env: the environment variable holding the API key. When it is unset a placeholder
            is sent, so keyless local servers work.
        concurrency: at most this many requests in flight. The engine lowers it while the server
            answers 429 and raises it back as calls succeed.
        rpm, tpm: optional requests / tokens per `rate_window` seconds (default a minute). Never
            exceeded in any window; tokens are estimated before a call and settled with the usage
            the server reports.
        timeout: seconds one HTTP request may take.
        max_attempts: tries per request (first call included) before it goes to the failure ledger.
        min_backoff, max_backoff: bounds in seconds of the jittered exponential back-off between tries.
        max_retry_after: the longest server-directed wait (`retry-after`) honoured, in seconds.
        params: default sampling parameters (a request's own params win). A run config may not
            set temperature, top_p or max_tokens here: the stages set those (`STAGE_PARAM_KEYS`).
        prices: USD per 1M tokens, `{model: {"input": x, "output": y}}`, for the cost ledger;
            optionally `cached_input` and the batch prices `batch_input`, `batch_output`,
            `batch_cached_input` (`PRICE_KEYS` says how missing ones default).
        stall_seconds: warn when no call has finished for this long while calls are pending.
        progress: show a progress bar (only on a terminal).
        rate_window: the window of `rpm`/`tpm` in seconds. 60 for real APIs; benchmarks shrink it.
        mode: `online` (one HTTP request a call) or `batch` (rounds of batch files: half the price,
            answers within the batch window). In batch mode `concurrency` is the most requests one
            round holds, and so the most dialogues in progress: set it to the run's size.
        batch: batch mode's settings (`BatchSettings`).
    """

    base_url: str = "http://127.0.0.1:8089/v1"
    model: str = "smollm2-135m-instruct"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: int | None = None
    tpm: int | None = None
    timeout: float = 120.0
    max_attempts: int = 6
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    max_retry_after: float = 120.0
    params: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    stall_seconds: float = 300.0
    progress: bool = True
    rate_window: float = 60.0
    mode: str = "online"
    batch: BatchSettings = field(default_factory=BatchSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {self.base_url!r}", field="teacher.base_url")
        self.base_url = self.base_url.rstrip("/")
        for name in ("model", "api_key_env"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"must be a non-empty string, got {value!r}", field=f"teacher.{name}")
        check_int(self.concurrency, "concurrency", minimum=1, where="teacher")
        check_int(self.max_attempts, "max_attempts", minimum=1, where="teacher")
        for name in ("rpm", "tpm"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1, where="teacher")
        for name in ("timeout", "max_backoff", "stall_seconds", "rate_window"):
            _check_number(getattr(self, name), name, positive=True)
        for name in ("min_backoff", "max_retry_after"):
            _check_number(getattr(self, name), name, positive=False)
        if self.min_backoff > self.max_backoff:
            raise ConfigError(
                f"min_backoff ({self.min_backoff}) exceeds max_backoff ({self.max_backoff})",
                field="teacher.min_backoff",
            )
        if not isinstance(self.progress, bool):
            raise ConfigError(f"must be true or false, got {self.progress!r}", field="teacher.progress")
        self.params = check_params(self.params, "teacher.params")
        self.prices = _check_prices(self.prices)
        if self.mode not in MODES:
            raise ConfigError(f"must be one of {', '.join(MODES)}, got {self.mode!r}", field="teacher.mode")
        self.batch = BatchSettings.from_dict(self.batch)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TeacherConfig:
        """Build from a config section, rejecting unknown keys by name."""
        d = dict(d or {})
        reject_unknown(d, [f.name for f in dataclasses.fields(cls)], "teacher")
        if isinstance(d.get("params"), dict):
            for name, keys in STAGE_PARAM_KEYS.items():
                if name in d["params"]:
                    raise ConfigError(
                        f"is set by each stage, which would override it on every request; set "
                        f"{' / '.join(keys)} instead (KIND: hhh or plugin)",
                        field=f"teacher.params.{name}",
                    )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (no secret is ever in it: only the variable's name)."""
        return dataclasses.asdict(self)

    def api_key(self) -> str:
        """The key from the environment, or a placeholder for keyless local servers. A key that
        cannot go into an HTTP header (spaces, a newline, non-ASCII) raises ConfigError saying
        what is wrong with it, never the key itself. The key is remembered for `redact`."""
        value = os.environ.get(self.api_key_env)
        if not value:
            return PLACEHOLDER_API_KEY
        problem = key_problem(value)
        if problem is not None:
            raise ConfigError(
                f"the API key in it {problem}; an API key is one line of printable ASCII with "
                "no spaces: set the variable again without it",
                field=f"${self.api_key_env}",
            )
        remember_secret(value)
        return value

    def price_of(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        batch: bool = False,
    ) -> float | None:
        """USD for these tokens (`cached_tokens` of the prompt at the cached-input price; batch
        prices when `batch`), or None when the price table does not list the model."""
        price = self.prices.get(model)
        if price is None:
            return None
        p_in, p_cached, p_out = price_triple(price, batch=batch)
        cached = min(max(0, cached_tokens), prompt_tokens)
        return ((prompt_tokens - cached) * p_in + cached * p_cached + completion_tokens * p_out) / 1e6


def price_triple(price: dict[str, float], *, batch: bool) -> tuple[float, float, float]:
    """(input, cached input, output) USD per 1M tokens of one model's price entry, online or batch,
    with the defaults `PRICE_KEYS` describes."""
    p_in, p_out = price.get("input", 0.0), price.get("output", 0.0)
    p_cached = price.get("cached_input", p_in)
    if not batch:
        return p_in, p_cached, p_out
    b_in = price.get("batch_input", p_in / 2)
    b_out = price.get("batch_output", p_out / 2)
    b_cached = price.get("batch_cached_input", b_in * p_cached / p_in if p_in else b_in)
    return b_in, b_cached, b_out


_CHAR_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}


def key_problem(key: str) -> str | None:
    """What makes `key` unusable as a bearer token (None when nothing does). Names the character
    and its position, never the key."""
    if not key.strip():
        return f"is only whitespace ({len(key)} characters)"
    for i, ch in enumerate(key, start=1):
        if " " < ch < "\x7f":
            continue
        if ch in _CHAR_NAMES:
            what = _CHAR_NAMES[ch]
        elif ch.isascii():
            what = f"a control character (U+{ord(ch):04X})"
        else:
            name = unicodedata.name(ch, "").lower() if unicodedata.category(ch)[0] in "ZC" else ""
            what = f"a non-ASCII character (U+{ord(ch):04X}{', ' + name if name else ''})"
        where = "at the end" if i == len(key) else f"at character {i} of {len(key)}"
        return f"has {what} {where}"
    return None


def check_params(params: Any, where: str) -> dict[str, Any]:
    """Validate sampling parameters (a dict of JSON values, none of the reserved names)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"must be a mapping, got {type(params).__name__}", field=where)
    bad = sorted(set(params) & RESERVED_PARAMS)
    if bad:
        raise ConfigError(
            f"{', '.join(bad)} cannot be set here (the engine sends model and messages, one "
            "non-streamed choice per request)",
            field=f"{where}.{bad[0]}",
        )
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        if name in params and params[name] is not None:
            _check_number(
                params[name], name, positive=False, where=where, allow_negative=name.endswith("penalty")
            )
    if params.get("max_tokens") is not None:
        check_int(params["max_tokens"], "max_tokens", minimum=1, where=where)
    return dict(params)


def _check_number(
    value: Any, name: str, *, positive: bool, where: str = "teacher", allow_negative: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and not allow_negative:
        ok = value > 0 if positive else value >= 0
    if not ok:
        rule = "a number > 0" if positive else ("a number" if allow_negative else "a number >= 0")
        raise ConfigError(f"must be {rule}, got {value!r}", field=f"{where}.{name}")


def _check_prices(prices: Any) -> dict[str, dict[str, float]]:
    if prices is None:
        return {}
    if not isinstance(prices, dict):
        raise ConfigError(
            f"must be a mapping of model -> {{input, output}}, got {type(prices).__name__}",
            field="teacher.prices",
        )
    out: dict[str, dict[str, float]] = {}
    for model, price in prices.items():
        where = f"teacher.prices.{model}"
        if not isinstance(price, dict):
            raise ConfigError(
                "must be a mapping {input: USD per 1M tokens, output: USD per 1M tokens}", field=where
            )
        unknown = sorted(set(price) - set(PRICE_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)}; expected {', '.join(PRICE_KEYS)}", field=where
            )
        for side in PRICE_KEYS:
            _check_number(price.get(side, 0.0), side, positive=False, where=where)
        entry = {"input": float(price.get("input", 0.0)), "output": float(price.get("output", 0.0))}
        entry.update({k: float(price[k]) for k in PRICE_KEYS[2:] if k in price})
        out[str(model)] = entry
    return out
