"""The teacher engine's public types: what callers submit and what they get back.

Callers build `Request`s and hand them to `TeacherEngine` (`datagen.teacher.engine`):

    async with TeacherEngine(config, journal_path=run_dir / "journal.sqlite") as engine:
        result = await engine.complete(request)          # one call, awaited
        async for result in engine.map(requests):        # many, yielded as they finish
            ...

A Result is never an exception for an API failure: `ok` is False and `error` says why. Only a
programming error raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """One chat completion to make.

    `messages` are OpenAI chat messages. `params` are sampling parameters passed through to the API
    (temperature, top_p, max_tokens, stop, seed, ...); they join the config defaults, request values
    winning. `template_version` names the prompt template that built the messages: it is part of
    the journal key, so changing a template re-asks the teacher. `require_complete` makes
    `finish_reason == "length"` a failure. `tag` is the caller's own label (e.g. dialogue id and
    turn); it is returned on the Result and is not part of the key. `sample` tells apart repeated
    samples of the same request (e.g. several candidate answers): it is part of the key, not sent.
    """

    messages: tuple[dict[str, Any], ...] | list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    template_version: str = ""
    require_complete: bool = True
    tag: Any = None
    sample: int = 0


@dataclass(slots=True)
class Result:
    """What became of a Request.

    `key` is the journal key (hash of the canonical request). `cached` is True when the journal
    already held a finished response and nothing was paid. `error` is a short reason code when
    `ok` is False: `rate_limited`, `server_error`, `timeout`, `connection`, `bad_request`,
    `auth`, `not_found`, `insufficient_quota`, `length`, `empty` (no choices), `empty_text` (a choice
    with no text), `invalid_response`, `content_filter`, `batch_expired`, `batch_cancelled` (see
    `datagen.teacher.failures`); `detail` holds the last error message. `attempts` counts the HTTP tries (or batch lines) made for this
    Result (0 when cached). `cached_tokens` is the part of `prompt_tokens` the provider read from
    its prompt cache (billed at the cached-input price).
    """

    key: str
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    model: str | None = None
    cached: bool = False
    attempts: int = 0
    error: str | None = None
    detail: str | None = None
    tag: Any = None
    cached_tokens: int = 0
