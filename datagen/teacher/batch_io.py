"""Batch files and where they go: the JSONL lines, reading answers back, the journal's batch tables,
and the provider's Files and Batches API.

An input line is exactly what OpenAI's Batch API and `vllm run-batch` read:

    {"custom_id": "b000003-3f2a...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

where `body` is the online request body. A custom_id is the batch file's local name and 40 hex
digits of the journal key, so it is unique across every file a journal has ever submitted: a line
sent again after a failure goes out under a new custom_id, and no custom_id is ever sent twice.

Output lines come in any order, from the output file and the error file (OpenAI), or all in one
file (vLLM): `{"custom_id", "response": {"status_code", "body"}, "error"}`; old vLLM versions put
the completion itself in `response`. `line_outcome` reads every shape into the same Answer or
CallFailure an online call would have given.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import openai
import tenacity

from datagen.errors import InputError
from datagen.teacher.config import TeacherConfig
from datagen.teacher.failures import CallFailure, classify, classify_status
from datagen.teacher.journal import Journal, Statement, dumps
from datagen.teacher.settle import Answer, parse_completion

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Whole-batch validation errors that pass once other batches have finished (enqueued-token limits).
_RETRYABLE_BATCH_ERRORS = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "server_error"})
#: Line errors that mean the request never ran.
_NOT_RUN = {"batch_expired": "batch_expired", "batch_cancelled": "batch_cancelled"}


def custom_id(batch_name: str, key: str) -> str:
    """The custom_id of a journal key's line in batch file `batch_name` (at most 48 characters)."""
    return f"{batch_name}-{key[:40]}"


