"""Settling a teacher call: parse its answer, price it, journal it and make its Result.

Shared by the online engine (`engine.py`: one HTTP answer) and the batch engine (`batch.py`: one
line of a batch output file), so a call settles the same way however it was made: the same journal
key and row, the same failure codes (`failures.py`) and the same cost fields. Only the price table
differs: a batch line is priced at the model's batch prices (`TeacherConfig.price_of`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

from datagen.teacher.config import TeacherConfig, check_params
from datagen.teacher.failures import CallFailure
from datagen.teacher.journal import Journal, JournalEntry, Statement, canonical_request, key_of
from datagen.teacher.limits import estimate_tokens
from datagen.teacher.stats import EngineStats
from datagen.teacher.types import Request, Result

log = logging.getLogger("datagen.teacher")

#: The projected cost of a stage, online and in batch mode, is said once this many calls are paid.
PROJECT_AFTER = 32


@dataclass(slots=True)
class Prepared:
    """A Request as the engines send and journal it: model, merged params, canonical form, key."""

    model: str
    params: dict[str, Any]
    canonical: dict[str, Any]
    key: str

    def body(self, request: Request) -> dict[str, Any]:
        """The chat completions body (what an online call posts and a batch line carries)."""
        return {**self.params, "model": self.model, "messages": list(request.messages)}


def prepare(config: TeacherConfig, request: Request) -> Prepared:
    """The model, params (config defaults under the request's own), canonical request and key."""
    model = request.model or config.model
    params = config.params
    if request.params:
        params = {**params, **check_params(request.params, "request.params")}
    canonical = canonical_request(
        model, request.messages, params, request.template_version, sample=request.sample
    )
    return Prepared(model=model, params=params, canonical=canonical, key=key_of(canonical))


@dataclass(slots=True)
class Answer:
    """A usable chat completion."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(slots=True)
class Paid:
    """What one call has cost in this session: tries (HTTP requests or batch lines) and billed tokens."""

    attempts: int = 0
    prompt: int = 0
    completion: int = 0
    cached: int = 0

    def add(self, prompt: int, completion: int, cached: int = 0) -> None:
        self.prompt += prompt
        self.completion += completion
        self.cached += cached


def parse_completion(
    content: bytes | str | dict[str, Any], *, require_complete: bool, est_prompt: int, max_tokens: Any = None
) -> Answer:
    """Check a response body is a usable chat completion; raise CallFailure when it is not."""
    if isinstance(content, dict):
        data: Any = content
    else:
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise CallFailure("invalid_response", f"body is not JSON ({exc}): {content[:120]!r}") from None
    if not isinstance(data, dict):
        raise CallFailure("invalid_response", f"body is not a JSON object: {str(content)[:120]!r}")
    if "choices" not in data and "error" in data:
        raise CallFailure("server_error", f"HTTP 200 with an error body: {str(data['error'])[:300]}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    pt, ct = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = min(pt, _int(details.get("cached_tokens"))) if isinstance(details, dict) else 0
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise CallFailure("empty", "the response has no choices", prompt_tokens=pt, completion_tokens=ct)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise CallFailure(
            "invalid_response",
            f"choices[0] has no message: {str(choice)[:200]}",
            prompt_tokens=pt,
            completion_tokens=ct,
        )
    text = message.get("content")
    finish = choice.get("finish_reason")
    if text is not None and not isinstance(text, str):
        raise CallFailure(
            "invalid_response",
            f"message content is not text: {str(text)[:200]}",
            prompt_tokens=pt,
            completion_tokens=ct,
        )
    reported = bool(usage)
    if not reported:  # some local servers omit usage: estimate it so the ledger is not zero
        pt, ct = est_prompt, estimate_tokens([{"content": text or ""}]) - 7
    if finish == "length" and require_complete:
        raise CallFailure(
            "length",
            cut_detail(pt, ct, max_tokens, reported=reported),
            prompt_tokens=pt,
            completion_tokens=ct,
            text=text,
            finish_reason=finish,
        )
    if finish == "content_filter":
        raise CallFailure(
            "content_filter",
            "the server's content filter stopped the answer",
            prompt_tokens=pt,
            completion_tokens=ct,
            text=text,
            finish_reason=finish,
        )
    if not text:
        raise CallFailure(
            "empty_text",
            f"the answer has no text (finish_reason {finish!r})",
            prompt_tokens=pt,
            completion_tokens=ct,
            finish_reason=finish,
        )
    return Answer(
        text=text, finish_reason=finish, prompt_tokens=pt, completion_tokens=ct, cached_tokens=cached
    )


def cut_detail(prompt_tokens: int, completion_tokens: int, max_tokens: Any, *, reported: bool = True) -> str:
    """Why an answer ended with finish_reason `length`: max_tokens, or the model's context window
    (the answer stopped short of max_tokens, so prompt + answer filled the context)."""
    if not reported:
        return "cut by the server's length limit (finish_reason length; the server reported no usage)"
    if isinstance(max_tokens, int) and completion_tokens < max_tokens:
        return (
            f"cut after {completion_tokens} completion tokens, short of max_tokens ({max_tokens}): the "
            f"prompt ({prompt_tokens} tokens) and the answer filled the model's context window; give the "
            "server a longer context or send shorter prompts (fewer turns)"
        )
    if isinstance(max_tokens, int):
        return f"cut at max_tokens ({max_tokens}) after {completion_tokens} completion tokens"
    return (
        f"cut after {completion_tokens} completion tokens by the server's own limit (no max_tokens was "
        f"sent: its default, or the context window with the prompt's {prompt_tokens} tokens)"
    )


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


class Ledger:
    """Prices, journals and counts the calls of one engine session.

    `mode` (`online` or `batch`) picks the prices calls are charged at; every paid token is also
    priced the other way (`alternative`), so a run can say what it would have cost in the other mode.
    """

    def __init__(self, config: TeacherConfig, stats: EngineStats, *, desc: str, mode: str):
        self.config = config
        self.stats = stats
        self.desc = desc
        self.mode = mode
        self.journal: Journal | None = None
        self.cached_tokens = 0  # paid prompt tokens the provider read from its cache
        self.by_mode = {"online": 0.0, "batch": 0.0}  # the session's paid tokens at each mode's prices
        self.paid_calls = 0
        self.say: Any = log.info  # where the projection goes (the engine's `say`)
        self._unpriced: set[str] = set()

    def price(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        *,
        batch: bool | None = None,
    ) -> float:
        """USD at this session's prices (0 and one warning for a model the table lacks)."""
        cost = self.config.price_of(
            model,
            prompt_tokens,
            completion_tokens,
            cached_tokens=cached_tokens,
            batch=self.mode == "batch" if batch is None else batch,
        )
        if cost is None:
            if self.config.prices and model not in self._unpriced:
                self._unpriced.add(model)
                log.warning(
                    "%s: no price for model %s in teacher.prices; its cost counts as 0", self.desc, model
                )
            return 0.0
        return cost

    def charge(self, model: str, paid: Paid) -> float:
        """Add a finished call's paid tokens to the session's counters; its cost at this mode's prices."""
        cost = self.price(model, paid.prompt, paid.completion, paid.cached)
        st = self.stats
        st.prompt_tokens += paid.prompt
        st.completion_tokens += paid.completion
        st.cost += cost
        self.cached_tokens += paid.cached
        for mode in self.by_mode:
            self.by_mode[mode] += self.price(
                model, paid.prompt, paid.completion, paid.cached, batch=mode == "batch"
            )
        self.paid_calls += 1
        projected = self.projection() if self.paid_calls == PROJECT_AFTER else None
        if projected is not None and projected["online"] > 0:
            self.say(
                f"{self.desc}: projected for the {max(st.expected, st.submitted)} calls announced: "
                f"{usd(projected['online'])} online, {usd(projected['batch'])} in batch mode "
                f"(from the first {PROJECT_AFTER} paid calls)"
            )
        return cost

    def cache_hit_rate(self) -> float:
        """Share of the paid prompt tokens that the provider served from its prompt cache."""
        return self.cached_tokens / self.stats.prompt_tokens if self.stats.prompt_tokens else 0.0

    def projection(self) -> dict[str, float] | None:
        """What the calls announced (`expect`) will cost online and in batch mode: the paid calls'
        average at each mode's prices times the calls still to come, or None before any paid call."""
        st = self.stats
        if not self.paid_calls:
            return None
        remaining = max(0, max(st.expected, st.submitted) - st.done - st.failed - 1)
        return {mode: cost + cost / self.paid_calls * remaining for mode, cost in self.by_mode.items()}

    def summary(self) -> str:
        """`cost at batch prices $0.0123 (online $0.0246); prompt cache 31% of 51234 prompt tokens`."""
        other = "online" if self.mode == "batch" else "batch"
        return (
            f"cost at {self.mode} prices {usd(self.by_mode[self.mode])} ({other} {usd(self.by_mode[other])}); "
            f"prompt cache {100 * self.cache_hit_rate():.0f}% of {self.stats.prompt_tokens} prompt tokens"
        )

    # ------------------------------------------------------------------ settling

    def from_journal(self, entry: JournalEntry, request: Request) -> Result:
        """A finished call served from the journal (nothing paid now)."""
        result = Result(
            key=entry.key,
            ok=True,
            text=entry.response,
            finish_reason=entry.finish_reason,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            cost=entry.cost,
            model=entry.model,
            cached=True,
            attempts=0,
            tag=request.tag,
            cached_tokens=entry.cached_tokens,
        )
        if request.require_complete and entry.finish_reason == "length":
            result.ok, result.text = False, None
            result.error, result.detail = "length", "the journaled answer was cut (finish_reason length)"
        return result

    async def ok(
        self, prep: Prepared, request: Request, answer: Answer, paid: Paid, started: float, *also: Statement
    ) -> Result:
        """Journal a usable answer (with statements `also`, in the same transaction) and count it."""
        cost = self.price(prep.model, answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens)
        await self._record(
            prep,
            paid,
            started,
            also,
            status="ok",
            response=answer.text,
            finish_reason=answer.finish_reason,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost=cost,
            cached_tokens=answer.cached_tokens,
        )
        return Result(
            key=prep.key,
            ok=True,
            text=answer.text,
            finish_reason=answer.finish_reason,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost=cost,
            model=prep.model,
            cached=False,
            attempts=paid.attempts,
            tag=request.tag,
            cached_tokens=answer.cached_tokens,
        )

    async def failure(
        self,
        prep: Prepared,
        request: Request,
        failure: CallFailure,
        paid: Paid,
        started: float,
        *also: Statement,
    ) -> Result:
        """Journal a call that cannot succeed in the failure ledger and count it."""
        self.stats.last_error = f"{failure.code}: {failure.detail}"
        cost = self.price(prep.model, failure.prompt_tokens, failure.completion_tokens)
        await self._record(
            prep,
            paid,
            started,
            also,
            status="failed",
            response=failure.text,
            finish_reason=failure.finish_reason,
            prompt_tokens=failure.prompt_tokens,
            completion_tokens=failure.completion_tokens,
            cost=cost,
            error=failure.code,
            detail=failure.detail,
        )
        return Result(
            key=prep.key,
            ok=False,
            text=None,
            finish_reason=failure.finish_reason,
            prompt_tokens=failure.prompt_tokens,
            completion_tokens=failure.completion_tokens,
            cost=cost,
            model=prep.model,
            cached=False,
            attempts=paid.attempts,
            error=failure.code,
            detail=failure.detail,
            tag=request.tag,
        )

    async def _record(
        self, prep: Prepared, paid: Paid, started: float, also: tuple[Statement, ...], **last_try: Any
    ) -> None:
        """Journal a settled call (`last_try`: its status and the fields of its last try) with what it
        paid in all, then charge what it paid."""
        if self.journal is not None:
            await self.journal.write(
                JournalEntry(
                    key=prep.key,
                    request=prep.canonical,
                    model=prep.model,
                    paid_prompt_tokens=paid.prompt,
                    paid_completion_tokens=paid.completion,
                    paid_cost=self.price(prep.model, paid.prompt, paid.completion, paid.cached),
                    attempts=paid.attempts,
                    latency=time.monotonic() - started,
                    paid_cached_tokens=paid.cached,
                    mode=self.mode,
                    **last_try,
                ),
                *also,
            )
        self.charge(prep.model, paid)


def usd(amount: float) -> str:
    """$12.35, $0.0123, $0.000123: small sums keep three significant digits."""
    if amount >= 1 or amount <= 0:
        return f"${amount:.2f}"
    return f"${amount:.{min(10, 2 - math.floor(math.log10(amount)))}f}"


class EngineCommon:
    """What the online and the batch engine share: counting Results, `expect`, `journal`, `say`."""

    stats: EngineStats
    ledger: Ledger
    _journal: Journal | None
    _show_progress: bool

    @property
    def journal(self) -> Journal | None:
        """The open journal (None without `journal_path`)."""
        return self._journal

    def expect(self, n: int) -> None:
        """Announce `n` more calls to come, so the bar shows a total and a projected cost."""
        self.stats.expected += n

    def _count(self, result: Result) -> Result:
        st = self.stats
        if result.cached:
            st.cached += 1
        if result.ok:
            st.done += 1
        else:
            st.failed += 1
            st.errors[result.error or "unknown"] = st.errors.get(result.error or "unknown", 0) + 1
        return result

    def say(self, message: str) -> None:
        """A line for the user, on stderr above the bar when progress is shown (in batch mode also
        when stderr is not a terminal: a run may wait hours between rounds), else logged."""
        if self._show_progress and (sys.stderr.isatty() or self.ledger.mode == "batch"):
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)
        else:
            log.info("%s", message)


def failure_of(entry: JournalEntry, request: Request) -> Result:
    """A failure journaled earlier, handed to the stage as it was settled (nothing paid now)."""
    return Result(
        key=entry.key,
        ok=False,
        text=None,
        finish_reason=entry.finish_reason,
        prompt_tokens=entry.prompt_tokens,
        completion_tokens=entry.completion_tokens,
        cost=entry.cost,
        model=entry.model,
        cached=True,
        attempts=0,
        error=entry.error or "unknown",
        detail=entry.detail,
        tag=request.tag,
    )
