"""Making one dialogue: the turn loop of HHH and plugin dialogues.

Every teacher call is one journaled request built only from the dialogue state, and the turn count
comes from an RNG seeded by (run seed, dialogue id), so a rerun replays a dialogue's finished turns
from the journal for free and pays only for the rest.

    HHH turn     assistant call (MOSS under its meta instruction + category guidance)
    plugin turn  plan call (inner thoughts + commands) -> real tool execution -> answer call
    between      simulated-user call writing the next human message

A reply that is unusable (empty, cut off, wrong language, no parseable commands) is asked again
`content_retries` times with the reason added to the prompt (for a reply cut at max_tokens, with a
length budget derived from max_tokens); if it stays unusable the dialogue keeps the turns it has
(`keep_partial`, at least `min_turns`) or fails. A reply cut at max_tokens is never kept as if
complete, with one exception: a planning reply whose Commands line was finished before the cut
(the model rambled on after it) is used, since only that line is read. API failures (timeouts, 5xx
after the engine's retries) fail the dialogue without writing it, so a rerun finishes it. A request
the server refuses (400/422, e.g. a history past the context) is treated like an unusable reply
that stayed so: the dialogue keeps the turns it has or fails for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from datagen.generate.common import (
    CONTENT_ERRORS,
    FATAL_ERRORS,
    PERMANENT_ERRORS,
    PromptRow,
    rng_for,
    usage_of,
)
from datagen.generate.config import DialogueConfig
from datagen.generate.parsing import Plan, clean_reply, commands_complete, echoes_prompt, parse_plan
from datagen.generate.prompts import (
    PromptBook,
    answer_messages,
    assistant_messages,
    copied_calls,
    enabled_commands,
    failed_calls,
    plan_examples,
    plan_messages,
    prompt_echo_fragments,
    user_messages,
)
from datagen.record import PLUGIN_COMMANDS, Conversation, Lineage, ToolCall, ToolResult, Turn
from datagen.seeds.record import detect_seed_language, normalize_category
from datagen.stage import StageStats
from datagen.teacher.types import Request
from datagen.tools.base import (
    ToolUnavailableError,
    call_in_thread,
    number_snippets,
    time_limit_of,
    timed_out,
    unknown_command,
)

#: Most commands kept from one planning reply (MOSS's data has up to 10).
MAX_CALLS_PER_TURN = 10
#: rapidfuzz ratio (0-100) from which a simulated user message counts as a copy of an earlier one.
SIMILAR = 90
TOOL_FAILED = "tool_failed"


class TurnFailed(Exception):
    """A turn could not be made. `permanent` is True when asking again would not help (the reply
    stayed unusable, or the server refused the request: `bad_request`), False for API or
    tool-backend failures a rerun may fix."""

    def __init__(self, reason: str, detail: str = "", *, permanent: bool, role: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.permanent = permanent
        self.role = role


class DialogueFailed(Exception):
    """A dialogue could not be made; carries the turn it stopped at and the usage spent."""

    def __init__(self, conv: Conversation, failure: TurnFailed, turn: int):
        super().__init__(str(failure))
        self.conv = conv
        self.failure = failure
        self.turn = turn


def tool_concurrency(tool: Any) -> int:
    """How many calls of `tool` may run at once: its `concurrency` attribute (HTTP-backed tools can
    take many), else 1, so a tool that is not thread safe (the solver's worker, a user's tool)
    never sees two calls at a time."""
    n = getattr(tool, "concurrency", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


class ToolRunner:
    """Runs tool calls off the event loop, each tool at most `tool_concurrency(tool)` calls at
    once, different tools in parallel. The calls of one turn run in order, since snippet numbering
    continues across a turn's searches.

    Each call runs in its own daemon thread and is given up on after its tool's `time_limit`
    (`ToolTimeoutError`, a retryable tool failure), so a hung tool neither holds up the stage nor
    keeps a stopped run alive. A call given up on keeps its slot until its thread really ends, so
    a tool never sees more calls at once than its concurrency; once every slot of a tool is held
    by such calls, further calls of it fail at once (ToolUnavailableError) instead of queueing.
    """

    def __init__(self, tools: Mapping[str, Any]):
        self.tools = dict(tools)
        self.limits = {name: tool_concurrency(t) for name, t in self.tools.items()}
        self._running = dict.fromkeys(self.tools, 0)  # calls whose thread has not ended
        self._abandoned = dict.fromkeys(self.tools, 0)  # of those, the ones given up on
        self._waiters: dict[str, list[asyncio.Future[None]]] = {name: [] for name in self.tools}

    async def run(self, calls: list[ToolCall]) -> list[ToolResult]:
        """Run one turn's calls and return their results (a backend failure or a call past its
        tool's time limit raises ToolUnavailableError)."""
        by_command = {t.name: (name, t) for name, t in self.tools.items()}
        results: list[ToolResult] = []
        for call in calls:
            found = by_command.get(call.name)
            results.append(unknown_command(call) if found is None else await self._call(*found, call.arg))
        return number_snippets(results)

    async def _acquire(self, name: str, tool: Any) -> None:
        # Waiting happens here, on the event loop, so no thread sits blocked on a busy tool.
        loop = asyncio.get_running_loop()
        while True:
            if self._abandoned[name] >= self.limits[name]:
                raise ToolUnavailableError(
                    f"{tool.name} is stuck: {self._abandoned[name]} earlier call(s) never returned"
                )
            if self._running[name] < self.limits[name]:
                self._running[name] += 1
                return
            waiter = loop.create_future()
            self._waiters[name].append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters[name]:
                    self._waiters[name].remove(waiter)

    def _wake(self, name: str) -> None:
        waiters, self._waiters[name] = self._waiters[name], []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _call(self, name: str, tool: Any, arg: str) -> ToolResult:
        await self._acquire(name, tool)
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[ToolResult] = loop.create_future()
        given_up = False  # past the time limit: counted as stuck until its thread ends
        waiting = True  # someone still awaits the outcome (not given up on, not cancelled)

        def finished(result: ToolResult | None, error: BaseException | None) -> None:  # on the loop
            self._running[name] -= 1
            self._wake(name)
            if given_up:
                self._abandoned[name] -= 1
            if waiting and not outcome.done():
                if error is not None:
                    outcome.set_exception(error)
                else:
                    outcome.set_result(result)

        def on_done(result: ToolResult | None, error: BaseException | None) -> None:  # in the tool's thread
            try:
                loop.call_soon_threadsafe(finished, result, error)
            except RuntimeError:  # the loop has closed: the run was stopped, nobody waits
                pass

        try:
            call_in_thread(tool, arg, on_done)
        except BaseException:
            self._running[name] -= 1
            self._wake(name)
            raise
        limit = time_limit_of(tool)
        try:
            return await asyncio.wait_for(asyncio.shield(outcome), limit)
        except TimeoutError:
            if outcome.done():  # the tool itself raised TimeoutError
                raise
            given_up, waiting = True, False
            self._abandoned[name] += 1
            self._wake(name)  # waiters see whether the tool is now stuck
            raise timed_out(tool, arg, limit) from None
        except asyncio.CancelledError:
            waiting = False
            raise

    def close(self) -> None:
        """Nothing to release: calls run in daemon threads that end on their own."""


