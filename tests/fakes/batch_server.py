"""A fake OpenAI Batch API: the fake chat server plus `/v1/files` and `/v1/batches`, on a clock.

    fake = FakeBatchOpenAI(completion_delay=0.1).start()
    fake.base_url                          # http://127.0.0.1:PORT/v1, for OpenAI(base_url=...)
    fake.set_responder(lambda req: "hi")   # one responder answers online calls and batch lines alike
    fake.fail_lines(lambda cid: cid.endswith("7"))          # those lines: a 500 line in the error file
    fake.fail_lines(fraction=0.2, status=None, times=3)     # 3 random (seeded) lines: `error`, no response
    fake.fail_batches(times=1)             # the next batch fails validation (token_limit_exceeded)
    fake.expire_next(keep=0.5)             # the next batch expires with half its lines answered
    fake.shuffle_output = True             # output and error files list lines out of input order
    fake.restart(unavailable=3, down=0.2)  # drop connections, stop listening 0.2 s, then 3 answers of 503
    fake.advance(60)                       # move the batch clock on without sleeping
    fake.submitted                         # Counter: custom_id -> batches it was submitted in
    fake.duplicates()                      # custom_ids submitted more than once
    fake.stop()

Routes (besides `/v1/chat/completions`, `/v1/models`, `/_stats` and `/_control` of FakeOpenAI):
`POST /v1/files` (multipart: `file`, `purpose`), `GET /v1/files`, `GET|DELETE /v1/files/{id}`,
`GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches` (newest first, `limit`/`after`),
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.

A batch is validated when created (JSONL lines with `custom_id`, `method` POST, `url` equal to the
batch's endpoint and a `body`; unique custom_ids; at most `max_lines` lines); a bad file makes the batch
`failed` with `errors.data`. Its lines are answered when it is created (so a line is "submitted" exactly
then), and the batch reveals them on the clock: `validating` for `validating_delay` s, `in_progress` for
`completion_delay` s (line i of n finishes at i+1/n of it: `request_counts` grow), `finalizing` for
`finalizing_delay` s, then `completed` with an output file (`response.status_code` 200) and, when a
line failed, an error file (non-200 status lines, and `error` lines without a response). Expired and
cancelled batches keep the lines finished in time; the rest go to the error file as `batch_expired` /
`batch_cancelled`. Batch lines honour prompt markers (`FAULT:500*1`, counted with the online calls) and
`fail_lines`, not `inject` (which stays for online calls).

Usage carries `prompt_tokens_details.cached_tokens`, from a deterministic prefix cache: tokens are the
whitespace-separated words of the messages; a request's cached tokens are the longest prefix, in whole
`cache_block`-token blocks, that an earlier answered request (online or batch, in order) shared, and 0
below `cache_min` (OpenAI: 1024 and 128). A responder's dict may set `cached_tokens` itself.

Run standalone: `python -m tests.fakes.batch_server --port 0 --completion-delay 1` (prints READY).
"""

from __future__ import annotations

import argparse
import email.policy
import hashlib
import itertools
import json
import math
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.openai_server import (
    _MARKER,
    _STATUS_FAULTS,
    FAULT_KINDS,
    FakeOpenAI,
    Fault,
    _all_text,
    _Handler,
    _Server,
    default_responder,
    last_user_text,
)

__all__ = ["BATCH_ENDPOINTS", "FakeBatch", "FakeBatchOpenAI", "FakeFile", "LineFault"]

BATCH_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"})
DAY = 24 * 3600
EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED = {
    "code": "batch_cancelled",
    "message": "This request was not executed because the batch was cancelled.",
}

# One answered line: (status_code, response body or None, line-level error or None).
LineResult = tuple[int, "dict[str, Any] | None", "dict[str, Any] | None"]


