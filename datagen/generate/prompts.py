"""Building the chat messages of each teacher role from the template files.

Pure functions of the dialogue state: the same state always gives the same messages, so a rerun
sends requests the journal already answered. Parsing the replies lives in `parsing.py`.

Roles:
    assistant   MOSS answers (HHH)                       hhh_assistant + guidance/<category>
    user        the simulated user writes the next turn   hhh_user + guidance/<category>
    plan        MOSS's inner thoughts and commands        plugin_commands
    answer      MOSS answers from the tool results        plugin_answer

A template's `retry` section (why the previous reply was rejected) goes at the end of the last
message the template writes: the system message of a template without a `user` section (v1 of
hhh_assistant and plugin_commands), else the final user message, which small models follow far
more closely than the system prompt.

plugin_commands v2 shows the teacher worked examples (few-shot user/assistant pairs, from the
template's `examples` section in the dialogue's language, only of the enabled tools) and puts the
earlier turns and the format reminder in the final user message; v1 (pinned with
`template_versions: {plugin_commands: 1}`) sends the earlier turns as chat history and the format
in the system prompt only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz

from datagen.errors import ConfigError
from datagen.formats.commands import NO_RESULT, RESULTS_END, RESULTS_TAG, render_commands, render_results
from datagen.formats.meta import build_meta_instruction
from datagen.generate.common import language_name, rng_for
from datagen.generate.parsing import parse_plan, prompt_fragments
from datagen.generate.templates import Template, find_template, load_template
from datagen.record import PLUGIN_COMMANDS, Conversation, ToolCall, ToolResult, Turn
from datagen.seeds.record import normalize_category

#: What a rejected reply is told, by reason code (the `retry` section fills `$reason` with it).
REASON_TEXT = {
    "empty_reply": "it was empty",
    "length": "it was cut off at the length limit; write a complete reply that is much shorter{budget}",
    "content_filter": "it was blocked by the content filter",
    "empty_text": "it was empty",
    "bad_request": "the request was refused",
    "wrong_language": "it was not written in {language}",
    "repeat": "it repeated an earlier message",
    "echo": "it copied MOSS's reply instead of writing the user's next message",
    "no_commands_line": "it had no `Commands:` line",
    "disabled_tool": "it called a tool that is not enabled",
    "copied_example": "it copied a command from the examples instead of writing one for this message",
    "echo_prompt": "it repeated these instructions instead of answering the user",
}
#: Languages whose length budget is counted in characters rather than words.
_CHAR_LANGUAGES = ("zh", "ja", "ko")

#: How each tool is listed for the planning call.
TOOL_LINES = {
    "Search": "- Search(query): web search; returns numbered snippets.",
    "Calculate": "- Calculate(expression): a calculator for arithmetic expressions.",
    "Solve": "- Solve(equation): solves equations and systems of equations.",
    "Text2Image": "- Text2Image(description): draws a picture from an English description.",
}
TOOL_EXAMPLES = {
    "Search": 'Search("2023 Nobel Prize in Physics")',
    "Calculate": 'Calculate("23*47+12")',
    "Solve": 'Solve("x+y=10;x-y=2")',
    "Text2Image": 'Text2Image("a red fox in the snow, watercolor")',
}


def reason_text(reason: str, language: str | None = None, max_tokens: int | None = None) -> str:
    """The sentence a retry prompt uses for a rejection reason code. For `length`, `max_tokens`
    (the call's completion limit) gives a budget the model can aim at: about 0.6 English words or
    0.8 CJK characters per token, a safe margin for common tokenizers."""
    budget = ""
    if reason == "length" and max_tokens:
        if (language or "").split("-")[0] in _CHAR_LANGUAGES:
            budget = f" (at most about {max(10, int(max_tokens * 0.8) // 10 * 10)} characters)"
        else:
            budget = f" (at most about {max(10, int(max_tokens * 0.6) // 10 * 10)} words)"
    return REASON_TEXT.get(reason, reason).format(language=language_name(language), budget=budget)


@dataclass(slots=True)
class PromptBook:
    """The templates one stage uses: a user folder over the shipped ones, versions pinned by name
    (`{"hhh_user": 1, "guidance/harmless": 2}`)."""

    directory: str | Path | None = None
    versions: dict[str, int] = field(default_factory=dict)
    _guidance: dict[str | None, Template] = field(default_factory=dict, repr=False)

    def get(self, name: str) -> Template:
        return load_template(name, self.versions.get(name), directory=self.directory)

    def guidance(self, category: str | None) -> Template:
        """`guidance/<category>` (normalised: `harmless_zh` -> `harmless`), else `guidance/default`."""
        t = self._guidance.get(category)
        if t is None:
            t = self._find_guidance(category)
            self._guidance[category] = t
        return t

    def _find_guidance(self, category: str | None) -> Template:
        for name in (
            f"guidance/{category}" if category else None,
            f"guidance/{normalize_category(category)}",
        ):
            if name:
                t = find_template(name, self.versions.get(name), directory=self.directory)
                if t is not None:
                    return t
        return self.get("guidance/default")


def _guidance(book: PromptBook, conv: Conversation, section: str) -> str:
    g = book.guidance(conv.category)
    return g.render(section, language_name=language_name(conv.language)) if g.has(section) else ""


def meta_instruction(conv: Conversation) -> str:
    """MOSS's meta instruction for this dialogue (its own text when it carries one)."""
    return conv.meta_instruction or build_meta_instruction(conv.plugins, conv.inner_thoughts)


def history(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Earlier turns as OpenAI chat messages (the user's message and MOSS's answer)."""
    out: list[dict[str, Any]] = []
    for t in turns:
        out.append({"role": "user", "content": t.human})
        out.append({"role": "assistant", "content": t.assistant})
    return out


def transcript(turns: Sequence[Turn]) -> str:
    """Earlier turns as plain text for the simulated user (`User: ...` / `MOSS: ...`)."""
    return "\n\n".join(f"User: {t.human}\n\nMOSS: {t.assistant}" for t in turns)


def _with_retry(
    t: Template,
    text: str,
    reason: str | None,
    conv: Conversation,
    max_tokens: int | None = None,
    sep: str = "\n",
) -> str:
    if reason is None or not t.has("retry"):
        return text
    return (
        text
        + sep
        + t.render(
            "retry",
            reason=reason_text(reason, conv.language, max_tokens),
            language_name=language_name(conv.language),
        )
    )


def assistant_messages(
    book: PromptBook,
    conv: Conversation,
    human: str,
    retry: str | None = None,
    *,
    max_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """MOSS's answer to `human` in an HHH dialogue, after `conv.turns`. `max_tokens` (the call's
    limit) sets the length budget a `length` retry asks for."""
    t = book.get("hhh_assistant")
    lang = language_name(conv.language)
    system = t.render(
        "system",
        meta_instruction=meta_instruction(conv).rstrip("\n"),
        guidance=_guidance(book, conv, "assistant"),
        language_name=lang,
    )
    if not t.has("user"):  # v1: the retry note goes into the system prompt
        return [
            {"role": "system", "content": _with_retry(t, system, retry, conv, max_tokens)},
            *history(conv.turns),
            {"role": "user", "content": human},
        ]
    user = t.render("user", message=human, language_name=lang)
    return [
        {"role": "system", "content": system},
        *history(conv.turns),
        {"role": "user", "content": _with_retry(t, user, retry, conv, max_tokens, sep="\n\n")},
    ]


def user_messages(
    book: PromptBook, conv: Conversation, turn_no: int, turns_total: int, retry: str | None = None
) -> list[dict[str, Any]]:
    """The simulated user's message number `turn_no` (of `turns_total`), after `conv.turns`."""
    t = book.get("hhh_user")
    lang = language_name(conv.language)
    system = t.render("system", language_name=lang, guidance=_guidance(book, conv, "user"))
    user = t.render(
        "user", transcript=transcript(conv.turns), turn=turn_no, turns=turns_total, language_name=lang
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _with_retry(t, user, retry, conv)},
    ]