@dataclass(slots=True)
class DialogueMaker:
    """Makes dialogues of one kind with one engine; shared by all dialogues of a run."""

    engine: Any  # datagen.teacher.engine.TeacherEngine
    config: DialogueConfig
    book: PromptBook
    stats: StageStats
    teacher_model: str
    teacher_params: dict[str, Any] = field(default_factory=dict)
    tools: ToolRunner | None = None
    run_id: str | None = None
    fatal: TurnFailed | None = None

    # ------------------------------------------------------------------ building blocks

    def conversation_id(self, prompt: PromptRow) -> str:
        return f"{self.config.kind}-{prompt.id}"

    def new_conversation(self, prompt: PromptRow) -> Conversation:
        kind = self.config.kind
        plugins: list[str] = []
        if kind == "plugin":
            wanted = set(prompt.plugins or self.config.plugins)
            plugins = [p for p in PLUGIN_COMMANDS if p in wanted]
        language = prompt.language or detect_seed_language(prompt.text)
        conv = Conversation(
            id=self.conversation_id(prompt),
            category=prompt.category,
            language=language,
            plugins=plugins,
            inner_thoughts=kind == "plugin",
        )
        names = (
            ["hhh_assistant", "hhh_user"]
            if kind == "hhh"
            else ["plugin_commands", "plugin_answer", "hhh_user"]
        )
        versions = [self.book.get(n).id for n in names] + [self.book.guidance(conv.category).id]
        conv.lineage = Lineage(
            seed_id=prompt.seed_id or prompt.id,
            source=prompt.source,
            source_id=prompt.source_id,
            teacher_model=self.teacher_model,
            params=self._lineage_params(),
            template_version="+".join(versions),
            parents=list(prompt.parents),
            run=self.run_id,
        )
        return conv

    def _lineage_params(self) -> dict[str, Any]:
        c = self.config
        p = {
            **self.teacher_params,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            "user_temperature": c.user_temperature,
            "user_max_tokens": c.user_max_tokens,
            "seed": c.seed,
        }
        if c.kind == "plugin":
            p["plan_max_tokens"] = c.plan_max_tokens
        return p

    def _params(self, role: str) -> dict[str, Any]:
        c = self.config
        if role == "user":
            return {"temperature": c.user_temperature, "top_p": c.top_p, "max_tokens": c.user_max_tokens}
        if role == "plan":
            return {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.plan_max_tokens}
        return {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}

    async def ask(
        self,
        conv: Conversation,
        role: str,
        template: str,
        tag: tuple[Any, ...],
        build: Callable[[str | None], list[dict[str, Any]]],
        validate: Callable[[str], tuple[Any, str | None]],
        validate_cut: Callable[[str], tuple[Any, str | None]] | None = None,
    ) -> Any:
        """One journaled call (plus content retries): build messages, call, validate the reply.
        `validate_cut`, when given, judges a reply cut at max_tokens (else such a reply is a
        `length` failure). Returns the validated value; raises TurnFailed."""
        reason: str | None = None
        detail = ""
        for attempt in range(self.config.content_retries + 1):
            request = Request(
                messages=build(reason if attempt else None),
                params=self._params(role),
                template_version=self.book.get(template).id,
                tag=(*tag, attempt),
                require_complete=validate_cut is None,
            )
            result = await self.engine.complete(request)
            self.stats.add_result(result)
            conv.usage.add(usage_of(result))
            if not result.ok:
                if result.error in CONTENT_ERRORS:
                    reason, detail = result.error or "unknown", result.detail or ""
                    continue
                code = result.error or "unknown"
                failure = TurnFailed(code, result.detail or "", permanent=code in PERMANENT_ERRORS, role=role)
                if code in FATAL_ERRORS:
                    self.fatal = failure
                raise failure
            if result.finish_reason == "length" and validate_cut is not None:
                value, why = validate_cut(result.text or "")
            else:
                value, why = validate(result.text or "")
            if why is None:
                return value
            reason, detail = why, (result.text or "")[:200]
        raise TurnFailed(reason or "unknown", detail, permanent=True, role=role)

    # ------------------------------------------------------------------ roles

    def _answer_validator(self, template: str) -> Callable[[str], tuple[str, str | None]]:
        fragments = prompt_echo_fragments(self.book, template)

        def validate(text: str) -> tuple[str, str | None]:
            answer, why = clean_reply(text, role="assistant")
            if why is None and echoes_prompt(answer, fragments):
                return "", "echo_prompt"
            return answer, why

        return validate

    async def assistant_turn(self, conv: Conversation, human: str, i: int) -> Turn:
        answer = await self.ask(
            conv,
            "assistant",
            "hhh_assistant",
            (conv.id, i, "assistant"),
            lambda r: assistant_messages(self.book, conv, human, r, max_tokens=self.config.max_tokens),
            self._answer_validator("hhh_assistant"),
        )
        return Turn(human=human, assistant=answer, thoughts=None)

    async def plugin_turn(self, conv: Conversation, human: str, i: int) -> Turn:
        allowed = set(enabled_commands(conv))
        examples = plan_examples(self.book, conv)

        def validate_plan(text: str) -> tuple[Plan | None, str | None]:
            plan, why = parse_plan(text, allowed)
            if plan is None:
                return None, why
            if plan.dropped and not plan.calls:
                return None, "disabled_tool"
            if copied_calls(plan.calls, examples, human):
                return None, "copied_example"
            plan.calls = [_sanitize(c) for c in plan.calls[:MAX_CALLS_PER_TURN]]
            return plan, None

        def validate_cut_plan(text: str) -> tuple[Plan | None, str | None]:
            # Cut at max_tokens: usable only when the Commands line ended before the cut.
            return validate_plan(text) if commands_complete(text) else (None, "length")

        plan: Plan = await self.ask(
            conv,
            "plan",
            "plugin_commands",
            (conv.id, i, "plan"),
            lambda r: plan_messages(self.book, conv, human, r),
            validate_plan,
            validate_cut_plan,
        )
        results: list[ToolResult] = []
        if plan.calls:
            if self.tools is None:
                raise TurnFailed("no_tools", "plugin dialogues need tools", permanent=False, role="tools")
            try:
                results = await self.tools.run(plan.calls)
            except Exception as exc:  # a backend down (ToolUnavailableError) or a tool bug: retry later
                raise TurnFailed(
                    "tool_unavailable", f"{type(exc).__name__}: {exc}", permanent=False, role="tools"
                ) from exc
        answer = await self.ask(
            conv,
            "answer",
            "plugin_answer",
            (conv.id, i, "answer"),
            lambda r: answer_messages(
                self.book,
                conv,
                human,
                plan.thoughts,
                plan.calls,
                results,
                r,
                max_tokens=self.config.max_tokens,
            ),
            self._answer_validator("plugin_answer"),
        )
        flags = [TOOL_FAILED] if failed_calls(results) else []
        return Turn(
            human=human,
            assistant=answer,
            thoughts=plan.thoughts,
            calls=list(plan.calls),
            results=results,
            flags=flags,
        )

    async def user_turn(self, conv: Conversation, turn_no: int, total: int) -> str:
        earlier = [_norm(t.human) for t in conv.turns]
        said = [_norm(t.assistant) for t in conv.turns]
        check_language = (
            self.config.check_language and conv.language is not None and not _switches_language(conv.category)
        )

        def validate(text: str) -> tuple[str, str | None]:
            msg, why = clean_reply(text, role="user")
            if why:
                return "", why
            m = _norm(msg)
            if any(fuzz.ratio(m, e) >= SIMILAR for e in earlier):
                return "", "repeat"
            if any(fuzz.ratio(m, a) >= SIMILAR for a in said):
                return "", "echo"
            if check_language and not _same_language(msg, conv.language):
                return "", "wrong_language"
            return msg, None

        return await self.ask(
            conv,
            "user",
            "hhh_user",
            (conv.id, turn_no - 1, "user"),
            lambda r: user_messages(self.book, conv, turn_no, total, r),
            validate,
        )

    # ------------------------------------------------------------------ the loop

    def planned_turns(self, conv: Conversation) -> int:
        rng = rng_for(self.config.seed, "turns", conv.id)
        return self.config.turn_distribution(conv.category, conv.language).draw(rng)

    async def make(self, prompt: PromptRow) -> Conversation:
        """Make one dialogue from its first user message. Raises DialogueFailed."""
        conv = self.new_conversation(prompt)
        total = self.planned_turns(conv)
        conv.extra["generation"] = {"prompt_id": prompt.id, "turns_planned": total}
        human = prompt.text
        make_turn = self.plugin_turn if self.config.kind == "plugin" else self.assistant_turn
        for i in range(total):
            try:
                turn = await make_turn(conv, human, i)
                conv.turns.append(turn)
                if i + 1 < total:
                    human = await self.user_turn(conv, i + 2, total)
            except TurnFailed as exc:
                if exc.permanent and self.config.keep_partial and len(conv.turns) >= self.config.min_turns:
                    conv.extra["generation"]["stopped"] = f"{exc.role}:{exc.reason}"
                    self.stats.inc(f"shortened_{exc.reason}")
                    break
                raise DialogueFailed(conv, exc, len(conv.turns) + 1) from None
        return conv


def _sanitize(call: ToolCall) -> ToolCall:
    # MOSS does not escape quotes inside `Name("arg")`, so an inner double quote or newline would
    # make the Commands segment unparseable.
    arg = call.arg.replace('"', "'").replace("\r", " ").replace("\n", " ").strip()
    return ToolCall(name=call.name, arg=arg)


def _norm(text: str) -> str:
    return "".join(text.split()).lower()


def _detect(text: str) -> str | None:
    from datagen.text.language import detect_language

    return detect_language(text)


def _switches_language(category: str | None) -> bool:
    # In language-switching dialogues the user changes language on purpose.
    from datagen.text.language import DRIFT_OK_CATEGORIES

    return category is not None and (
        category in DRIFT_OK_CATEGORIES or normalize_category(category) in DRIFT_OK_CATEGORIES
    )


def _same_language(text: str, language: str) -> bool:
    found = _detect(text)
    if found is None:  # too short or undecided: give the benefit of the doubt
        return True
    return found.split("-")[0] == language.split("-")[0]