@dataclass(slots=True)
class FakeFile:
    """An uploaded or generated file; `data` is the exact bytes."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.created_at + 30 * DAY if self.purpose.startswith("batch") else None,
            "status_details": None,
        }


@dataclass(slots=True)
class LineFault:
    """A `fail_lines` rule: which lines (`match` on the custom_id, `fraction`) and how they fail."""

    match: str | Callable[[str], bool] | None
    fraction: float | None
    status: int | None  # None: `"response": null` with an `error` object
    remaining: int | None
    code: str
    message: str


@dataclass(slots=True)
class FakeBatch:
    """A batch and its answered lines; its status is derived from the clock (see `FakeBatchOpenAI.status`)."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    created: float  # on the fake's clock
    lines: list[dict[str, Any]]  # the input lines, parsed
    results: list[LineResult]
    errors: list[dict[str, Any]]  # validation errors: non-empty means the batch fails
    validating_delay: float
    completion_delay: float
    finalizing_delay: float
    expire_keep: float | None = None  # the share of lines answered before it expires
    cancel_at: float | None = None
    cancel_delay: float = 0.0
    model: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    settled: bool = False
    polls: int = 0
    usage: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def validated(self) -> float:
        return self.created + self.validating_delay

    @property
    def processed(self) -> float:
        return self.validated + self.completion_delay

    def finish_time(self, i: int) -> float:
        """When line i finishes (lines finish evenly across the in_progress window)."""
        return self.validated + self.completion_delay * (i + 1) / max(1, len(self.lines))

    def kept(self) -> int:
        """How many lines (in input order) an expiring batch answers."""
        n = len(self.lines)
        return n if self.expire_keep is None else min(n, math.floor(n * self.expire_keep))


