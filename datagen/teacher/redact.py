"""Keep API keys out of everything datagen stores or prints.

A server may echo the key it was sent in an error body ("Invalid key: sk-..."), and that text goes
on to the journal, the failure ledgers, the manifest, logs and `Error:` lines. Every writer of
error text passes it through `redact` first:

    remember_secret(key)                 # done by TeacherConfig.api_key() for the key it returns
    redact("HTTP 401: bad key sk-abc")   # -> "HTTP 401: bad key ***"

It removes every remembered secret (as sent, and as JSON would escape it) and whatever follows
`Bearer ` (an Authorization header quoted back), so a key this process never loaded is caught too
when it is quoted that way.
"""

from __future__ import annotations

import json
import re
import threading

MASK = "***"

#: Secrets shorter than this are not redacted: masking every "abc" in a text would ruin it, and
#: no real API key is that short (placeholders such as "not-needed" are not secrets).
MIN_SECRET_CHARS = 8

_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20)[^\s\"',;}\]]+")
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def remember_secret(value: str | None) -> None:
    """Redact `value` from every later `redact` call of this process."""
    global _secrets
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    forms = {value, json.dumps(value, ensure_ascii=True)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    with _lock:
        # Longest first, so a secret that contains another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` without any remembered secret or bearer token (each becomes `***`)."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def redact_opt(text: str | None) -> str | None:
    """`redact` that passes None through."""
    return None if text is None else redact(text)
