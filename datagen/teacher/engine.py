"""The teacher engine: every paid call datagen makes goes through here.

    async with TeacherEngine(config, journal_path=run_dir / "journal.sqlite", desc="expand") as engine:
        result = await engine.complete(Request(messages=[{"role": "user", "content": "Hi"}]))
        async for result in engine.map(requests):      # as they finish, any order
            handle(result.tag, result)

Each request is keyed by the hash of its canonical form (`journal.request_key`). Before paying,
the engine looks the key up in the journal: a finished call is returned as `cached=True` with no
HTTP; a call already in flight with the same key is awaited rather than sent twice. A new call
goes through, in order: a concurrency slot (adaptive: halves when most recent answers are 429s,
grows back on success), a global pause while the server is overloaded and its `retry-after` runs,
the RPM and TPM windows, then one HTTP request with the openai client (`AsyncOpenAI`, its own
retries off). Failures are classified (`failures.py`) and retried by a tenacity policy with
jittered exponential back-off that honours `retry-after` (a 429's wait delays the request that
got it; the others go on unless most answers are 429s); a request
that cannot succeed ends in the journal's failure ledger and comes back as `ok=False` with the
reason, never as empty text. A call keeps its concurrency slot until its journal row is
committed, so a killed process re-pays at most `concurrency` calls.

Only programming errors raise: an API failure is a Result.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import tenacity

from datagen.errors import DatagenError
from datagen.teacher.config import TeacherConfig
from datagen.teacher.failures import CallFailure, classify
from datagen.teacher.journal import Journal
from datagen.teacher.limiters import Limiters, RateWindow
from datagen.teacher.limits import estimate_tokens
from datagen.teacher.progress import Progress
from datagen.teacher.settle import (
    Answer,
    EngineCommon,
    Ledger,
    Paid,
    Prepared,
    cut_detail,
    parse_completion,
    prepare,
)
from datagen.teacher.stats import EngineStats
from datagen.teacher.types import Request, Result

__all__ = [
    "EngineStats",
    "TeacherEngine",
    "cut_detail",
    "engine_factory",
    "map_requests",
    "open_engine",
    "run_requests",
]

log = logging.getLogger("datagen.teacher")

_TICK_SECONDS = 0.5
_POST_OPTIONS: Any = {"security": {"bearer_auth": True}}

#: The rate-window reservations of the request the current task is sending (see `_on_send`).
_RESERVATIONS: contextvars.ContextVar[list[tuple[RateWindow, Any]] | None] = contextvars.ContextVar(
    "datagen_teacher_reservations", default=None
)


class TeacherEngine(EngineCommon):
    """Makes teacher calls with limits, retries, a journal and progress. Use as `async with`.

    Args:
        config: the endpoint, limits and prices.
        journal_path: the SQLite journal (created if missing). Without it nothing is cached or
            resumable, which suits only tests and throwaway runs.
        progress: show the progress bar (default: `config.progress`; never when stderr is not a
            terminal).
        desc: the bar's label and the summary's prefix (e.g. the stage name).
        journal: an unopened journal to use instead of `journal_path`'s (e.g. a cluster worker's
            `journal_merge.ShardJournal`); the engine opens it on entry and closes it on exit.
        limiters: the concurrency and RPM/TPM windows to send through (default:
            `Limiters.local(config)`, this engine's own); e.g. the cluster's shared ones.

    With `config.mode == "batch"` the constructor returns a `datagen.teacher.batch.BatchEngine`
    (the same interface), so a config that asks for batch mode never pays online prices, whichever
    stage opens the engine. `journal` and `limiters` are the online engine's alone.
    """

    def __new__(cls, config: TeacherConfig, **kwargs: Any) -> Any:
        if cls is TeacherEngine and getattr(config, "mode", "online") == "batch":
            from datagen.teacher.batch import BatchEngine

            return BatchEngine(config, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        config: TeacherConfig,
        *,
        journal_path: str | Path | None = None,
        progress: bool | None = None,
        desc: str = "",
        journal: Journal | None = None,
        limiters: Limiters | None = None,
    ):
        if journal is not None and journal_path is not None:
            raise TypeError("TeacherEngine: give journal or journal_path, not both")
        self.config = config
        if journal is not None:
            journal_path = journal.path
        self.journal_path = Path(journal_path) if journal_path is not None else None
        self.desc = desc or "teacher"
        self.stats = EngineStats(concurrency=config.concurrency)
        self.summary: str | None = None
        self._show_progress = config.progress if progress is None else progress
        self._given_journal = journal
        self._journal: Journal | None = None
        self._client: openai.AsyncOpenAI | None = None
        self.limiters = limiters if limiters is not None else Limiters.local(config)
        self._slots = self.limiters.concurrency
        self._rpm = self.limiters.rpm
        self._tpm = self.limiters.tpm
        self._pause_until = 0.0
        self._inflight: dict[str, asyncio.Future[Result]] = {}
        self._fatal: dict[str | None, CallFailure] = {}  # None: the whole endpoint; else per model
        self.ledger = Ledger(config, self.stats, desc=self.desc, mode="online")
        self.ledger.say = self.say
        self._completion_avg = 256.0
        self._progress: Progress | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=max(config.min_backoff, 1e-3), max=config.max_backoff, jitter=config.min_backoff
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TeacherEngine:
        cfg = self.config
        # httpx logs every request at INFO: a million lines in a big run. Quiet it unless the
        # user configured that logger themselves.
        httpx_log = logging.getLogger("httpx2")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)
        if self._given_journal is not None:
            self._journal = self._given_journal.open()
        elif self.journal_path is not None:
            self._journal = Journal(self.journal_path).open()
        self.ledger.journal = self._journal
        limits = httpx2.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency)
        hooks = {"request": [self._on_send]} if (self._rpm or self._tpm) else {}
        self._client = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=cfg.api_key(),
            max_retries=0,
            timeout=cfg.timeout,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=cfg.timeout, event_hooks=hooks),
        )
        self._progress = Progress(
            self.stats, enabled=self._show_progress, desc=self.desc, stall_seconds=cfg.stall_seconds
        )
        self._ticker = asyncio.create_task(self._tick_forever(), name="datagen-teacher-progress")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client and the journal (committing every finished call) and print the summary."""
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._progress is not None:
            self.summary = self._progress.close()
            self._progress = None
            if self.ledger.by_mode["online"] > 0:
                self.say(f"{self.desc}: {self.ledger.summary()}")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK_SECONDS)
            self.stats.concurrency = self._slots.limit
            if self._progress is not None:
                self._progress.tick()

    # ------------------------------------------------------------------ public calls

    async def complete(self, request: Request) -> Result:
        """Make one call (or return it from the journal). Safe to await from many coroutines."""
        if self._client is None:
            raise DatagenError("TeacherEngine is not open: use `async with TeacherEngine(...) as engine`")
        prep = prepare(self.config, request)
        key = prep.key
        self.stats.submitted += 1
        while True:
            if self._journal is not None:
                entry = self._journal.get_ok(key)
                if entry is not None:
                    return self._count(self.ledger.from_journal(entry, request))
            owner = self._inflight.get(key)
            if owner is None:
                break
            try:
                shared = await asyncio.shield(owner)
            except asyncio.CancelledError:
                if owner.cancelled():
                    continue  # the call we were waiting on was cancelled: make it ourselves
                raise
            return self._count(replace(shared, tag=request.tag, cached=True, attempts=0))
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._call(prep, request)
        except BaseException:
            fut.cancel()
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(result)
        return self._count(result)

    async def map(
        self, requests: Iterable[Request] | AsyncIterable[Request], *, window: int | None = None
    ) -> AsyncIterator[Result]:
        """Run many requests, yielding each Result as it finishes (any order; match by `tag` or
        `key`). At most `window` requests are pending at once (default: a few times the
        concurrency), so a generator of millions is consumed lazily."""
        results = map_requests(self, requests, window or max(4 * self.config.concurrency, 64))
        try:
            async for result in results:
                yield result
        finally:
            await results.aclose()  # cancel what is still pending now, not when the generator is collected

    # ------------------------------------------------------------------ one call

    def _fatal_for(self, model: str) -> CallFailure | None:
        return self._fatal.get(None) or self._fatal.get(model)

    async def _call(self, prep: Prepared, request: Request) -> Result:
        model = prep.model
        paid = Paid()
        started = time.monotonic()
        fatal = self._fatal_for(model)
        if fatal is not None:
            failure = CallFailure(fatal.code, f"not sent: an earlier call failed with {fatal.detail}")
            return await self.ledger.failure(prep, request, failure, paid, started)
        est_prompt = estimate_tokens(request.messages)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.config.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda exc: self._should_retry(exc, model)),
            before_sleep=self._before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )
        try:
            answer = await retrying(self._attempt, request, model, prep.params, est_prompt, paid)
        except CallFailure as failure:
            if failure.fatal and self._fatal_for(model) is None:
                self._fatal[model if failure.code == "not_found" else None] = failure
                log.error(
                    "%s: %s; sending nothing more%s",
                    self.desc,
                    failure,
                    f" for model {model}" if failure.code == "not_found" else "",
                )
            return await self.ledger.failure(prep, request, failure, paid, started)
        # The slot taken by the successful try is still held: give it back only once the row is
        # committed, so calls finished but not yet journaled never outnumber the concurrency.
        try:
            return await self.ledger.ok(prep, request, answer, paid, started)
        finally:
            self._slots.release()

    async def _attempt(
        self, request: Request, model: str, params: dict[str, Any], est_prompt: int, paid: Paid
    ) -> Answer:
        """One HTTP try. On success the concurrency slot is still held (the caller releases it)."""
        epoch = await self._slots.acquire()
        try:
            # Checked after the slot is ours: a 429's retry-after may have arrived while we queued.
            while (delay := self._pause_until - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            reservations = []
            if self._rpm is not None:
                reservations.append((self._rpm, await self._rpm.acquire(1)))
            tpm_handle = None
            if self._tpm is not None:
                expected = params.get("max_tokens") or self._completion_avg
                tpm_handle = await self._tpm.acquire(est_prompt + expected)
                reservations.append((self._tpm, tpm_handle))
            fatal = self._fatal_for(model)
            if fatal is not None:  # another call hit an account-wide error while we waited
                raise CallFailure(fatal.code, f"not sent: an earlier call failed with {fatal.detail}")
            paid.attempts += 1
            self.stats.sent += 1
            self.stats.in_flight += 1
            token = _RESERVATIONS.set(reservations) if reservations else None
            try:
                # The SDK's raw POST (documented for custom calls): same auth, headers and error
                # classes as chat.completions.create, minus its typed-params transform, which
                # costs ~0.5 ms of CPU a call; the body is checked by `_parse` instead.
                raw = await self._client.post(  # type: ignore[union-attr]
                    "/chat/completions",
                    cast_to=httpx2.Response,
                    body={**params, "model": model, "messages": list(request.messages)},
                    options=_POST_OPTIONS,
                )
                answer = parse_completion(
                    raw.content,
                    require_complete=request.require_complete,
                    est_prompt=est_prompt,
                    max_tokens=params.get("max_tokens"),
                )
            except (openai.APIError, CallFailure, ValueError) as exc:
                failure = classify(exc)
                paid.add(failure.prompt_tokens, failure.completion_tokens)
                if tpm_handle is not None and (failure.prompt_tokens or failure.completion_tokens):
                    self._tpm.settle(tpm_handle, failure.prompt_tokens + failure.completion_tokens)  # type: ignore[union-attr]
                if failure.code == "rate_limited":
                    self._pushed_back(epoch, failure)
                raise failure from None
            finally:
                self.stats.in_flight -= 1
                if token is not None:
                    _RESERVATIONS.reset(token)
                if reservations:
                    now = time.monotonic()
                    for limiter, handle in reservations:
                        limiter.finished(handle, now)
        except BaseException:
            self._slots.release()
            raise
        paid.add(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens)
        if tpm_handle is not None:
            self._tpm.settle(tpm_handle, answer.prompt_tokens + answer.completion_tokens)  # type: ignore[union-attr]
        self._completion_avg += 0.05 * (answer.completion_tokens - self._completion_avg)
        self._slots.succeeded()
        return answer

    @staticmethod
    async def _on_send(_request: httpx2.Request) -> None:
        """httpx request hook: the request leaves now, so its RPM/TPM window starts now."""
        reservations = _RESERVATIONS.get()
        if reservations:
            now = time.monotonic()
            for limiter, handle in reservations:
                limiter.sent(handle, now)

    # ------------------------------------------------------------------ retry policy

    def _should_retry(self, exc: BaseException, model: str) -> bool:
        return isinstance(exc, CallFailure) and exc.retryable and self._fatal_for(model) is None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, CallFailure) and exc.retry_after is not None:
            delay = min(exc.retry_after, self.config.max_retry_after)
            return delay + random.uniform(0, 0.1 * delay)  # honour it, spread the wake-ups a little
        return self._backoff(state)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, CallFailure):
            self.stats.last_error = f"{exc.code}: {exc.detail}"
        log.debug(
            "%s: try %d failed (%s); retrying in %.2fs",
            self.desc,
            state.attempt_number,
            exc,
            state.upcoming_sleep,
        )

    def _pushed_back(self, epoch: int, failure: CallFailure) -> None:
        """A 429. The request that got it waits its `retry-after` (`_wait`). Only when most recent
        answers are 429s (the server is overloaded, not refusing a few requests) is the concurrency
        halved (once per wave) and every new request held until the named wait has passed: doing
        either for every 429 collapses the throughput under a steady trickle of them."""
        self.stats.rate_limited += 1
        before = self._slots.limit
        overloaded = self._slots.pushed_back(epoch)
        if self._slots.limit < before:
            log.info("%s: server pushed back (429s); concurrency lowered to %d", self.desc, self._slots.limit)
        self.stats.concurrency = self._slots.limit
        if overloaded and failure.retry_after is not None:
            until = time.monotonic() + min(failure.retry_after, self.config.max_retry_after)
            self._pause_until = max(self._pause_until, until)