class FakeBatchOpenAI(FakeOpenAI):
    """FakeOpenAI with the Files and Batches endpoints. `.start()` returns self, `.stop()` stops."""

    def __init__(
        self,
        *,
        completion_delay: float = 0.1,
        validating_delay: float = 0.0,
        finalizing_delay: float = 0.0,
        cancel_delay: float = 0.0,
        max_lines: int = 50_000,
        max_bytes: int = 200 * 1024 * 1024,
        cache_block: int = 128,
        cache_min: int = 1024,
        shuffle_output: bool = False,
        split_errors: bool = True,
        **kwargs: Any,
    ):
        self.completion_delay = completion_delay
        self.validating_delay = validating_delay
        self.finalizing_delay = finalizing_delay
        self.cancel_delay = cancel_delay
        self.max_lines = max_lines  # per batch input file (OpenAI: 50,000)
        self.max_bytes = max_bytes  # per uploaded batch file (OpenAI: 200 MB)
        self.cache_block = cache_block  # 0 turns the prefix cache off
        self.cache_min = cache_min
        self.shuffle_output = shuffle_output
        self.split_errors = (
            split_errors  # False: non-200 lines go to the output file (as vllm run-batch writes)
        )
        self._batch_lock = threading.RLock()
        self._epoch = time.time() - time.monotonic()
        self._offset = 0.0
        self._conns: set[socket.socket] = set()
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ control

    def reset(self) -> None:
        """Forget everything FakeOpenAI.reset forgets, and the files, batches, knobs and counters."""
        super().reset()
        with self._batch_lock:
            self.files: dict[str, FakeFile] = {}
            self.batches: dict[str, FakeBatch] = {}
            self.submitted: Counter[str] = Counter()  # custom_id -> batches it was submitted in
            self.batch_lines: list[dict[str, Any]] = []  # every submitted line, in order
            self.uploads = 0
            self.polls = 0  # GET /v1/batches/{id}
            self.downloads = 0  # GET /v1/files/{id}/content
            self.cancels = 0
            self.unavailable_served = 0
            self._unavailable = 0
            self._retry_after: float | None = None
            self._line_faults: list[LineFault] = []
            self._batch_faults: list[dict[str, Any]] = []
            self._expire_next: list[float] = []
            self._prefixes: set[bytes] = set()
            self._ids = itertools.count(1)
            self._line_random = random.Random(0)

    def advance(self, seconds: float) -> None:
        """Move the batch clock on by `seconds` (tests use it instead of sleeping)."""
        with self._batch_lock:
            self._offset += seconds

    def now(self) -> float:
        """The batch clock: monotonic seconds plus every `advance`."""
        return time.monotonic() + self._offset

    def unix(self, t: float) -> int:
        """A clock reading as a Unix timestamp (what the API reports)."""
        return int(self._epoch + t)

    def fail_lines(
        self,
        match: str | Callable[[str], bool] | None = None,
        *,
        fraction: float | None = None,
        status: int | None = 500,
        times: int | None = None,
        code: str = "server_error",
        message: str = "The server had an error processing this request (fake).",
    ) -> None:
        """Fail batch lines whose custom_id matches (`match`: a predicate, or a substring; None: any)
        and, with `fraction`, only a seeded random share of them; `times` caps how many lines (None:
        no cap). `status` set: the line gets that status and an error body; None: `"response": null`
        and an `error` object. Failed lines go to the error file."""
        with self._batch_lock:
            self._line_faults.append(LineFault(match, fraction, status, times, code, message))

    def fail_batches(
        self,
        times: int = 1,
        *,
        code: str = "token_limit_exceeded",
        message: str = "Enqueued token limit reached for this model (fake).",
    ) -> None:
        """The next `times` batches created fail validation with this error (nothing is answered)."""
        with self._batch_lock:
            self._batch_faults.extend(
                {"code": code, "message": message, "line": None, "param": None} for _ in range(times)
            )

    def expire_next(self, times: int = 1, *, keep: float = 0.5) -> None:
        """The next `times` batches created expire at the end of their in_progress window, with the
        first `keep` share of their lines (input order) answered and the rest `batch_expired`."""
        with self._batch_lock:
            self._expire_next.extend([keep] * times)

    def restart(
        self, *, unavailable: int = 0, down: float | None = 0.0, retry_after: float | None = None
    ) -> None:
        """A server restart: drop every open connection and stop listening; listen again on the same
        port after `down` seconds (in the background when > 0; None: stay down until `resume()`); then
        answer 503 to the next `unavailable` API requests (with `retry-after-ms` when `retry_after`
        seconds is set). Files, batches and the clock survive."""
        with self._batch_lock:
            self._unavailable = unavailable
            self._retry_after = retry_after
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._batch_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if down is None:
            return
        if down > 0:
            threading.Timer(down, self._relisten).start()
        else:
            self._listen()

    def resume(self) -> None:
        """Listen again after `restart(down=None)`."""
        if self._server is None:
            self._listen()

    def _relisten(self) -> None:
        if not self._stopping.is_set():  # stopped while down: stay down
            self._listen()

    def duplicates(self) -> list[str]:
        """custom_ids submitted in more than one batch (or twice in one), sorted."""
        with self._batch_lock:
            return sorted(cid for cid, n in self.submitted.items() if n > 1)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        with self._batch_lock:
            stats.update(
                {
                    "uploads": self.uploads,
                    "batches": len(self.batches),
                    "polls": self.polls,
                    "downloads": self.downloads,
                    "lines_submitted": sum(self.submitted.values()),
                    "duplicates": self.duplicates(),
                    "unavailable_served": self.unavailable_served,
                }
            )
        return stats

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeBatchOpenAI:
        """Bind (port 0 picks a free port) and serve on a daemon thread."""
        self._listen()
        return self

    def _listen(self) -> None:
        server = _Server((self.host, self.port), _BatchHandler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-batch-openai", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> FakeBatchOpenAI:
        return self.start()

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._batch_lock:
            if open_:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _take_unavailable(self) -> bool:
        with self._batch_lock:
            if self._unavailable <= 0:
                return False
            self._unavailable -= 1
            self.unavailable_served += 1
            return True

    # ------------------------------------------------------------------ answers and the prefix cache

    def completion_body(self, body: dict[str, Any], reply: str | dict[str, Any]) -> dict[str, Any]:
        """FakeOpenAI's completion body, with `usage.prompt_tokens_details.cached_tokens`."""
        out = super().completion_body(body, reply)
        usage = out.get("usage")
        cached = self.cached_tokens(body)
        if isinstance(reply, dict) and "cached_tokens" in reply:
            cached = int(reply["cached_tokens"])
        if isinstance(usage, dict) and "prompt_tokens_details" not in usage:
            details = {"cached_tokens": min(cached, int(usage.get("prompt_tokens") or 0)), "audio_tokens": 0}
            out = {**out, "usage": {**usage, "prompt_tokens_details": details}}
        return out

    def cached_tokens(self, body: dict[str, Any]) -> int:
        """The cached prefix of this request's tokens, then remember its prefixes for later requests."""
        tokens = _all_text(body).split()
        if self.cache_block <= 0:
            return 0
        digest = hashlib.sha1()
        hit, seen = 0, []
        with self._batch_lock:
            for end in range(self.cache_block, len(tokens) + 1, self.cache_block):
                digest.update("\x00".join(tokens[end - self.cache_block : end]).encode() + b"\x01")
                key = digest.digest()
                if key in self._prefixes:
                    hit = end
                seen.append(key)
            self._prefixes.update(seen)
        return hit if hit >= self.cache_min else 0

    def _answer_line(self, custom_id: str, body: dict[str, Any]) -> LineResult:
        """A batch line's result: a fail_lines rule, else a prompt marker, else the responder."""
        rule = self._line_fault(custom_id)
        if rule is not None:
            if rule.status is None:
                return 500, None, {"code": rule.code, "message": rule.message}
            return rule.status, _error_body(rule.message, rule.code), None
        fault = self._marker_fault(body)
        if fault is None:
            try:
                reply = self.responder(body)
            except Exception as exc:  # a broken responder is a 500 line, visible in the test
                return 500, _error_body(f"responder raised {exc!r}", "server_error"), None
            if not isinstance(reply, Fault):
                return 200, self.completion_body(body, reply), None
            fault = reply
        with self._lock:
            self.faults_served[fault.kind] += 1
        return self._fault_line(fault, body)

    def _line_fault(self, custom_id: str) -> LineFault | None:
        for rule in self._line_faults:
            if rule.match is not None:
                hit = rule.match(custom_id) if callable(rule.match) else rule.match in custom_id
                if not hit:
                    continue
            if rule.fraction is not None and self._line_random.random() >= rule.fraction:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._line_faults.remove(rule)
            return rule
        return None

    def _marker_fault(self, body: dict[str, Any]) -> Fault | None:
        """`FAULT:kind[*n]` in the messages, counted per prompt together with the online calls."""
        marker = _MARKER.search(_all_text(body))
        if not marker or marker.group(1) not in FAULT_KINDS:
            return None
        with self._lock:
            key = last_user_text(body)
            self._marker_counts[key] += 1
            limit = marker.group(2)
            if limit is not None and self._marker_counts[key] > int(limit):
                return None
        return Fault(marker.group(1))

    def _fault_line(self, fault: Fault, body: dict[str, Any]) -> LineResult:
        """What a fault looks like inside a batch: the status it would have had, or the cut answer."""
        kind = fault.kind
        if kind in _STATUS_FAULTS:
            status, code, message = _STATUS_FAULTS[kind]
            return status, _error_body((fault.message or message).replace("{auth}", ""), code), None
        if kind == "slow":
            return 200, self.completion_body(body, default_responder(body)), None
        if kind in ("drop", "malformed"):  # a provider turns a broken backend answer into a 500 line
            return (
                500,
                _error_body("The server had an error processing this request (fake).", "server_error"),
                None,
            )
        if kind == "length":
            cut: dict[str, Any] = {"content": "This answer was cut", "finish_reason": "length"}
            if isinstance(body.get("max_tokens"), int):
                cut["completion_tokens"] = body["max_tokens"]
            return 200, self.completion_body(body, cut), None
        if kind == "context":
            return (
                200,
                self.completion_body(
                    body,
                    {
                        "content": "This answer was cut",
                        "finish_reason": "length",
                        "prompt_tokens": 3315,
                        "completion_tokens": 781,
                    },
                ),
                None,
            )
        if kind == "content_filter":
            return 200, self.completion_body(body, {"content": "", "finish_reason": "content_filter"}), None
        full = self.completion_body(body, "")
        if kind == "empty":
            full["choices"] = []
        return 200, full, None

    # ------------------------------------------------------------------ the Files API

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def upload(self, filename: str, purpose: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """POST /v1/files."""
        if purpose == "batch" and len(data) > self.max_bytes:
            return 400, _error_body(
                f"File is too large: {len(data)} bytes; a batch file holds at most "
                f"{self.max_bytes} bytes (fake).",
                "invalid_request_error",
                param="file",
            )
        with self._batch_lock:
            self.uploads += 1
            f = FakeFile(self._new_id("file-fake"), filename, purpose, data, self.unix(self.now()))
            self.files[f.id] = f
        return 200, f.to_json()

    def _store(self, filename: str, lines: list[dict[str, Any]]) -> str:
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        f = FakeFile(self._new_id("file-fake"), filename, "batch_output", data, self.unix(self.now()))
        self.files[f.id] = f
        return f.id

    # ------------------------------------------------------------------ the Batches API

    def create_batch(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /v1/batches: validate, answer every line, and return the batch (`validating`)."""
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not params.get(name):
                return 400, _error_body(
                    f"Missing required parameter: '{name}'.", "missing_required_parameter", param=name
                )
        if params["endpoint"] not in BATCH_ENDPOINTS:
            return 400, _error_body(
                f"Invalid endpoint {params['endpoint']!r}.", "invalid_value", param="endpoint"
            )
        if params["completion_window"] != "24h":
            return 400, _error_body(
                "Invalid completion_window: only '24h' is supported.",
                "invalid_value",
                param="completion_window",
            )
        with self._batch_lock:
            f = self.files.get(params["input_file_id"])
            if f is None:
                return 404, _error_body(
                    f"No such File object: {params['input_file_id']}", "not_found", param="input_file_id"
                )
            if f.purpose != "batch":
                return 400, _error_body(
                    f"File {f.id} has purpose {f.purpose!r}, not 'batch'.",
                    "invalid_value",
                    param="input_file_id",
                )
            lines, errors = _parse_input(f.data, params["endpoint"], self.max_lines)
            if not errors and self._batch_faults:
                errors = [self._batch_faults.pop(0)]
            b = FakeBatch(
                self._new_id("batch_fake"),
                f.id,
                params["endpoint"],
                params["completion_window"],
                params.get("metadata"),
                self.now(),
                lines if not errors else [],
                [],
                errors,
                self.validating_delay,
                self.completion_delay,
                self.finalizing_delay,
                cancel_delay=self.cancel_delay,
            )
            if not errors:
                models = (ln["body"].get("model") for ln in lines)
                b.model = next((m for m in models if isinstance(m, str)), None)
                if self._expire_next:
                    b.expire_keep = self._expire_next.pop(0)
                for line in lines:
                    self.submitted[line["custom_id"]] += 1
                    self.batch_lines.append(line)
                    b.results.append(self._answer_line(line["custom_id"], line["body"]))
            self.batches[b.id] = b
            obj = self._batch_json(b, b.created)
        # Like OpenAI, the create call answers `validating` however short the validation is.
        obj.update(
            status="validating",
            in_progress_at=None,
            finalizing_at=None,
            completed_at=None,
            expired_at=None,
            output_file_id=None,
            error_file_id=None,
            errors=None,
            usage=None,
            failed_at=None,
            request_counts={"total": len(b.lines), "completed": 0, "failed": 0},
        )
        return 200, obj

    def retrieve_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        """GET /v1/batches/{id}."""
        with self._batch_lock:
            b = self.batches.get(batch_id)
            if b is None:
                return 404, _error_body(f"No batch found with id '{batch_id}'.", "not_found")
            self.polls += 1
            b.polls += 1
            return 200, self._batch_json(b, self.now())

    def cancel_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        """POST /v1/batches/{id}/cancel: `cancelling`, then `cancelled` after `cancel_delay`."""
        with self._batch_lock:
            b = self.batches.get(batch_id)
            if b is None:
                return 404, _error_body(f"No batch found with id '{batch_id}'.", "not_found")
            now = self.now()
            status = self.status(b, now)
            if status in ("completed", "failed", "expired", "cancelled"):
                return 409, _error_body(
                    f"Cannot cancel a batch with status '{status}'.", "invalid_request_error"
                )
            self.cancels += 1
            if b.cancel_at is None:
                b.cancel_at = now
            return 200, self._batch_json(b, now)

    def list_batches(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """GET /v1/batches: newest first, `limit` per page, after the batch id `after`."""
        with self._batch_lock:
            now = self.now()
            ids = list(reversed(self.batches))
            if after in self.batches:
                ids = ids[ids.index(after) + 1 :]
            page = ids[: max(1, min(100, limit))]
            data = [self._batch_json(self.batches[i], now) for i in page]
        return {
            "object": "list",
            "data": data,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
            "has_more": len(ids) > len(page),
        }

    def status(self, b: FakeBatch, now: float) -> str:
        """The batch's status at clock reading `now` (settling its files when it ends)."""
        if b.errors:
            return "validating" if now < b.validated else "failed"
        if b.cancel_at is not None:
            if now < b.cancel_at + b.cancel_delay:
                return "cancelling"
            self._settle(b, "cancelled")
            return "cancelled"
        if now < b.validated:
            return "validating"
        if now < b.processed:
            return "in_progress"
        if b.expire_keep is not None:
            self._settle(b, "expired")
            return "expired"
        if now < b.processed + b.finalizing_delay:
            return "finalizing"
        self._settle(b, "completed")
        return "completed"

    def _line_done(self, b: FakeBatch, i: int, how: str) -> bool:
        """Whether line i was answered when a batch that ended `how` stopped."""
        if how == "expired":
            return i < b.kept()
        if how == "cancelled":
            return b.cancel_at is not None and b.finish_time(i) <= b.cancel_at
        return True

    def _settle(self, b: FakeBatch, how: str) -> None:
        """Write the output and error files once, when the batch ends."""
        if b.settled:
            return
        b.settled = True
        output, errors = [], []
        usage = {"input_tokens": 0, "cached": 0, "output_tokens": 0}
        for i, (line, (status, body, error)) in enumerate(zip(b.lines, b.results, strict=True)):
            out: dict[str, Any] = {"id": f"batch_req_{b.id}_{i}", "custom_id": line["custom_id"]}
            if not self._line_done(b, i, how):
                out.update(response=None, error=EXPIRED if how == "expired" else CANCELLED)
                errors.append(out)
                continue
            response = (
                None
                if body is None
                else {"status_code": status, "request_id": f"req_fake_{b.id}_{i}", "body": body}
            )
            out.update(response=response, error=error)
            if status == 200:
                u = (body or {}).get("usage") or {}
                usage["input_tokens"] += int(u.get("prompt_tokens") or 0)
                usage["cached"] += int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                usage["output_tokens"] += int(u.get("completion_tokens") or 0)
            (output if status == 200 or not self.split_errors else errors).append(out)
        if self.shuffle_output:
            for lines in (output, errors):
                order = lines[:]
                random.Random(b.id).shuffle(lines)
                if len(lines) > 1 and lines == order:
                    lines.reverse()
        if output:
            b.output_file_id = self._store(f"{b.id}_output.jsonl", output)
        if errors:
            b.error_file_id = self._store(f"{b.id}_error.jsonl", errors)
        b.usage = {
            "input_tokens": usage["input_tokens"],
            "input_tokens_details": {"cached_tokens": usage["cached"]},
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        }

    def _counts(self, b: FakeBatch, now: float, status: str) -> dict[str, int]:
        total = len(b.lines)
        if status in ("completed", "expired", "cancelled"):
            done = [i for i in range(total) if self._line_done(b, i, status)]
        elif status in ("in_progress", "finalizing", "cancelling"):
            cut = min(now, b.cancel_at) if b.cancel_at is not None else now
            done = [i for i in range(min(total, b.kept())) if b.finish_time(i) <= cut]
        else:
            done = []
        ok = sum(1 for i in done if b.results[i][0] == 200)
        ended = status in ("expired", "cancelled")
        return {"total": total, "completed": ok, "failed": (total - ok) if ended else len(done) - ok}

    def _batch_json(self, b: FakeBatch, now: float) -> dict[str, Any]:
        status = self.status(b, now)
        stamp = self.unix
        obj: dict[str, Any] = {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": stamp(b.created),
            "in_progress_at": None,
            "expires_at": stamp(b.created) + DAY,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": self._counts(b, now, status),
            "metadata": b.metadata,
            "usage": b.usage,
        }
        if status not in ("validating", "failed") and (b.cancel_at is None or b.cancel_at >= b.validated):
            obj["in_progress_at"] = stamp(b.validated)
        if status in ("finalizing", "completed"):
            obj["finalizing_at"] = stamp(b.processed)
        if status == "completed":
            obj["completed_at"] = stamp(b.processed + b.finalizing_delay)
        elif status == "failed":
            obj["failed_at"] = stamp(b.validated)
        elif status == "expired":
            obj["expired_at"] = stamp(b.processed)
        if b.cancel_at is not None:
            obj["cancelling_at"] = stamp(b.cancel_at)
            if status == "cancelled":
                obj["cancelled_at"] = stamp(b.cancel_at + b.cancel_delay)
        return obj


def _error_body(message: str, code: str, *, param: str | None = None) -> dict[str, Any]:
    kind = code if code.endswith("_error") else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _parse_input(
    data: bytes, endpoint: str, max_lines: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lines of a batch input file, and its validation errors (`line` counts from 1)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def bad(n: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": n, "message": message, "param": param})

    for n, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            bad(n, "invalid_json_line", f"Line {n} is not valid JSON.")
            continue
        if not isinstance(line, dict):
            bad(n, "invalid_json_line", f"Line {n} is not a JSON object.")
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in line]
        if missing:
            bad(n, "missing_required_parameter", f"Line {n} lacks {', '.join(missing)}.", missing[0])
            continue
        if line["method"] != "POST":
            bad(n, "invalid_value", f"Line {n}: method must be POST.", "method")
        elif line["url"] != endpoint:
            bad(
                n,
                "mismatched_endpoint",
                f"Line {n}: url {line['url']!r} is not the batch endpoint {endpoint!r}.",
                "url",
            )
        elif not isinstance(line["body"], dict):
            bad(n, "invalid_value", f"Line {n}: body must be an object.", "body")
        elif line["custom_id"] in seen:
            bad(
                n,
                "duplicate_custom_id",
                f"The custom_id for this request is a duplicate of another request: {line['custom_id']!r}.",
                "custom_id",
            )
        else:
            seen.add(line["custom_id"])
            lines.append(line)
    if not lines and not errors:
        errors.append(
            {"code": "empty_file", "line": None, "message": "The batch input file is empty.", "param": None}
        )
    if len(lines) > max_lines:
        errors.append(
            {
                "code": "too_many_requests",
                "line": None,
                "param": None,
                "message": f"The batch input file holds {len(lines)} requests; at most {max_lines} are allowed.",
            }
        )
    return lines, errors


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return fields
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class _BatchHandler(_Handler):
    server_version = "FakeBatchOpenAI/1.0"

    @property
    def fake(self) -> FakeBatchOpenAI:
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle and delayed ACKs add 40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track(self.connection, False)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _gate(self, path: str, read_body: bool) -> bool:
        """Answer 503 while 'restarting' and 401 to a wrong key; True when the request was answered."""
        if not path.startswith("/v1/"):
            return False
        if self.fake._take_unavailable():
            if read_body:
                self._body()
            wait = self.fake._retry_after
            self._send_json(
                503,
                {
                    "error": {
                        "message": "The server is restarting (fake).",
                        "type": "server_error",
                        "code": "service_unavailable",
                        "param": None,
                    }
                },
                {} if wait is None else {"retry-after-ms": f"{wait * 1000:g}"},
            )
            return True
        key = self.fake.api_key
        wrong_key = key is not None and self.headers.get("Authorization") != f"Bearer {key}"
        if wrong_key and path.startswith(("/v1/files", "/v1/batches")):  # chat calls: FakeOpenAI checks
            if read_body:
                self._body()
            self._send_json(401, _error_body("Incorrect API key provided (fake).", "invalid_api_key"))
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        if self._gate(path, read_body=False):
            return
        fake = self.fake
        parts = path.split("/")[2:]  # after "/v1"
        if parts == ["files"]:
            with fake._batch_lock:
                data = [f.to_json() for f in reversed(fake.files.values())]
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                    "has_more": False,
                },
            )
        elif len(parts) in (2, 3) and parts[0] == "files" and parts[2:] in ([], ["content"]):
            with fake._batch_lock:
                f = fake.files.get(parts[1])
                if f is not None and parts[2:]:
                    fake.downloads += 1
            if f is None:
                self._send_json(404, _error_body(f"No such File object: {parts[1]}", "not_found", param="id"))
            elif parts[2:]:
                self._send_bytes(f.data)
            else:
                self._send_json(200, f.to_json())
        elif parts == ["batches"]:
            query = parse_qs(url.query)
            limit = int((query.get("limit") or ["20"])[0])
            self._send_json(200, fake.list_batches(limit, (query.get("after") or [None])[0]))
        elif len(parts) == 2 and parts[0] == "batches":
            self._send_json(*fake.retrieve_batch(parts[1]))
        else:
            super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        if self._gate(path, read_body=True):
            return
        fake = self.fake
        parts = path.split("/")[2:]
        if parts == ["files"]:
            fields = _multipart(self.headers.get("Content-Type", ""), self._body())
            if "file" not in fields or "purpose" not in fields:
                self._send_json(
                    400,
                    _error_body(
                        "A multipart body with 'file' and 'purpose' is required.",
                        "missing_required_parameter",
                        param="file",
                    ),
                )
                return
            filename, data = fields["file"]
            self._send_json(*fake.upload(filename or "upload.jsonl", fields["purpose"][1].decode(), data))
        elif parts == ["batches"]:
            try:
                params = json.loads(self._body() or b"{}")
            except ValueError:
                self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
                return
            self._send_json(*fake.create_batch(params))
        elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            self._body()
            self._send_json(*fake.cancel_batch(parts[1]))
        else:
            super().do_POST()

    def do_DELETE(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        if self._gate(path, read_body=False):
            return
        parts = path.split("/")[2:]
        fake = self.fake
        if len(parts) == 2 and parts[0] == "files":
            with fake._batch_lock:
                gone = fake.files.pop(parts[1], None)
            if gone is None:
                self._send_json(404, _error_body(f"No such File object: {parts[1]}", "not_found", param="id"))
            else:
                self._send_json(200, {"id": gone.id, "object": "file", "deleted": True})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": "not_found"}})

    def _send_bytes(self, data: bytes) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Serve until killed; prints `READY <base_url>` once listening."""
    parser = argparse.ArgumentParser(description="A fake OpenAI Batch API server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--completion-delay", type=float, default=0.1, help="seconds a batch stays in_progress"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each online answer")
    args = parser.parse_args(argv)
    fake = FakeBatchOpenAI(
        host=args.host, port=args.port, latency=args.latency, completion_delay=args.completion_delay
    ).start()
    print(f"READY {fake.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
