"""A small JSON-over-HTTP client shared by the HTTP search backend and Text2Image (stdlib only).

Secrets never appear in config files: headers are given as `{header: ENV_VAR_NAME}` and read from
the environment at call time. Transient failures (connection errors, timeouts, 429, 5xx) are
retried with capped exponential backoff (or the server's `Retry-After`); anything else, or the last failure, raises
`ToolUnavailableError` with the URL (query string dropped) and status.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from datagen.errors import ConfigError
from datagen.tools.base import ToolUnavailableError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: longest wait between two attempts (backoff or the server's Retry-After)
MAX_RETRY_WAIT = 30.0


def request_time_limit(timeout: float, retries: int) -> float:
    """How long `request_json(timeout=..., retries=...)` may take when every attempt times out
    and every wait is the longest: a tool's `time_limit` above it lets the requests' own timeouts
    act first."""
    return (retries + 1) * timeout + retries * MAX_RETRY_WAIT + 5.0


def env_headers(headers_env: Mapping[str, str] | None) -> dict[str, str]:
    """Resolve `{header: ENV_VAR}` to `{header: value}`; a missing variable raises ConfigError.

    A value of the form `Bearer $VAR` keeps its prefix: `{"Authorization": "Bearer $SEARCH_KEY"}`.
    """
    out: dict[str, str] = {}
    for header, spec in (headers_env or {}).items():
        prefix, _, var = spec.rpartition("$") if "$" in spec else ("", "", spec)
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(
                f"environment variable {var} (for header {header}) is not set", field="headers_env"
            )
        out[header] = prefix + value
    return out


def _safe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def request_json(
    url: str,
    *,
    method: str = "GET",
    params: Mapping[str, Any] | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    retries: int = 2,
    backoff: float = 0.5,
) -> Any:
    """Send one request and return the decoded JSON response (see module docstring)."""
    if params:
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = url + sep + urllib.parse.urlencode(params)
    data = None
    all_headers = {"Accept": "application/json", "User-Agent": "datagen-tools"}
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    last = ""
    retry_after = 0.0
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(max(backoff * 2 ** (attempt - 1), retry_after), MAX_RETRY_WAIT))
            retry_after = 0.0
        req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code in RETRY_STATUS:
                try:  # honour Retry-After (seconds form), capped at 30 s
                    retry_after = float(exc.headers.get("Retry-After") or 0)
                except (TypeError, ValueError):
                    retry_after = 0.0
                continue
            break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            continue
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            last = "response is not JSON"
            break
    raise ToolUnavailableError(f"{method} {_safe_url(url)} failed: {last}")


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists (`data.0.url`); None when it does not exist."""
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.lstrip("-").isdigit():
            idx = int(part)
            obj = obj[idx] if -len(obj) <= idx < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj
