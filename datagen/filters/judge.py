"""The `judge` step: a model grades each dialogue and each assistant turn with versioned rubrics
(`datagen/filters/rubrics/`), and rows scoring under the thresholds are dropped (or tagged).

Each (dialogue, rubric) is one teacher call through the engine: journaled, cached, rate-limited,
and submitted through `engine_factory` when a runner swaps in a batch-API engine. A reply that is
not the asked JSON (`datagen.filters.rubric.parse_judgment`) is asked again once, with the reason;
a second bad reply drops the row as `judge_unparseable` with both reasons and the reply as evidence.
A call that fails (after the engine's own retries) drops it, naming the error: `judge_unavailable`
when a rerun can fix it (rate limits, server errors, timeouts: a runner should count these as
retryable failures), `judge_error` otherwise. The journal keeps the call in its failure ledger, so
the next run asks it again. No score is ever guessed.

What a judged row carries, kept or dropped (so reports can be rebuilt from the files):

- `scores["judge_<criterion>"]`: the dialogue score (1-5), `scores["judge_min_<criterion>"]`: its
  weakest graded turn (numbers, so the card and the review page summarise them);
- `tags["judge.rubrics"]`: per rubric id, the judge model, the dialogue marks and each turn's marks,
  each with its one-sentence reason; `tags["judge.second"]` the same from the second judge;
- `usage`: the judge calls' tokens and cost added to the row's own (the price of an accepted row).

`structured` says how the JSON is asked for: the rubric's JSON schema as structured outputs where
the endpoint takes it, with a fallback to plainer formats remembered per endpoint
(`datagen.filters.judge_format`).

(`judge` is the step's name; a renamed step uses its own name in these keys.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import xxhash

from datagen.errors import ConfigError
from datagen.filters.base import KEEP, BaseFilter, FilterResult, Verdict
from datagen.filters.judge_format import LADDER, Formats, Structured, refused, response_format
from datagen.filters.registry import register_step
from datagen.filters.rubric import (
    DEFAULT_RUBRICS,
    SCORE_RANGE,
    JudgeReplyError,
    Judgment,
    Rubric,
    load_rubric,
    parse_judgment,
)
from datagen.record import Conversation, Usage

log = logging.getLogger("datagen.judge")

#: What a run hands its judge steps: teacher, journal, engine factory (see `run_defaults`).
_RUN: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "datagen_judge_run", default=None
)


@contextlib.contextmanager
def run_defaults(
    teacher: Any,
    journal: str | Any | None,
    engine_factory: Callable[..., Any] | None = None,
    progress: bool | None = False,
) -> Iterator[None]:
    """Inside a run: judge steps that name no teacher or journal of their own use the run's (and its
    engine factory), so their calls share the run's journal, cache and batch executor."""
    token = _RUN.set(
        {"teacher": teacher, "journal": journal, "engine_factory": engine_factory, "progress": progress}
    )
    try:
        yield
    finally:
        _RUN.reset(token)


#: Teacher error codes a rerun can fix (the row is dropped now; the journal asks again next run).
_RETRYABLE = frozenset({"rate_limited", "server_error", "timeout", "connection"})


@dataclass(slots=True)
class JudgeFailure:
    """Why a (dialogue, rubric) got no judgment: `judge_unparseable`, `judge_unavailable` (a rerun can
    fix it) or `judge_error`."""

    reason: str
    detail: str
    error: str | None = None
    reply: str | None = None

    @property
    def retryable(self) -> bool:
        return self.error in _RETRYABLE

    def evidence(self, rubric: str) -> dict[str, Any]:
        ev: dict[str, Any] = {"rubric": rubric, "detail": self.detail[:300]}
        if self.error:
            ev["error"] = self.error
        if self.reply is not None:
            ev["reply"] = self.reply[:300]
        return ev


@dataclass(slots=True)
class JudgeCalls:
    """What the step's calls cost, summed over its batches."""

    calls: int = 0
    cached: int = 0
    reasked: int = 0
    unparseable: int = 0
    refused_formats: int = 0  # calls an endpoint refused for their response_format (see `structured`)
    errors: int = 0
    retryable_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class _Job:
    row: int
    rubric: Rubric
    turns: list[int]
    model: str | None  # None: the engine's model
    second: bool = False
    usage: Usage = field(default_factory=Usage)