def input_line(cid: str, body: dict[str, Any]) -> bytes:
    """One line of a batch input file."""
    line = {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def prefix_order(messages: Any) -> str:
    """A sort key that puts requests sharing a prefix (system prompt, earlier turns) next to each
    other, so the provider's prompt cache sees them together."""
    return json.dumps(messages, ensure_ascii=False, separators=(",", ":"))


def parse_output(lines: Iterable[str], source: str) -> dict[str, dict[str, Any]]:
    """Output lines by custom_id. A line that is not a JSON object with a custom_id raises
    InputError naming `source` and the line."""
    out: dict[str, dict[str, Any]] = {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"not JSON ({exc})", path=source, line=n) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
            raise InputError(
                "not a batch output line (a JSON object with a custom_id)",
                path=source,
                line=n,
                field="custom_id",
            )
        out[obj["custom_id"]] = obj
    return out


def line_outcome(
    obj: dict[str, Any], *, require_complete: bool, est_prompt: int, max_tokens: Any
) -> Answer | CallFailure:
    """What one output line says about its request: the Answer, or the CallFailure an online
    call with the same answer would have got."""
    response, error = obj.get("response"), obj.get("error")
    status, body = None, None
    if isinstance(response, dict):
        if "status_code" in response or "body" in response:
            status, body = response.get("status_code"), response.get("body")
        else:  # vLLM before the status_code/body wrapper: the completion itself
            status, body = 200, response
    if status == 200 and isinstance(body, dict):
        try:
            return parse_completion(
                body, require_complete=require_complete, est_prompt=est_prompt, max_tokens=max_tokens
            )
        except CallFailure as failure:
            return failure
    message, code = _error_text(body, error)
    if isinstance(status, int) and status != 200:
        return classify_status(status, message, quota=code == "insufficient_quota")
    if code in _NOT_RUN:
        return CallFailure(_NOT_RUN[code], message)
    if status == 200:
        return CallFailure("invalid_response", f"status 200 without a completion body: {str(body)[:200]}")
    return CallFailure("server_error", f"the line failed{f' ({code})' if code else ''}: {message}")


def _error_text(body: Any, error: Any) -> tuple[str, str | None]:
    """(message, code) from an error body or a line's `error` (an object, or vLLM's string)."""
    for item in (body, error):
        if isinstance(item, dict) and isinstance(item.get("error"), dict):
            item = item["error"]
        if isinstance(item, dict) and (item.get("message") or item.get("code")):
            return str(item.get("message") or item.get("code"))[:500], item.get("code")
        if isinstance(item, str) and item:
            return item[:500], None
    return "no error message", None


def missing_failure(status: str) -> CallFailure:
    """The failure of a line absent from a finished batch's files."""
    if status == "expired":
        return CallFailure("batch_expired", "not run within the batch's completion window")
    if status == "cancelled":
        return CallFailure("batch_cancelled", "not run: the batch was cancelled")
    return CallFailure("server_error", f"missing from the output and error files of a {status} batch")


def batch_failure(errors: Any) -> tuple[CallFailure, dict[int, CallFailure]]:
    """A batch that failed validation: the failure of its lines, and of the lines the errors name
    (1-based line numbers). An enqueued-token limit passes later: its lines are sent again."""
    data = getattr(errors, "data", None) or (errors.get("data") if isinstance(errors, dict) else None) or []
    by_line: dict[int, CallFailure] = {}
    first: tuple[str, str] | None = None
    for err in data:
        get = err.get if isinstance(err, dict) else (lambda k, e=err: getattr(e, k, None))
        code, message, line = get("code") or "invalid_batch", get("message") or "", get("line")
        if isinstance(line, int):
            by_line[line] = CallFailure("bad_request", f"batch validation: {code}: {message}")
        elif first is None:
            first = (code, message)
    code, message = first or ("invalid_batch", "one of its lines was refused")
    kind = "rate_limited" if code in _RETRYABLE_BATCH_ERRORS else "bad_request"
    if by_line and first is None:  # only some lines were bad: the others may go again
        kind = "server_error"
    return CallFailure(kind, f"the batch failed validation: {code}: {message}"), by_line


# --------------------------------------------------------------------------- the journal's batch tables


def insert_batch(
    name: str, round_no: int, model: str | None, transport: str, lines: int, size: int
) -> Statement:
    now = time.time()
    return (
        "INSERT INTO batches (name, round, model, transport, status, lines, bytes, created, updated) "
        "VALUES (?, ?, ?, ?, 'writing', ?, ?, ?, ?)",
        (name, round_no, model, transport, lines, size, now, now),
    )


_BATCH_FIELDS = frozenset(
    {"status", "settled", "file_id", "batch_id", "output_file_id", "error_file_id", "counts", "path", "error"}
)


def update_batch(name: str, **fields: Any) -> Statement:
    """Set fields of a batch row (`counts` may be a dict: it is stored as JSON)."""
    assert set(fields) <= _BATCH_FIELDS, fields
    if isinstance(fields.get("counts"), dict):
        fields["counts"] = dumps(fields["counts"])
    names = sorted(fields)
    sql = f"UPDATE batches SET {', '.join(f'{n} = ?' for n in names)}, updated = ? WHERE name = ?"
    return sql, (*(fields[n] for n in names), time.time(), name)


def insert_line(
    cid: str, key: str, batch: str, canonical: dict[str, Any], require_complete: bool
) -> Statement:
    return (
        "INSERT INTO batch_lines (custom_id, key, batch, request, require_complete) VALUES (?, ?, ?, ?, ?)",
        (cid, key, batch, dumps(canonical), int(require_complete)),
    )


def settle_line(cid: str, outcome: str, *, delivered: bool = True) -> Statement:
    """Mark a line settled with `outcome` (`ok` or an error code). `delivered=False`: a final
    failure no stage has been handed yet (the next stage to ask gets it instead of paying again)."""
    return (
        "UPDATE batch_lines SET settled = 1, outcome = ?, delivered = ? WHERE custom_id = ?",
        (outcome, int(delivered), cid),
    )


def abandon_batch(name: str) -> list[Statement]:
    """A batch whose lines were never submitted (or were written for another teacher): settled,
    its lines marked `abandoned`, so their requests are asked anew."""
    return [
        update_batch(name, status="abandoned", settled=1),
        (
            "UPDATE batch_lines SET settled = 1, outcome = 'abandoned' WHERE batch = ? AND settled = 0",
            (name,),
        ),
    ]


def mark_delivered(cid: str) -> Statement:
    return "UPDATE batch_lines SET delivered = 1 WHERE custom_id = ?", (cid,)


def open_batches(journal: Journal) -> list[sqlite3.Row]:
    """Batches not settled yet, oldest first."""
    return journal.query("SELECT * FROM batches WHERE settled = 0 ORDER BY name")


def all_batches(journal: Journal) -> list[sqlite3.Row]:
    return journal.query("SELECT * FROM batches ORDER BY name")


def open_lines(journal: Journal, batch: str) -> list[sqlite3.Row]:
    return journal.query("SELECT * FROM batch_lines WHERE batch = ? AND settled = 0 ORDER BY rowid", (batch,))


def lines_by_id(journal: Journal, ids: Iterable[str]) -> dict[str, sqlite3.Row]:
    """Rows of these custom_ids (settled or not)."""
    out: dict[str, sqlite3.Row] = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        for row in journal.query(f"SELECT * FROM batch_lines WHERE custom_id IN ({marks})", tuple(chunk)):
            out[row["custom_id"]] = row
    return out


def undelivered_failure(journal: Journal, key: str) -> str | None:
    """The custom_id of a final failure of `key` no stage has been handed, if any."""
    rows = journal.query(
        "SELECT custom_id FROM batch_lines WHERE key = ? AND settled = 1 AND delivered = 0 "
        "ORDER BY rowid DESC LIMIT 1",
        (key,),
    )
    return rows[0][0] if rows else None


def line_counts(journal: Journal) -> dict[str, dict[str, int]]:
    """Per batch: lines settled ok, settled failed and still open."""
    out: dict[str, dict[str, int]] = {}
    for name, ok, failed, open_ in journal.query(
        "SELECT batch, sum(outcome = 'ok'), sum(settled = 1 AND outcome != 'ok'), sum(settled = 0) "
        "FROM batch_lines GROUP BY batch"
    ):
        out[name] = {"ok": ok or 0, "failed": failed or 0, "open": open_ or 0}
    return out


def next_batch_number(journal: Journal) -> int:
    rows = journal.query("SELECT max(CAST(substr(name, 2) AS INTEGER)) FROM batches")
    return (rows[0][0] or 0) + 1


# --------------------------------------------------------------------------- the provider's API


class BatchApi:
    """The Files and Batches endpoints through the openai client (its own retries off: these are
    retried here, the create call only after checking that no batch was made from the file)."""

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url, api_key=config.api_key(), max_retries=0, timeout=config.timeout
        )
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=max(config.min_backoff, 1e-3), max=config.max_backoff, jitter=config.min_backoff
        )

    async def close(self) -> None:
        await self.client.close()

    def wait(self, tries: int, failure: CallFailure | None = None) -> float:
        """Seconds before try `tries + 1`: the server's retry-after, else jittered back-off."""
        if failure is not None and failure.retry_after is not None:
            return min(failure.retry_after, self.config.max_retry_after)
        return self._backoff(_Attempt(tries))  # type: ignore[arg-type]

    async def _retry(self, what: str, fn: Any, *, before_retry: Any = None) -> Any:
        tries = 0
        while True:
            tries += 1
            try:
                return await fn()
            except openai.APIError as exc:
                failure = classify(exc)
            if not failure.retryable or tries >= self.config.max_attempts:
                raise CallFailure(failure.code, f"{what}: {failure.detail}", retry_after=failure.retry_after)
            await asyncio.sleep(self.wait(tries, failure))
            if before_retry is not None and (found := await before_retry()) is not None:
                return found

    async def upload(self, name: str, data: bytes) -> str:
        """Upload a batch input file; its file id."""
        f = await self._retry(
            f"uploading {name}",
            lambda: self.client.files.create(
                file=(f"{name}.jsonl", data, "application/jsonl"), purpose="batch"
            ),
        )
        return f.id

    async def create(self, file_id: str, name: str) -> Any:
        """Create the batch of an uploaded file (or find the one a lost answer already created)."""
        settings = self.config.batch
        return await self._retry(
            f"creating the batch of {name}",
            lambda: self.client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window=settings.completion_window,  # type: ignore[arg-type]
                metadata={"datagen_batch": name},
            ),
            before_retry=lambda: self.find(file_id),
        )

    async def find(self, file_id: str, scan: int = 1000) -> Any:
        """The batch made from `file_id` among the newest `scan` batches, or None."""
        seen = 0
        async for b in self.client.batches.list(limit=100):
            if b.input_file_id == file_id:
                return b
            seen += 1
            if seen >= scan:
                break
        return None

    async def retrieve(self, batch_id: str) -> Any:
        try:
            return await self.client.batches.retrieve(batch_id)
        except openai.APIError as exc:
            raise classify(exc) from None

    async def download(self, file_id: str) -> str:
        try:
            return (await self.client.files.content(file_id)).text
        except openai.APIError as exc:
            raise classify(exc) from None

    async def cancel(self, batch_id: str) -> Any:
        """Ask to cancel; a batch that already ended answers 409 (returned as the CallFailure)."""
        try:
            return await self.client.batches.cancel(batch_id)
        except openai.APIError as exc:
            return classify(exc)


class _Attempt:
    """The one field tenacity's wait strategies read from a retry state."""

    def __init__(self, attempt_number: int):
        self.attempt_number = attempt_number