def enabled_commands(conv: Conversation) -> list[str]:
    """MOSS command names of the dialogue's plugins, in MOSS order."""
    return [PLUGIN_COMMANDS[p] for p in PLUGIN_COMMANDS if p in conv.plugins]


@dataclass(frozen=True, slots=True)
class PlanExample:
    """One worked example of the planning call: a user message and MOSS's reply to it.

    `tools` are the MOSS command names its commands call (empty for a `Commands: None` example);
    `calls` are the calls themselves, so that a reply copying them can be told apart."""

    user: str
    reply: str
    tools: frozenset[str]
    calls: tuple[ToolCall, ...] = ()


_EXAMPLE_USER = re.compile(r"^(?:User|用户)\s*[:：]\s*", re.M)
_BLOCK = re.compile(r"(?:^[ \t]*\S.*(?:\n|\Z))+", re.M)  # lines up to a blank line


def parse_examples(text: str, *, path: str = "<string>", line: int | None = None) -> list[PlanExample]:
    """Parse an `examples` section: blocks separated by blank lines, each a `User:` line (or
    `用户：`), then `Inner Thoughts:` and `Commands:` lines, exactly what MOSS should reply.

    The section is data, not a template: `$` is literal. A block without a parseable commands
    line, or with an unknown tool, raises ConfigError naming the file and line."""
    out: list[PlanExample] = []
    for found in _BLOCK.finditer(text):
        block = found.group(0).strip()
        at = (line or 1) + text.count("\n", 0, found.start())
        m = _EXAMPLE_USER.match(block)
        if m is None:
            raise ConfigError("an example must start with a `User:` line", path=path, line=at)
        body = block[m.end() :]
        cut = re.search(r"^(?:Inner Thoughts|内心想法)\s*[:：]", body, re.M)
        if cut is None:
            raise ConfigError(
                "an example needs an `Inner Thoughts:` line after the `User:` line", path=path, line=at
            )
        user, reply = body[: cut.start()].strip(), body[cut.start() :].strip()
        plan, why = parse_plan(reply)
        if plan is None or plan.dropped or not user:
            problem = why or (
                f"unknown tool in {plan.dropped[0]}" if plan and plan.dropped else "empty message"
            )
            raise ConfigError(f"bad example ({problem})", path=path, line=at)
        out.append(
            PlanExample(
                user=user, reply=reply, tools=frozenset(c.name for c in plan.calls), calls=tuple(plan.calls)
            )
        )
    return out