def _run_sync(coro: Any) -> Any:
    """Run a coroutine to its end from synchronous code, also when the caller's thread already runs
    an event loop (then in a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _teacher(value: Any, where: str):
    from datagen.teacher.config import TeacherConfig

    if value is None or isinstance(value, TeacherConfig):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping of teacher settings, got {type(value).__name__}", field=where)
    try:
        return TeacherConfig.from_dict(value)
    except ConfigError as exc:
        raise ConfigError(exc.reason, field=f"{where}.{exc.field}" if exc.field else where) from None


@register_step
class JudgeFilter(BaseFilter):
    """Grade dialogues with an LLM judge; drop those under the thresholds (`low_<criterion>`).

    Args:
        teacher: the judge's endpoint (TeacherConfig settings); in a run, the run's teacher when
            left out.
        model: the judge model (default: the teacher's model).
        rubrics: rubric ids (`hhh`, `grounded.v1`, ...); each grades the dialogues and turns its
            settings name (default: hhh for every dialogue, grounded for plugin turns).
        rubrics_dir: a folder of your own rubric files, over the shipped ones.
        min_score: the lowest score kept, for the dialogue and every graded turn (1 keeps all).
        min_scores: per-criterion overrides of min_score, e.g. `{harmless: 4}`.
        second: a second judge, `{model: ..., teacher: {...}}`, for the agreement figure only.
        second_rate: the share of rows the second judge also grades (chosen by row id).
        max_tokens, temperature: the judge's sampling settings.
        structured: how the JSON is asked for: `auto` (default: the rubric's schema as structured
            outputs, falling back once per endpoint to plainer formats it accepts), `json_schema`,
            `json_object_schema` (llama-cpp-python's form), `json_object` or `off` (see
            `datagen.filters.judge_format`).
        journal: the engine journal (a run uses its own).
    """

    name = "judge"
    stateful = True

    def __init__(
        self,
        *,
        policy: str = "drop",
        teacher: dict[str, Any] | None = None,
        model: str | None = None,
        rubrics: list[str] | None = None,
        rubrics_dir: str | None = None,
        min_score: int = 3,
        min_scores: dict[str, int] | None = None,
        second: dict[str, Any] | None = None,
        second_rate: float = 1.0,
        max_tokens: int = 1500,
        temperature: float = 0.0,
        structured: Structured = "auto",
        journal: str | None = None,
    ):
        super().__init__(policy=policy)
        self.teacher = _teacher(teacher, "teacher")
        self.model = model
        self.rubrics = [
            load_rubric(r, rubrics_dir) for r in (rubrics if rubrics is not None else DEFAULT_RUBRICS)
        ]
        if not self.rubrics:
            raise ConfigError("name at least one rubric", field="rubrics")
        criteria = {c for r in self.rubrics for c in r.criteria}
        lo, hi = SCORE_RANGE
        self.min_scores: dict[str, int] = {c: min_score for c in criteria}
        for c, v in {"min_score": min_score, **(min_scores or {})}.items():
            if c != "min_score" and c not in criteria:
                raise ConfigError(
                    f"no rubric has the criterion {c!r} (criteria: {', '.join(sorted(criteria))})",
                    field=f"min_scores.{c}",
                )
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(
                    f"must be an integer from {lo} to {hi}, got {v!r}",
                    field="min_score" if c == "min_score" else f"min_scores.{c}",
                )
            if c != "min_score":
                self.min_scores[c] = v
        self.has_second = second is not None
        second = dict(second or {})
        unknown = sorted(set(second) - {"model", "teacher"})
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r} (known: model, teacher)", field=f"second.{unknown[0]}"
            )
        self.second_model = second.get("model")
        self.second_teacher = _teacher(second.get("teacher"), "second.teacher")
        if self.has_second and not self.second_model and self.second_teacher is None:
            raise ConfigError("a second judge needs its own model or teacher", field="second")
        if not 0.0 <= second_rate <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {second_rate}", field="second_rate")
        self.second_rate = second_rate
        self.params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        try:
            self.formats = Formats(structured)
        except ValueError as exc:
            raise ConfigError(str(exc), field="structured") from None
        self.journal = journal
        self.progress: bool | None = False
        #: Called instead of the engine `teacher.mode` names, with the same arguments.
        self.engine_factory: Callable[..., Any] | None = None
        self.calls = JudgeCalls()

    # -- one row at a time: not used (stateful), but a row without graded turns passes -------------

    def filter(self, conv: Conversation) -> FilterResult:
        return self.decide_batch([(conv, None)])[0]

    @property
    def rubric_ids(self) -> list[str]:
        return [r.id for r in self.rubrics]

    def _second_picks(self, conv: Conversation) -> bool:
        if not self.has_second or self.second_rate <= 0:
            return False
        return xxhash.xxh64_intdigest(f"judge-second:{conv.id}".encode()) / 2**64 < self.second_rate

    def decide_batch(self, items: list[tuple[Conversation, Any]]) -> list[Verdict]:
        jobs: list[_Job] = []
        for i, (conv, _) in enumerate(items):
            for rubric in self.rubrics:
                turns = rubric.graded_turns(conv)
                if not turns:
                    continue
                jobs.append(_Job(i, rubric, turns, self.model))
                if self._second_picks(conv):
                    jobs.append(_Job(i, rubric, turns, self.second_model, second=True))
        if not jobs:
            return [KEEP for _ in items]
        outcomes = _run_sync(self._run(jobs, [c for c, _ in items]))
        per_row: dict[int, list[tuple[_Job, Judgment | JudgeFailure]]] = {}
        for job, out in zip(jobs, outcomes, strict=True):
            per_row.setdefault(job.row, []).append((job, out))
        return [self._verdict(conv, per_row.get(i, [])) for i, (conv, _) in enumerate(items)]

    # -- calls ---------------------------------------------------------------------------------------

    async def _run(self, jobs: list[_Job], convs: list[Conversation]) -> list[Judgment | JudgeFailure]:
        from datagen.teacher.engine import engine_factory

        run = _RUN.get() or {}
        primary = self.teacher or _teacher(run.get("teacher"), "teacher")
        if primary is None:
            raise ConfigError(
                "the judge step needs a teacher: give `teacher:` in the step, or run it in a run "
                "whose `teacher:` it uses",
                field="teacher",
            )
        chosen = self.engine_factory or run.get("engine_factory")
        journal = self.journal or run.get("journal")
        progress = self.progress if self.journal or not run else run.get("progress")
        groups: dict[bool, list[int]] = {}
        for k, job in enumerate(jobs):
            groups.setdefault(job.second and self.second_teacher is not None, []).append(k)
        out: list[Judgment | JudgeFailure | None] = [None] * len(jobs)

        async def run_group(own_teacher: bool, ks: list[int]) -> None:
            teacher = self.second_teacher if own_teacher else primary
            desc = "judge (second)" if own_teacher else "judge"
            make = chosen or engine_factory(teacher)  # online, or batch rounds as `teacher.mode` says
            endpoints = {k: (teacher.base_url, jobs[k].model or teacher.model) for k in ks}
            # An endpoint whose format is not known yet gets one call first, so that a refusal
            # costs one request rather than one per job.
            probes: dict[tuple[str, str], int] = {}
            for k in ks:
                if self.formats.probing(endpoints[k]):
                    probes.setdefault(endpoints[k], k)
            first = list(probes.values())
            async with make(teacher, journal_path=journal, progress=progress, desc=desc) as engine:
                engine.expect(len(ks))
                for wave in (first, [k for k in ks if k not in first]):
                    results = await asyncio.gather(
                        *(self._judge(engine, jobs[k], convs[jobs[k].row], endpoints[k]) for k in wave)
                    )
                    for k, r in zip(wave, results, strict=True):
                        out[k] = r

        await asyncio.gather(*(run_group(own, ks) for own, ks in groups.items()))
        return out  # type: ignore[return-value]

    async def _ask(
        self, engine: Any, job: _Job, req: Any, endpoint: tuple[str, str], kind: str, *, reask: bool
    ) -> tuple[Any, str]:
        """Make the call `req` in format `kind`, and in the next formats while an endpoint still
        probing refuses it; return the result and the format it was made in."""
        while True:
            fmt = response_format(kind, job.rubric, job.turns)
            params = {**self.params, "response_format": fmt} if fmt else self.params
            result = await engine.complete(replace(req, params=params))
            self._count(job, result, reask=reask)
            if result.ok or result.error == "length":  # answered: the endpoint takes this format
                if self.formats.settle(endpoint, kind) and kind != LADDER[0]:
                    log.warning("judge: %s (%s) answers with response_format %s", *endpoint, kind)
                return result, kind
            nxt = self.formats.fallback(endpoint, kind) if refused(result.error, result.detail) else None
            if nxt is None:
                return result, kind
            self.calls.refused_formats += 1
            why = " ".join(
                (result.detail or result.error or "").split()
            )  # one line: servers send JSON bodies
            why = why if len(why) <= 160 else why[:159] + "…"
            log.warning(
                "judge: %s (%s) refused response_format %s (%s); trying %s", *endpoint, kind, why, nxt
            )
            kind = nxt

    async def _judge(
        self, engine: Any, job: _Job, conv: Conversation, endpoint: tuple[str, str]
    ) -> Judgment | JudgeFailure:
        from datagen.teacher.types import Request

        first = job.rubric.messages(conv, job.turns)
        messages, why = first, None
        kind = self.formats.first(endpoint)
        for attempt in range(2):
            req = Request(
                messages=messages,
                params=self.params,
                model=job.model,
                template_version=f"judge:{job.rubric.id}",
                tag=(conv.id, job.rubric.id, attempt),
            )
            result, kind = await self._ask(engine, job, req, endpoint, kind, reask=attempt > 0)
            if not result.ok and result.error != "length":
                self.calls.errors += 1
                reason = "judge_unavailable" if result.error in _RETRYABLE else "judge_error"
                failure = JudgeFailure(reason, result.detail or result.error or "unknown", result.error)
                self.calls.retryable_failed += failure.retryable
                return failure
            if result.ok:
                try:
                    return parse_judgment(result.text or "", job.rubric, job.turns, model=result.model or "")
                except JudgeReplyError as exc:
                    reason, reply = str(exc), result.text or ""
            else:  # cut at max_tokens: the JSON is unfinished
                reason, reply = "the reply was cut off before the JSON ended; keep each reason short", ""
            why = reason if why is None else f"{why}; then: {reason}"
            messages = job.rubric.retry_messages(first, reply, reason)
        self.calls.unparseable += 1
        return JudgeFailure("judge_unparseable", why or "unparseable", reply=reply)

    def _count(self, job: _Job, result: Any, *, reask: bool) -> None:
        c = self.calls
        c.calls += 1
        c.cached += bool(result.cached)
        c.reasked += reask
        c.prompt_tokens += result.prompt_tokens
        c.completion_tokens += result.completion_tokens
        c.cost += result.cost
        job.usage.add(Usage(result.prompt_tokens, result.completion_tokens, result.cost, 1))

    # -- verdicts ------------------------------------------------------------------------------------

    def _verdict(self, conv: Conversation, done: list[tuple[_Job, Judgment | JudgeFailure]]) -> Verdict:
        if not done:
            return KEEP
        step = self.step_name
        usage = Usage.from_dict(conv.usage.to_dict())
        scores, tags = dict(conv.scores), dict(conv.tags)
        primary: dict[str, dict[str, Any]] = {}
        second: dict[str, dict[str, Any]] = {}
        failure: tuple[str, JudgeFailure] | None = None
        low: tuple[str, dict[str, Any]] | None = None
        for job, out in done:
            usage.add(job.usage)
            if isinstance(out, JudgeFailure):
                if not job.second and failure is None:
                    failure = (job.rubric.id, out)
                continue
            (second if job.second else primary)[job.rubric.id] = out.to_dict()
            if job.second:
                continue
            for c, mark in out.dialogue.items():
                scores[f"{step}_{c}"] = float(mark.score)
                scores[f"{step}_min_{c}"] = float(min(m[c].score for m in out.turns.values()))
            low = low or self._low(job.rubric, out)
        if primary:
            tags[f"{step}.rubrics"] = primary
        if second:
            tags[f"{step}.second"] = second
        updates = {"scores": scores, "tags": tags, "usage": usage}
        if failure is not None:
            rubric, f = failure
            return Verdict(False, f.reason, f.evidence(rubric), updates=updates)
        if low is not None:
            return Verdict(False, low[0], low[1], updates=updates)
        return Verdict(True, updates=updates)

    def _low(self, rubric: Rubric, j: Judgment) -> tuple[str, dict[str, Any]] | None:
        """The first criterion under its threshold (dialogue mark first, then the weakest turn)."""
        for c in rubric.criteria:
            need = self.min_scores[c]
            mark = j.dialogue[c]
            if mark.score < need:
                return f"low_{c}", {
                    "rubric": rubric.id,
                    "turn": None,
                    "score": mark.score,
                    "min": need,
                    "reason": mark.reason,
                    "model": j.model,
                }
            n, marks = min(j.turns.items(), key=lambda kv: (kv[1][c].score, kv[0]))
            if marks[c].score < need:
                return f"low_{c}", {
                    "rubric": rubric.id,
                    "turn": n,
                    "score": marks[c].score,
                    "min": need,
                    "reason": marks[c].reason,
                    "model": j.model,
                }
        return None
