"""A fake OpenAI-compatible server: real HTTP on 127.0.0.1, scripted replies, faults on demand.

    fake = FakeOpenAI(latency=0.0).start()
    fake.base_url                      # http://127.0.0.1:PORT/v1
    fake.set_responder(lambda req: "hello")            # str, dict or Fault per request
    fake.inject("429", times=2, retry_after=0.05)      # the next 2 matching requests get a 429
    fake.inject("500", match="FAIL-ME")                # only requests whose messages contain FAIL-ME
    fake.inject("429", times=None, probability=0.3)    # a random 30% of requests (seeded), forever
    fake.inject("400", message="Unsupported parameter: 'top_p'")   # the error body's message
    fake.requests                      # chat completion requests received (faulted ones included)
    fake.count("some prompt text")     # requests whose messages contain the text
    fake.stop()

A prompt can also carry its own fault: a message containing `FAULT:429` gets a 429 every time;
`FAULT:500*2` gets a 500 on its first two requests and a normal answer after (the count is per
distinct prompt). Fault kinds (`FAULT_KINDS`):

    429 (with retry-after unless retry_after=None and retry_after_ms=None: see `inject`)
    429_bare (no retry header), quota (429 insufficient_quota), 400, 401, 403, 404, 422, 500, 503,
    slow (answer after `delay` seconds: past the client's timeout), drop (close the connection
    without answering), malformed (200 with a body that is not JSON), length (finish_reason
    "length" at the request's max_tokens), context (finish_reason "length" short of max_tokens: the
    prompt filled a 4096-token context window), content_filter, empty (no choices), empty_text (message content ""),
    echo_key (a 400 whose message quotes the Authorization header back, as some servers do)

Run standalone (for the benchmark or a child process):

    python -m tests.fakes.openai_server --port 0 --latency 1.0    # prints READY <base_url>

and read its counters with GET /_stats, or change it with POST /_control
{"latency": 0.1, "reset": true, "inject": {"kind": "500", "times": 1}}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FAULT_KINDS", "Fault", "FakeOpenAI", "default_responder", "last_user_text"]

FAULT_KINDS = frozenset(
    {
        "429",
        "429_bare",
        "quota",
        "400",
        "401",
        "403",
        "404",
        "422",
        "500",
        "503",
        "slow",
        "drop",
        "malformed",
        "length",
        "content_filter",
        "empty",
        "empty_text",
        "echo_key",
        "context",
    }
)
_MARKER = re.compile(r"FAULT:([a-z0-9_]+)(?:\*(\d+))?")


@dataclass(slots=True)
class Fault:
    """A fault to serve instead of (or, for `slow`, before) a normal answer."""

    kind: str
    retry_after: float | None = None  # seconds, sent as `retry-after`
    retry_after_ms: float | None = None  # sent as `retry-after-ms`
    delay: float = 30.0  # for `slow`: seconds before answering
    message: str | None = None  # the error body's message instead of the kind's own

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")


@dataclass(slots=True)
class _Injection:
    fault: Fault
    remaining: int | None  # None: forever
    match: str | None
    probability: float = 1.0  # the share of matching requests it is served to


Responder = Callable[[dict[str, Any]], "str | dict[str, Any] | Fault"]


def last_user_text(request: dict[str, Any]) -> str:
    """The content of the last user message of a chat request ('' if none)."""
    for m in reversed(request.get("messages") or []):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _all_text(request: dict[str, Any]) -> str:
    return "\n".join(_text(m.get("content")) for m in request.get("messages") or [])


def default_responder(request: dict[str, Any]) -> str:
    """The reply when no responder is set: `echo: <last user message>`."""
    return f"echo: {last_user_text(request)}"


class FakeOpenAI:
    """The server object. Start with `.start()` (returns self), stop with `.stop()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        model: str = "fake-teacher",
        api_key: str | None = None,
        keep_log: bool = True,
    ):
        self.host = host
        self.port = port
        self.latency = latency
        self.model = model
        self.api_key = api_key  # when set, other keys get 401
        self.keep_log = keep_log
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ------------------------------------------------------------------ control

    def reset(self) -> None:
        """Forget counters, injected faults, the responder and the request log."""
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0  # chat completion requests received
            self.served = 0  # answered 200 with a completion
            self.faults_served: Counter[str] = Counter()  # kind -> requests it was served to
            self.by_prompt: Counter[str] = Counter()  # last user message -> requests
            self.received: list[dict[str, Any]] = []  # request bodies, in arrival order
            self.auth_headers: list[str | None] = []
            self.arrivals: list[float] = []  # time.time() of each request
            self.in_flight = 0
            self.max_in_flight = 0
            self.responder: Responder = default_responder
            self._injections: deque[_Injection] = deque()
            self._marker_counts: Counter[str] = Counter()
            self._random = random.Random(0)

    def set_responder(self, fn: Responder | None) -> None:
        """fn(request_json) -> reply text, or a dict ({"content", "finish_reason", "prompt_tokens",
        "completion_tokens"} or a whole completion body with "choices"), or a Fault."""
        self.responder = fn or default_responder

    def set_latency(self, seconds: float) -> None:
        """Seconds every request waits before its answer."""
        self.latency = seconds

    def inject(
        self,
        kind: str,
        *,
        times: int | None = 1,
        match: str | None = None,
        retry_after: float | None = 0.05,
        retry_after_ms: float | None = None,
        delay: float = 30.0,
        message: str | None = None,
        probability: float = 1.0,
    ) -> None:
        """Serve fault `kind` to the next `times` requests (None: every one) whose messages contain
        `match` (any request when None), or to a random `probability` share of them (seeded, so a
        run is repeatable; `times` then counts the requests it was served to). For 429s,
        `retry_after` seconds is sent as `retry-after` and `retry_after_ms` as `retry-after-ms`
        (each only when not None). `message` replaces the error body's message."""
        fault = Fault(
            kind, retry_after=retry_after, retry_after_ms=retry_after_ms, delay=delay, message=message
        )
        with self._lock:
            self._injections.append(_Injection(fault, times, match, probability))

    def count(self, contains: str) -> int:
        """Requests received whose messages contain `contains`."""
        with self._lock:
            return sum(1 for r in self.received if contains in _all_text(r))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "served": self.served,
                "faults": dict(self.faults_served),
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
            }

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Bind (port 0 picks a free port) and serve on a daemon thread."""
        server = _Server((self.host, self.port), _Handler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; sleeping handlers wake up and give up."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; returns False when the server is stopping."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    # ------------------------------------------------------------------ request handling

    def _admit(self, body: dict[str, Any], auth: str | None) -> Fault | None:
        """Count the request and pick its fault (injected queue first, then a prompt marker)."""
        text = _all_text(body)
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.arrivals.append(time.time())
            self.by_prompt[last_user_text(body)] += 1
            if self.keep_log:
                self.received.append(body)
                self.auth_headers.append(auth)
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                return Fault("401")
            for inj in self._injections:
                if inj.match is None or inj.match in text:
                    if inj.probability < 1.0 and self._random.random() >= inj.probability:
                        continue
                    if inj.remaining is not None:
                        inj.remaining -= 1
                        if inj.remaining <= 0:
                            self._injections.remove(inj)
                    return inj.fault
            marker = _MARKER.search(text)
            if marker and marker.group(1) in FAULT_KINDS:
                key = last_user_text(body)
                self._marker_counts[key] += 1
                limit = marker.group(2)
                if limit is None or self._marker_counts[key] <= int(limit):
                    return Fault(marker.group(1), retry_after=0.05 if marker.group(1) == "429" else None)
        return None

    def _note_fault(self, kind: str) -> None:
        with self._lock:
            self.faults_served[kind] += 1

    def _done(self, fault: str | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if fault is None:
                self.served += 1

    def completion_body(self, body: dict[str, Any], reply: str | dict[str, Any]) -> dict[str, Any]:
        """A chat completion body for a responder's reply."""
        if isinstance(reply, dict) and "choices" in reply:
            return reply
        if isinstance(reply, str):
            reply = {"content": reply}
        content = reply.get("content", "")
        prompt_tokens = reply.get("prompt_tokens", max(1, len(_all_text(body).split())))
        completion_tokens = reply.get("completion_tokens", len(str(content or "").split()))
        return {
            "id": f"chatcmpl-fake-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.get("model", body.get("model", self.model)),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": reply.get("finish_reason", "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the bench opens 128+ connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or get killed reset their connections: expected here, not news.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


_STATUS_FAULTS = {
    "429": (429, "rate_limit_exceeded", "Rate limit reached (fake)."),
    "429_bare": (429, "rate_limit_exceeded", "Rate limit reached (fake), no retry header."),
    "quota": (429, "insufficient_quota", "You exceeded your current quota (fake)."),
    "400": (400, "invalid_request_error", "Bad request (fake)."),
    "401": (401, "invalid_api_key", "Incorrect API key provided (fake)."),
    "403": (403, "permission_denied", "Not allowed (fake)."),
    "404": (404, "model_not_found", "The model does not exist (fake)."),
    "422": (422, "unprocessable_entity", "Unprocessable (fake)."),
    "500": (500, "server_error", "Internal server error (fake)."),
    "503": (503, "overloaded", "Service unavailable (fake)."),
    "echo_key": (
        400,
        "invalid_request_error",
        "Invalid request (fake); headers received: Authorization: {auth}",
    ),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes; Nagle would hold the body ~40 ms per call
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake  # type: ignore[attr-defined]

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
        elif self.path.startswith("/_stats"):
            stats = fake.stats()
            if "arrivals" in self.path:
                with fake._lock:
                    stats["arrivals"] = list(fake.arrivals)
            self._send_json(200, stats)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        if self.path == "/_control":
            cmd = self._read_json()
            if cmd.get("reset"):
                fake.reset()
            if "latency" in cmd:
                fake.set_latency(float(cmd["latency"]))
            if cmd.get("inject"):
                fake.inject(**cmd["inject"])
            self._send_json(200, fake.stats())
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": "not_found"}})
            return
        try:
            body = self._read_json()
        except ValueError:
            self._send_json(
                400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}}
            )
            return
        auth = self.headers.get("Authorization")
        fault = fake._admit(body, auth)
        served_fault: str | None = None
        try:
            if not fake.sleep(fake.latency):
                self.close_connection = True
                served_fault = "stopped"
                return
            if fault is None:
                try:
                    reply = fake.responder(body)
                except Exception as exc:  # a broken responder is a 500, visible in the test
                    self._send_json(
                        500, {"error": {"message": f"responder raised {exc!r}", "type": "server_error"}}
                    )
                    served_fault = "responder_error"
                    fake._note_fault(served_fault)
                    return
                if isinstance(reply, Fault):
                    fault = reply
            if fault is not None:
                served_fault = fault.kind
                fake._note_fault(fault.kind)
                self._serve_fault(fault, body, auth)
                return
            self._send_json(200, fake.completion_body(body, reply))
        finally:
            fake._done(served_fault)

    def _serve_fault(self, fault: Fault, body: dict[str, Any], auth: str | None = None) -> None:
        fake = self.fake
        kind = fault.kind
        if kind in _STATUS_FAULTS:
            status, code, message = _STATUS_FAULTS[kind]
            message = (fault.message or message).replace("{auth}", auth or "")
            headers: dict[str, str] = {}
            if kind == "429":
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                if fault.retry_after_ms is not None:
                    headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            # Like OpenAI: `x-should-retry` is not sent, so the client decides on its own.
            self._send_json(
                status, {"error": {"message": message, "type": code, "code": code, "param": None}}, headers
            )
        elif kind == "slow":
            if fake.sleep(fault.delay):
                self._send_json(200, fake.completion_body(body, default_responder(body)))
        elif kind == "drop":
            self.close_connection = True  # close the socket without a response
        elif kind == "malformed":
            self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess')
        elif kind == "length":
            cut = {"content": "This answer was cut", "finish_reason": "length"}
            if isinstance(body.get("max_tokens"), int):
                cut["completion_tokens"] = body["max_tokens"]
            self._send_json(200, fake.completion_body(body, cut))
        elif kind == "context":
            self._send_json(
                200,
                fake.completion_body(
                    body,
                    {
                        "content": "This answer was cut",
                        "finish_reason": "length",
                        "prompt_tokens": 3315,
                        "completion_tokens": 781,
                    },
                ),
            )
        elif kind == "content_filter":
            self._send_json(
                200, fake.completion_body(body, {"content": "", "finish_reason": "content_filter"})
            )
        elif kind == "empty":
            full = fake.completion_body(body, "")
            full["choices"] = []
            self._send_json(200, full)
        elif kind == "empty_text":
            self._send_json(200, fake.completion_body(body, {"content": ""}))


def main(argv: list[str] | None = None) -> int:
    """Serve until killed; prints `READY <base_url>` once listening."""
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--no-log", action="store_true", help="do not keep request bodies")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(host=args.host, port=args.port, latency=args.latency, keep_log=not args.no_log).start()
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