def plan_examples(book: PromptBook, conv: Conversation) -> list[PlanExample]:
    """The worked examples shown in the planning call of the dialogue's next turn.

    From the template's `examples` section for the dialogue's language (`examples.zh`...,
    falling back to `examples`): for each enabled tool, examples calling only that tool (two when
    it is the only tool, else one), plus one `Commands: None` example if the section has one and
    `max_examples` leaves room. Which examples, and their order, are drawn from an RNG seeded by
    the dialogue id and turn, so prompts vary across the dataset yet a rerun asks the same."""
    t = book.get("plugin_commands")
    name = t.variant("examples", conv.language)
    if name is None:
        return []
    pool = _examples(t, name)
    cmds = enabled_commands(conv)
    rng = rng_for(0, "plan-examples", conv.id, len(conv.turns))
    per_tool = 2 if len(cmds) == 1 else 1
    chosen: list[PlanExample] = []
    for cmd in cmds:
        fits = [e for e in pool if e.tools == {cmd}]
        chosen += rng.sample(fits, min(per_tool, len(fits)))
    rng.shuffle(chosen)
    limit = _max_examples(t)
    chosen = chosen[:limit]
    nones = [e for e in pool if not e.tools]
    if nones and len(chosen) < limit:
        chosen.insert(0, rng.choice(nones))  # first: the tool examples stay nearest the question
    return chosen


def _max_examples(t: Template) -> int:
    raw = t.sections.get("max_examples", "5").strip()
    if not raw.isdigit():
        raise ConfigError(
            f"section max_examples must be a number, got {raw!r}", path=t.path, line=t.line_of("max_examples")
        )
    return int(raw)


_EXAMPLES_CACHE: dict[tuple[str, str, str], list[PlanExample]] = {}


def _examples(t: Template, section: str) -> list[PlanExample]:
    key = (t.path, t.digest, section)
    found = _EXAMPLES_CACHE.get(key)
    if found is None:
        found = parse_examples(t.sections[section], path=t.path, line=t.line_of(section))
        _EXAMPLES_CACHE[key] = found
    return found


#: rapidfuzz ratio (0-100) from which a user message counts as an example's question asked again.
CLOSE_TO_EXAMPLE = 90


def copied_calls(calls: Sequence[ToolCall], examples: Sequence[PlanExample], human: str) -> list[ToolCall]:
    """Calls that repeat an example's call word for word while the user asked something else: a
    weak model copying the example instead of reading the message.

    A call equal to an example's is still no copy when the user asked for it: its argument appears
    in the message (`Please draw a cat wearing a hat.` -> `Text2Image("a cat wearing a hat")`; for
    `x+y=20;x-y=4`, each part), or the message is close to that example's question (rapidfuzz ratio
    at least `CLOSE_TO_EXAMPLE`, ignoring case, spaces and punctuation, with the same numbers)."""
    asked = _plain(human)
    copied = []
    for call in calls:
        key = (call.name, _norm(call.arg))
        sources = [e for e in examples if any((c.name, _norm(c.arg)) == key for c in e.calls)]
        if not sources or _arg_in_message(call.arg, asked):
            continue
        if any(_close_to(human, e.user) for e in sources):
            continue
        copied.append(call)
    return copied


def _norm(text: str) -> str:
    return "".join(text.split()).lower()


def _plain(text: str) -> str:
    # letters and digits only (any script): `What's 2x + 3?` -> `whats2x3`
    return "".join(re.findall(r"[^\W_]", text.casefold()))


def _arg_in_message(arg: str, asked: str) -> bool:
    parts = [p for p in (_plain(x) for x in re.split(r"[;,，；]", arg)) if p]
    return bool(parts) and sum(map(len, parts)) >= 3 and all(p in asked for p in parts)


