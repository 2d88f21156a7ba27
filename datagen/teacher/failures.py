"""What went wrong with one teacher call, and whether trying again can help.

Every failure becomes a `CallFailure` with a short code (the `Result.error` vocabulary):

    code                 retried   stops the run   cause
    rate_limited         yes       no              429 (honours retry-after-ms / retry-after)
    server_error         yes       no              5xx, 408, 409
    timeout              yes       no              no answer within the timeout
    connection           yes       no              refused, reset, dropped connection
    invalid_response     yes       no              a body that is not a chat completion (bad JSON)
    empty                yes       no              a completion with no choices
    insufficient_quota   no        yes             429 whose error code is insufficient_quota
    auth                 no        yes             401, 403
    not_found            no        yes             404 (wrong base_url or model name)
    bad_request          no        no              400, 422 and other 4xx
    length               no        no              finish_reason "length" where the whole answer is needed
    content_filter       no        no              finish_reason "content_filter"
    empty_text           no        no              a choice whose message has no text
    batch_expired        yes       no              a batch line not run within the batch's window
    batch_cancelled      yes       no              a batch line not run because its batch was cancelled

A batch line that ran is classified like the online call it stands for: its `status_code` goes
through `classify_status`, its body through the engine's completion parser.

"Stops the run" failures are account- or endpoint-wide: once one is seen, the engine sends
nothing more and fails the remaining requests with the same reason instead of paying a million
times for the same 401.
"""

from __future__ import annotations

import email.utils
import time

import openai

from datagen.teacher.redact import redact

RETRYABLE = frozenset(
    {
        "rate_limited",
        "server_error",
        "timeout",
        "connection",
        "invalid_response",
        "empty",
        "batch_expired",
        "batch_cancelled",
    }
)
FATAL = frozenset({"insufficient_quota", "auth", "not_found"})


class CallFailure(Exception):
    """One failed try. `prompt_tokens`/`completion_tokens` are what the server billed for it
    (non-zero only when it answered, e.g. `length`); `text` keeps a partial answer. `detail` is
    redacted (`datagen.teacher.redact`): a server may quote the key back in its error body."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        retry_after: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        text: str | None = None,
        finish_reason: str | None = None,
    ):
        detail = redact(detail)
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.text = text
        self.finish_reason = finish_reason

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    @property
    def fatal(self) -> bool:
        return self.code in FATAL


def parse_retry_after(headers: object) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date), or None."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            if name == "retry-after":
                parsed = email.utils.parsedate_tz(value)
                if parsed is not None:
                    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
            continue
        if seconds >= 0 and seconds == seconds and seconds != float("inf"):
            return seconds
    return None


def classify(exc: BaseException) -> CallFailure:
    """Turn an exception raised by the openai client into a CallFailure."""
    if isinstance(exc, CallFailure):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return CallFailure("timeout", str(exc) or "request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}: {type(cause).__name__}: {cause}" if cause else str(exc)
        return CallFailure("connection", detail)
    if isinstance(exc, openai.APIStatusError):
        return classify_status(
            exc.status_code, _error_message(exc), headers=exc.response.headers, quota=_is_quota(exc)
        )
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return CallFailure("invalid_response", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, openai.APIError):
        return CallFailure("connection", f"{type(exc).__name__}: {exc}")
    raise exc


def classify_status(status: int, message: str, *, headers: object = None, quota: bool = False) -> CallFailure:
    """The failure an HTTP `status` stands for (an online answer, or a batch line's `status_code`).
    `quota`: a 429 whose error code is `insufficient_quota`."""
    detail = f"HTTP {status}: {message}"
    if status == 429:
        if quota:
            return CallFailure("insufficient_quota", detail)
        return CallFailure("rate_limited", detail, retry_after=parse_retry_after(headers))
    if status >= 500 or status in (408, 409):
        return CallFailure("server_error", detail, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        return CallFailure("auth", detail)
    if status == 404:
        return CallFailure("not_found", detail)
    return CallFailure("bad_request", detail)


def _is_quota(exc: openai.APIStatusError) -> bool:
    return "insufficient_quota" in {exc.code, getattr(exc, "type", None)}


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        msg = body["message"]
    else:
        msg = exc.message
    return msg[:500]