async def map_requests(
    engine: Any, requests: Iterable[Request] | AsyncIterable[Request], window: int
) -> AsyncIterator[Result]:
    """`engine.map`: run requests through `engine.complete`, at most `window` pending at once,
    yielding each Result as it finishes (shared by the online and the batch engine)."""
    if hasattr(requests, "__len__"):
        engine.expect(len(requests))  # type: ignore[arg-type]
        sized = True
    else:
        sized = False
    aiter_ = requests.__aiter__() if hasattr(requests, "__aiter__") else None
    iter_ = None if aiter_ is not None else iter(requests)  # type: ignore[arg-type]
    finished: asyncio.Queue[asyncio.Task[Result]] = asyncio.Queue()
    pending: set[asyncio.Task[Result]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    req = await aiter_.__anext__() if aiter_ is not None else next(iter_)  # type: ignore[arg-type]
                except (StopIteration, StopAsyncIteration):
                    exhausted = True
                    break
                if not sized:
                    engine.stats.expected += 1
                task = asyncio.ensure_future(engine.complete(req))
                task.add_done_callback(finished.put_nowait)
                pending.add(task)
            if not pending:
                return
            task = await finished.get()
            pending.discard(task)
            yield task.result()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def open_engine(config: TeacherConfig, **kwargs: Any) -> Any:
    """The engine `config.mode` asks for, with TeacherEngine's arguments: a TeacherEngine (online),
    or a `datagen.teacher.batch.BatchEngine` (batch). Use as `async with open_engine(...) as engine`."""
    return engine_factory(config)(config, **kwargs)


def engine_factory(config: TeacherConfig) -> Callable[..., Any]:
    """The engine class for `config.mode`: what a stage's `engine_factory` hook takes (TeacherEngine
    itself turns into a BatchEngine for a batch config; this says so explicitly)."""
    if config.mode == "batch":
        from datagen.teacher.batch import BatchEngine

        return BatchEngine
    return TeacherEngine


def run_requests(
    config: TeacherConfig,
    requests: Iterable[Request],
    *,
    journal_path: str | Path | None = None,
    progress: bool | None = None,
    desc: str = "",
) -> list[Result]:
    """Run requests to completion from synchronous code; Results come back in input order, online
    or in batch rounds as `config.mode` says. (Starts its own event loop: from async code use
    `open_engine` or `TeacherEngine` directly.)"""
    reqs = list(requests)

    async def main() -> list[Result]:
        out: list[Result | None] = [None] * len(reqs)
        async with open_engine(config, journal_path=journal_path, progress=progress, desc=desc) as engine:
            tagged = [replace(r, tag=i) for i, r in enumerate(reqs)]
            async for result in engine.map(tagged):
                i = result.tag
                result.tag = reqs[i].tag
                out[i] = result
        return out  # type: ignore[return-value]

    return asyncio.run(main())
