"""The teacher engine in batch mode: the same calls, sent as rounds of batch files at half the price.

    async with BatchEngine(config, journal_path=run_dir / "journal.sqlite", desc="hhh dialogues") as engine:
        result = await engine.complete(request)      # same interface and journal keys as TeacherEngine

Stages do not change: a dialogue is a coroutine that awaits one call after another and runs its
tools in between, whichever engine answers. `complete` answers from the journal when it can, else
queues the request and waits. A round closes when every caller waits on the engine (none runs a
tool; `batch_rounds.py`), and its files are submitted; the next round opens once they have all
ended, so a run takes as many rounds as its longest dialogue makes calls.

Submitting a file: its lines go into the journal, then the upload, the file id into the journal,
the batch, the batch id into the journal, each committed before the next step. A killed run, rerun,
polls the same batches (or creates the batch of an uploaded file after checking none was made from
it), so no line is submitted twice and nothing is paid twice.

Each output line settles through the code that settles online answers (`settle.py`): same journal
row, failure codes and cost fields, at the batch prices. Lines that failed for a reason a retry can
fix (5xx, 429, expired, cancelled, an enqueued-token limit) go into the next round, up to
`max_attempts` lines per request. A final failure settled while no stage waited for it (a killed
run, an import) is handed once to the next stage that asks, not paid again.

With `batch.transport: files` a closed round is written to `batches/<name>.jsonl` for a self-hosted
teacher (`vllm run-batch`) and the run stops with `BatchExported`; `batch_offline.import_output`
settles its output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.io import atomic_write
from datagen.teacher import batch_io as bio
from datagen.teacher.batch_rounds import BatchExported, InFlight, Pending, Rounds
from datagen.teacher.config import TeacherConfig
from datagen.teacher.failures import CallFailure
from datagen.teacher.journal import Journal
from datagen.teacher.limits import estimate_tokens
from datagen.teacher.progress import Progress
from datagen.teacher.settle import Answer, EngineCommon, Ledger, Paid, Prepared, failure_of, prepare
from datagen.teacher.stats import EngineStats
from datagen.teacher.types import Request, Result

__all__ = ["BatchEngine", "BatchExported"]

log = logging.getLogger("datagen.teacher")

_TICK_SECONDS = 0.5


class BatchEngine(EngineCommon):
    """TeacherEngine's interface (`complete`, `map`, `expect`, `stats`, `journal`, `summary`, `async
    with`) over rounds of batch files. Arguments as TeacherEngine's (without a journal, one lives
    in a temporary folder for the session).
    `rounds` and `files` count the rounds closed and the batch files sent by this session."""

    def __init__(
        self,
        config: TeacherConfig,
        *,
        journal_path: str | Path | None = None,
        progress: bool | None = None,
        desc: str = "",
        adopt: bool = True,
    ):
        if journal_path is None and config.batch.transport == "files":
            raise DatagenError(
                "exporting batch rounds needs a journal (journal_path): imports settle into it"
            )
        self._scratch = (
            None if journal_path is not None else tempfile.TemporaryDirectory(prefix="datagen-batch-")
        )
        if self._scratch is not None:  # batch ids must be kept somewhere: for this session only
            journal_path = Path(self._scratch.name) / "journal.sqlite"
            log.warning("%s: batch mode without a journal: a killed run cannot find its batches again", desc)
        self.config = config
        self.settings = config.batch
        self.journal_path = Path(journal_path)
        self.desc = desc or "teacher"
        self.stats = EngineStats(concurrency=config.concurrency)
        self.ledger = Ledger(config, self.stats, desc=self.desc, mode="batch")
        self.ledger.say = self.say
        self.summary: str | None = None
        self.files = 0
        self._show_progress = config.progress if progress is None else progress
        self._journal: Journal | None = None
        self._api: bio.BatchApi | None = None
        self._progress: Progress | None = None
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._rounds = Rounds(self.settings, self._wake)
        self._pending: dict[str, Pending] = {}  # by journal key
        self.lines: dict[str, Pending] = {}  # by custom_id, in flight
        self._batches: dict[str, InFlight] = {}
        self._lost: dict[str, CallFailure] = {}  # keys in batches given up on for now: never sent again
        self._fatal: dict[str | None, CallFailure] = {}
        self._next_number = 1
        self._ticked = 0.0
        self._closing = False
        self._stopped: BaseException | None = None
        self._adopt_open = adopt  # poll the batches an earlier run left in flight

    @property
    def rounds(self) -> int:
        """Rounds this session closed."""
        return self._rounds.closed

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> BatchEngine:
        httpx_log = logging.getLogger("httpx2")  # one INFO line per poll otherwise
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)
        self._journal = Journal(self.journal_path).open()
        self.ledger.journal = self._journal
        self._next_number = bio.next_batch_number(self._journal)
        if self._adopt_open:
            self._adopt()
        if self.settings.transport == "api":
            self._api = bio.BatchApi(self.config)
        self._progress = Progress(
            self.stats,
            enabled=self._show_progress,
            desc=self.desc,
            stall_seconds=max(self.config.stall_seconds, 24 * 3600),
        )
        self._driver = asyncio.create_task(self._drive(), name="datagen-batch-driver")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop polling (batches in flight stay in the journal for the next run), close the journal
        and print the summary."""
        if self._driver is not None:
            # A flag, not only cancel(): wait_for in Python 3.11 swallows a cancel that lands as the
            # event it waits on is set, and the driver would run on.
            self._closing = True
            self._wake.set()
            if not (await asyncio.wait({self._driver}, timeout=1.0))[0]:
                self._driver.cancel()  # mid-upload or mid-poll: the journal has what it needs
                await asyncio.wait({self._driver})
            self._driver = None
        if self._api is not None:
            await self._api.close()
            self._api = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._scratch is not None:
            self._scratch.cleanup()
        if self._progress is not None:
            self.summary = self._progress.close() + f"; {self.rounds} rounds, {self.files} batch files"
            self._progress = None
            if self.ledger.by_mode["online"] > 0:
                self.say(f"{self.desc}: {self.ledger.summary()}")

    # ------------------------------------------------------------------ public calls

    async def complete(self, request: Request) -> Result:
        """Make one call (or return it from the journal): queued for the next round, awaited."""
        if self._journal is None:
            raise DatagenError("BatchEngine is not open: use `async with BatchEngine(...) as engine`")
        if self._stopped is not None:
            raise self._stopped
        prep = prepare(self.config, request)
        self.stats.submitted += 1
        entry = self._journal.get_ok(prep.key)
        if entry is not None:
            return self._count(self.ledger.from_journal(entry, request))
        p = self._pending.get(prep.key)
        if p is None:
            if (failed := self._undelivered(prep.key, request)) is not None:
                return self._count(failed)
            if (lost := self._lost.get(prep.key)) is not None:
                return self._count(_unjournaled(prep, request, lost))
            if (fatal := self._fatal_for(prep.model)) is not None:
                failure = CallFailure(fatal.code, f"not sent: an earlier call failed with {fatal.detail}")
                return self._count(
                    await self.ledger.failure(prep, request, failure, Paid(), time.monotonic())
                )
            p = self._pending[prep.key] = self._new_pending(prep, request)
            self._rounds.add(p)
        owner = p.owners == 0
        p.owners += 1
        task = asyncio.current_task()
        self._rounds.waits(task)
        try:
            result = await asyncio.shield(p.fut)
        finally:
            self._rounds.resumes(task)
        shared = {} if owner else {"cached": True, "attempts": 0}  # another caller's line: nothing paid
        return self._count(replace(result, tag=request.tag, **shared))

    async def map(
        self, requests: Iterable[Request] | AsyncIterable[Request], *, window: int | None = None
    ) -> AsyncIterator[Result]:
        """As TeacherEngine.map; the window defaults to one round's worth (`batch.max_lines`, or
        `concurrency` when that is larger): in batch mode requests wait in files, not sockets."""
        from datagen.teacher.engine import map_requests

        results = map_requests(
            self, requests, window or max(self.config.concurrency, self.settings.max_lines)
        )
        try:
            async for result in results:
                yield result
        finally:
            await results.aclose()

    def _new_pending(self, prep: Prepared, request: Request) -> Pending:
        size = len(bio.input_line(bio.custom_id("b000000", prep.key), prep.body(request)))
        return Pending(
            prep=prep,
            request=request,
            fut=asyncio.get_running_loop().create_future(),
            est_prompt=estimate_tokens(request.messages),
            size=size,
        )

    def _undelivered(self, key: str, request: Request) -> Result | None:
        """A final failure settled while no stage waited: handed over once, not asked again."""
        assert self._journal is not None
        cid = bio.undelivered_failure(self._journal, key)
        if cid is None:
            return None
        entry = self._journal.get(key)
        self._journal.put_statements(bio.mark_delivered(cid))
        return failure_of(entry, request) if entry is not None and entry.status == "failed" else None

    def _fatal_for(self, model: str) -> CallFailure | None:
        return self._fatal.get(None) or self._fatal.get(model)

    # ------------------------------------------------------------------ the round driver

    async def _drive(self) -> None:
        try:
            while self._stopped is None and not self._closing:
                self._wake.clear()
                for b in list(self._batches.values()):
                    if b.next_poll <= time.monotonic():
                        await self._advance(b)
                if self._stopped is not None:
                    return
                if self._rounds.queue and self._rounds.full():
                    await self._submit(self._rounds.take(full=True), self._rounds.open)
                elif self._rounds.may_close(time.monotonic(), list(self._batches.values())):
                    await self._close_round()
                now = time.monotonic()
                if self._progress is not None and now - self._ticked >= _TICK_SECONDS:
                    self._ticked = now  # the bar and the stall watchdog, twice a second
                    self._progress.tick()
                times = [now + _TICK_SECONDS] + [b.next_poll for b in self._batches.values()]
                if (check := self._rounds.next_check(now)) is not None:
                    times.append(check)
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.001, min(times) - now))
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a journal or programming error: no stage may hang on it
            log.error("%s: batch driver stopped: %s: %s", self.desc, type(exc).__name__, exc)
            self._stop(
                exc if isinstance(exc, DatagenError) else DatagenError(f"batch driver failed: {exc!r}")
            )

    async def _close_round(self) -> None:
        number, chunks = self._rounds.close()
        self.say(
            f"{self.desc}: round {number}: {sum(map(len, chunks))} requests in {len(chunks)} batch file(s)"
        )
        for chunk in chunks:
            await self._submit(chunk, number)
        if self.settings.transport == "files":  # the round's files, those a full queue wrote early too
            written = [b.path for b in self._batches.values() if b.path is not None]
            n = sum(len(b.lines) for b in self._batches.values())
            self._stop(
                BatchExported(
                    f"round {number}: {n} requests written to {', '.join(map(str, written))}; run them on the "
                    f"teacher (vllm run-batch -i FILE -o OUTPUT --model {self.config.model}), settle them with "
                    f"`datagen batch import {self.journal_path.parent} OUTPUT`, then run again for the next round",
                    written,
                )
            )

    async def _submit(self, chunk: list[Pending], round_no: int) -> None:
        """Journal a batch file's lines, then write it (files) or upload it and create its batch."""
        assert self._journal is not None
        name = f"b{self._next_number:06d}"
        self._next_number += 1
        self.files += 1
        cids = [bio.custom_id(name, p.prep.key) for p in chunk]
        data = b"".join(
            bio.input_line(cid, p.prep.body(p.request)) for cid, p in zip(cids, chunk, strict=True)
        )
        for cid, p in zip(cids, chunk, strict=True):
            self.lines[cid] = p
            p.paid.attempts += 1
        transport = self.settings.transport
        await self._journal.execute(
            bio.insert_batch(name, round_no, chunk[0].prep.model, transport, len(chunk), len(data)),
            *(
                bio.insert_line(cid, p.prep.key, name, p.prep.canonical, p.request.require_complete)
                for cid, p in zip(cids, chunk, strict=True)
            ),
        )
        self.stats.sent += len(chunk)
        self.stats.in_flight += len(chunk)
        b = self._batches[name] = InFlight(name=name, round=round_no, lines=cids)
        if transport == "files":
            path = Path(self.settings.export_dir or self.journal_path.parent / "batches") / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as fh:
                fh.write(data)
            await self._journal.execute(bio.update_batch(name, status="exported", path=str(path)))
            b.status, b.next_poll, b.path = "exported", float("inf"), path
            return
        assert self._api is not None
        try:
            b.file_id = await self._api.upload(name, data)
        except CallFailure as failure:
            await self._abandon(b, failure)
            return
        await self._journal.execute(bio.update_batch(name, status="uploaded", file_id=b.file_id))
        b.status = "uploaded"
        await self._create(b)

    async def _create(self, b: InFlight) -> None:
        assert self._api is not None and self._journal is not None and b.file_id is not None
        try:
            batch = await self._api.create(b.file_id, b.name)
        except CallFailure as failure:
            await self._abandon(b, failure)
            return
        b.batch_id, b.status = batch.id, batch.status
        await self._journal.execute(bio.update_batch(b.name, batch_id=batch.id, status=batch.status))
        b.interval = self.settings.poll_interval
        b.next_poll = time.monotonic() + b.interval
        self.say(f"{self.desc}: batch {b.name} ({b.batch_id}): {len(b.lines)} lines submitted")

    async def _advance(self, b: InFlight) -> None:
        """Poll a batch (or create it, when a killed run uploaded its file only); collect it when done."""
        assert self._api is not None and self._journal is not None
        try:
            if b.batch_id is None:
                found = await self._api.find(b.file_id) if b.file_id else None
                if found is None:
                    await self._create(b)
                    return
                b.batch_id, b.status = found.id, found.status
                await self._journal.execute(bio.update_batch(b.name, batch_id=found.id, status=found.status))
            batch = await self._api.retrieve(b.batch_id)
            if batch.status in bio.TERMINAL:
                await self._collect(b, batch)
                return
        except CallFailure as failure:
            b.failures += 1
            if failure.retryable and b.failures < self.settings.poll_failures:
                b.next_poll = time.monotonic() + min(
                    self.settings.poll_interval * 2 ** min(b.failures, 16), self.settings.max_poll_interval
                )
                log.info("%s: polling %s failed (%s); trying again", self.desc, b.name, failure)
            else:
                self._lose(b, failure)
            return
        b.failures = 0
        if batch.status != b.status:
            b.status = batch.status
            self._journal.put_statements(bio.update_batch(b.name, status=batch.status, counts=_counts(batch)))
        b.interval = min(max(b.interval, self.settings.poll_interval) * 1.5, self.settings.max_poll_interval)
        b.next_poll = time.monotonic() + b.interval

    async def _collect(self, b: InFlight, batch: Any) -> None:
        """Download a finished batch's files and settle every line it holds."""
        assert self._api is not None and self._journal is not None
        outputs: dict[str, dict[str, Any]] = {}
        for fid in (batch.output_file_id, batch.error_file_id):
            if fid:
                outputs.update(
                    bio.parse_output((await self._api.download(fid)).splitlines(), f"{b.name} ({fid})")
                )
        whole, by_line = bio.batch_failure(batch.errors) if batch.status == "failed" else (None, {})
        outcomes: list[tuple[str, Answer | CallFailure]] = []
        for n, cid in enumerate(b.lines, 1):
            obj = outputs.get(cid)
            outcomes.append(
                (
                    cid,
                    self.outcome(self.lines[cid], obj)
                    if obj is not None
                    else by_line.get(n) or whole or bio.missing_failure(batch.status),
                )
            )
        await asyncio.gather(*(self.settle(cid, outcome) for cid, outcome in outcomes))
        await self._journal.execute(
            bio.update_batch(
                b.name,
                status=batch.status,
                settled=1,
                counts=_counts(batch),
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
            )
        )
        self._batches.pop(b.name, None)
        ok = sum(isinstance(o, Answer) for _, o in outcomes)
        self.say(
            f"{self.desc}: batch {b.name} ({b.batch_id}) {batch.status}: {len(outcomes)} lines, {ok} answered"
        )
        self._wake.set()

    @staticmethod
    def outcome(p: Pending, obj: dict[str, Any]) -> Answer | CallFailure:
        """What output line `obj` says about `p`'s request."""
        return bio.line_outcome(
            obj,
            require_complete=p.request.require_complete,
            est_prompt=p.est_prompt,
            max_tokens=p.prep.params.get("max_tokens"),
        )

    async def settle(self, cid: str, outcome: Answer | CallFailure) -> None:
        """Settle line `cid` (in flight, or `reopen`ed and put in `lines`): journal it as an
        online call would be, or send it again."""
        assert self._journal is not None
        p = self.lines.pop(cid)
        self.stats.in_flight -= 1
        if isinstance(outcome, Answer):
            p.paid.add(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens)
            self._resolve(
                p,
                await self.ledger.ok(
                    p.prep, p.request, outcome, p.paid, p.started, bio.settle_line(cid, "ok")
                ),
            )
            return
        failure, model = outcome, p.prep.model
        p.paid.add(failure.prompt_tokens, failure.completion_tokens)
        if failure.fatal and self._fatal_for(model) is None:
            await self._set_fatal(model, failure)
        attempts = p.paid.attempts
        if not p.owners:  # settled for a later asker: count the tries earlier runs journaled
            earlier = self._journal.get(p.prep.key)
            attempts += earlier.attempts if earlier is not None and earlier.status == "failed" else 0
        again = failure.retryable and self._fatal_for(model) is None and attempts < self.config.max_attempts
        if again and p.owners:
            self.stats.retries += 1
            self.stats.last_error = f"{failure.code}: {failure.detail}"
            await self._journal.execute(bio.settle_line(cid, failure.code))
            if failure.code == "rate_limited":
                wait = (
                    failure.retry_after
                    if failure.retry_after is not None
                    else self.config.min_backoff * 2**attempts
                )
                self._rounds.not_before = max(
                    self._rounds.not_before, time.monotonic() + min(wait, self.config.max_backoff)
                )
            self._rounds.add(p)
            return
        # A final failure nobody waits for is handed to the next asker (`_undelivered`).
        self._resolve(
            p,
            await self.ledger.failure(
                p.prep,
                p.request,
                failure,
                p.paid,
                p.started,
                bio.settle_line(cid, failure.code, delivered=again or bool(p.owners)),
            ),
        )

    def _resolve(self, p: Pending, result: Result) -> None:
        self._pending.pop(p.prep.key, None)
        if not p.fut.done():
            p.fut.set_result(result)

    async def _set_fatal(self, model: str, failure: CallFailure) -> None:
        """An account- or model-wide failure: nothing more is sent; queued calls fail with it."""
        self._fatal[model if failure.code == "not_found" else None] = failure
        log.error(
            "%s: %s; sending nothing more%s",
            self.desc,
            failure,
            f" for model {model}" if failure.code == "not_found" else "",
        )
        queued, self._rounds.queue = self._rounds.queue, []
        self._rounds.queued_bytes = 0
        not_sent = CallFailure(failure.code, f"not sent: an earlier call failed with {failure.detail}")
        for p in queued:
            if self._fatal_for(p.prep.model) is None:
                self._rounds.add(p)
            else:
                self._resolve(p, await self.ledger.failure(p.prep, p.request, not_sent, p.paid, p.started))

    async def _abandon(self, b: InFlight, failure: CallFailure) -> None:
        """A file that could not be uploaded or made a batch: nothing of it was submitted."""
        log.error("%s: batch %s not submitted: %s", self.desc, b.name, failure)
        await self._journal.execute(
            bio.update_batch(  # type: ignore[union-attr]
                b.name, status="not_submitted", settled=1, error=f"{failure.code}: {failure.detail}"
            )
        )
        await asyncio.gather(*(self.settle(cid, failure) for cid in list(b.lines)))
        self._batches.pop(b.name, None)

    def _lose(self, b: InFlight, failure: CallFailure) -> None:
        """Polling gave up for now: the batch stays in the journal (a rerun polls it again) and its
        requests fail as `failure` for this run, never sent again by it."""
        log.error(
            "%s: gave up polling batch %s (%s) for now: %s; rerun to collect it",
            self.desc,
            b.name,
            b.batch_id,
            failure,
        )
        self._batches.pop(b.name, None)
        for cid in b.lines:
            p = self.lines.pop(cid)
            self.stats.in_flight -= 1
            self._lost[p.prep.key] = failure
            self._resolve(p, _unjournaled(p.prep, p.request, failure))

    def _stop(self, exc: BaseException) -> None:
        """Every waiting call raises `exc`; later calls too."""
        self._stopped = exc
        if isinstance(exc, BatchExported):
            self._rounds.quiet()
        for p in list(self._pending.values()):
            if p.fut.done():
                continue
            if p.owners:
                p.fut.set_exception(exc)
            else:
                p.fut.cancel()

    # ------------------------------------------------------------------ resuming

    def _adopt(self) -> None:
        """Batches a killed run left unsettled: poll them again (their lines answer the same keys)."""
        assert self._journal is not None
        now = time.monotonic()
        for row in bio.open_batches(self._journal):
            if (
                row["transport"] == "files"
                and row["status"] == "exported"
                and self.settings.transport == "files"
            ):
                raise DatagenError(
                    f"round file {row['path']} ({row['lines']} requests) was exported and its results not "
                    f"imported yet: run it on the teacher and `datagen batch import {self.journal_path.parent} "
                    "OUTPUT.jsonl` first"
                )
            if row["transport"] == "files" or not row["file_id"]:
                # Never uploaded, or written for another teacher: nothing there to poll; ask anew.
                self._journal.put_statements(*bio.abandon_batch(row["name"]))
                continue
            b = InFlight(
                name=row["name"],
                round=0,
                lines=[],
                status=row["status"],
                file_id=row["file_id"],
                batch_id=row["batch_id"],
                next_poll=now,
                interval=self.settings.poll_interval,
            )
            for line in bio.open_lines(self._journal, row["name"]):
                if (p := self.reopen(line)) is not None:
                    b.lines.append(line["custom_id"])
                    self.lines[line["custom_id"]] = p
            self._batches[b.name] = b
            self.stats.in_flight += len(b.lines)
            self.say(f"{self.desc}: resuming batch {b.name} ({b.batch_id}): {len(b.lines)} lines in flight")

    def reopen(self, line: Any) -> Pending | None:
        """The pending call of a journaled batch line (None when its key is pending already), for
        `settle`."""
        canonical = json.loads(line["request"])
        if line["key"] in self._pending:
            return None
        request = Request(
            messages=canonical["messages"],
            params=canonical["params"],
            model=canonical["model"],
            template_version=canonical.get("template_version", ""),
            require_complete=bool(line["require_complete"]),
            sample=canonical.get("sample", 0),
        )
        prep = Prepared(
            model=canonical["model"], params=canonical["params"], canonical=canonical, key=line["key"]
        )
        p = self._pending[prep.key] = self._new_pending(prep, request)
        p.paid.attempts = 1  # the line an earlier run (or the exporter) sent
        return p


def _counts(batch: Any) -> dict[str, int] | None:
    return batch.request_counts.model_dump() if getattr(batch, "request_counts", None) is not None else None


def _unjournaled(prep: Prepared, request: Request, failure: CallFailure) -> Result:
    return Result(
        key=prep.key, ok=False, model=prep.model, error=failure.code, detail=failure.detail, tag=request.tag
    )