def _close_to(human: str, question: str) -> bool:
    if re.findall(r"\d+", human) != re.findall(r"\d+", question):
        return False  # `What is 17 times 24?` is not the example's `17 times 23`
    return fuzz.ratio(_plain(human), _plain(question)) >= CLOSE_TO_EXAMPLE


def plan_messages(
    book: PromptBook, conv: Conversation, human: str, retry: str | None = None
) -> list[dict[str, Any]]:
    """The planning call of a plugin turn: inner thoughts and commands for `human`.

    A template with a `user` section (v2) gets worked examples as earlier chat turns and the
    earlier turns of this dialogue as a transcript in the final user message; v1 sends MOSS's
    meta instruction in the system prompt and the earlier turns as chat history."""
    t = book.get("plugin_commands")
    cmds = enabled_commands(conv)
    lang = language_name(conv.language)
    system = t.render(
        "system",
        meta_instruction=meta_instruction(conv).rstrip("\n"),
        tools="\n".join(TOOL_LINES[c] for c in cmds),
        examples=", ".join(TOOL_EXAMPLES[c] for c in cmds),
        language_name=lang,
    )
    if not t.has("user"):
        return [
            {"role": "system", "content": _with_retry(t, system, retry, conv)},
            *history(conv.turns),
            {"role": "user", "content": human},
        ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for e in plan_examples(book, conv):
        messages.append(
            {"role": "user", "content": t.render("user", message=e.user, context="", language_name=lang)}
        )
        messages.append({"role": "assistant", "content": e.reply})
    context = (
        t.render("context", transcript=transcript(conv.turns), language_name=lang) + "\n\n"
        if conv.turns and t.has("context")
        else ""
    )
    user = t.render("user", message=human, context=context, language_name=lang)
    messages.append({"role": "user", "content": _with_retry(t, user, retry, conv, sep="\n\n")})
    return messages


def results_text(results: Sequence[ToolResult]) -> str:
    """The tool results as MOSS writes them inside `<|Results|>:...<eor>` (`None` when no call)."""
    seg = render_results(results, plugin_style=True)
    body = seg[len(RESULTS_TAG) :]
    if body.endswith(RESULTS_END):
        body = body[: -len(RESULTS_END)]
    return body.strip("\n").strip() or "None"


def failed_calls(results: Sequence[ToolResult]) -> list[ToolResult]:
    """Results whose tool gave nothing (MOSS's `No result.`)."""
    return [r for r in results if not r.ok or r.output.strip().strip("'") == NO_RESULT]


def prompt_echo_fragments(book: PromptBook, name: str) -> list[str]:
    """Instruction text of a template (its `system`, `user` and `retry` sections and the rejection
    reasons, placeholders left out) that a reply must not repeat: a weak teacher echoing its prompt
    is not an answer."""
    t = book.get(name)
    reasons = [re.sub(r"\{(\w+)\}", r"$\1", text) for text in REASON_TEXT.values()]
    own = prompt_fragments(*(t.sections[s] for s in ("system", "user", "retry") if s in t.sections))
    # Reasons are short phrases a real answer might contain ("it was empty"): only the long ones.
    return own + [f for f in prompt_fragments(*reasons, min_chars=30) if f not in own]


def answer_messages(
    book: PromptBook,
    conv: Conversation,
    human: str,
    thoughts: str | None,
    calls: Sequence[ToolCall],
    results: Sequence[ToolResult],
    retry: str | None = None,
    *,
    max_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """The answer call of a plugin turn: MOSS's reply given the real tool results. `max_tokens`
    (the call's limit) sets the length budget a `length` retry asks for."""
    t = book.get("plugin_answer")
    lang = language_name(conv.language)
    notes = []
    failed = failed_calls(results)
    if not calls:
        notes.append(t.render("none", language_name=lang))
    if any(r.name == "Search" and r.snippets for r in results):
        notes.append(t.render("search", language_name=lang))
    if any(r.name == "Text2Image" and r.ok for r in results):
        notes.append(t.render("image", language_name=lang))
    if failed:
        notes.append(
            t.render("failed", failed=", ".join(f'{r.name}("{r.arg}")' for r in failed), language_name=lang)
        )
    system = t.render("system", meta_instruction=meta_instruction(conv).rstrip("\n"), language_name=lang)
    user = t.render(
        "user",
        question=human,
        thoughts=thoughts or "None",
        commands=render_commands(list(calls)),
        results=results_text(results),
        notes="\n".join(notes),
        language_name=lang,
    )
    return [
        {"role": "system", "content": system},
        *history(conv.turns),
        {"role": "user", "content": _with_retry(t, user, retry, conv, max_tokens)},
    ]
