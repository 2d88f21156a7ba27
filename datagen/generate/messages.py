"""Building the chat messages of each teacher role from the template files.

Pure functions of the dialogue state: the same state always gives the same messages, so a rerun
sends requests the journal already answered. Parsing the replies lives in `parsing.py`.

Roles:
    assistant   MOSS answers (HHH)                       hhh_assistant + guidance/<category>
    user        the simulated user writes the next turn   hhh_user + guidance/<category>
    plan        MOSS's inner thoughts and commands        plugin_commands
    answer      MOSS answers from the tool results        plugin_answer
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.formats.commands import NO_RESULT, RESULTS_END, RESULTS_TAG, render_commands, render_results
from datagen.formats.meta import build_meta_instruction
from datagen.generate.common import language_name
from datagen.generate.config import normalize_category
from datagen.generate.templates import Template, find_template, load_template
from datagen.record import PLUGIN_COMMANDS, Conversation, ToolCall, ToolResult, Turn

#: What a rejected reply is told, by reason code (the `retry` section fills `$reason` with it).
REASON_TEXT = {
    "empty": "it was empty",
    "length": "it was cut off at the length limit; be more concise",
    "content_filter": "it was blocked by the content filter",
    "empty_text": "it was empty",
    "bad_request": "the request was refused",
    "wrong_language": "it was not written in {language}",
    "repeat": "it repeated an earlier message",
    "echo": "it copied MOSS's reply instead of writing the user's next message",
    "no_commands_line": "it had no `Commands:` line",
    "disabled_tool": "it called a tool that is not enabled",
}

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


def reason_text(reason: str, language: str | None = None) -> str:
    """The sentence a retry prompt uses for a rejection reason code."""
    return REASON_TEXT.get(reason, reason).format(language=language_name(language))


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
        for name in (f"guidance/{category}" if category else None, f"guidance/{normalize_category(category)}"):
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


def _with_retry(t: Template, text: str, reason: str | None, conv: Conversation) -> str:
    if reason is None or not t.has("retry"):
        return text
    return text + "\n" + t.render("retry", reason=reason_text(reason, conv.language),
                                  language_name=language_name(conv.language))


def assistant_messages(book: PromptBook, conv: Conversation, human: str, retry: str | None = None
                       ) -> list[dict[str, Any]]:
    """MOSS's answer to `human` in an HHH dialogue, after `conv.turns`."""
    t = book.get("hhh_assistant")
    system = t.render("system", meta_instruction=meta_instruction(conv).rstrip("\n"),
                      guidance=_guidance(book, conv, "assistant"), language_name=language_name(conv.language))
    return [{"role": "system", "content": _with_retry(t, system, retry, conv)},
            *history(conv.turns), {"role": "user", "content": human}]


def user_messages(book: PromptBook, conv: Conversation, turn_no: int, turns_total: int,
                  retry: str | None = None) -> list[dict[str, Any]]:
    """The simulated user's message number `turn_no` (of `turns_total`), after `conv.turns`."""
    t = book.get("hhh_user")
    lang = language_name(conv.language)
    system = t.render("system", language_name=lang, guidance=_guidance(book, conv, "user"))
    user = t.render("user", transcript=transcript(conv.turns), turn=turn_no, turns=turns_total, language_name=lang)
    return [{"role": "system", "content": system}, {"role": "user", "content": _with_retry(t, user, retry, conv)}]


def enabled_commands(conv: Conversation) -> list[str]:
    """MOSS command names of the dialogue's plugins, in MOSS order."""
    return [PLUGIN_COMMANDS[p] for p in PLUGIN_COMMANDS if p in conv.plugins]


def plan_messages(book: PromptBook, conv: Conversation, human: str, retry: str | None = None
                  ) -> list[dict[str, Any]]:
    """The planning call of a plugin turn: inner thoughts and commands for `human`."""
    t = book.get("plugin_commands")
    cmds = enabled_commands(conv)
    system = t.render("system", meta_instruction=meta_instruction(conv).rstrip("\n"),
                      tools="\n".join(TOOL_LINES[c] for c in cmds),
                      examples=", ".join(TOOL_EXAMPLES[c] for c in cmds),
                      language_name=language_name(conv.language))
    return [{"role": "system", "content": _with_retry(t, system, retry, conv)},
            *history(conv.turns), {"role": "user", "content": human}]


def results_text(results: Sequence[ToolResult]) -> str:
    """The tool results as MOSS writes them inside `<|Results|>:...<eor>` (`None` when no call)."""
    seg = render_results(results, plugin_style=True)
    body = seg[len(RESULTS_TAG):]
    if body.endswith(RESULTS_END):
        body = body[: -len(RESULTS_END)]
    return body.strip("\n").strip() or "None"


def failed_calls(results: Sequence[ToolResult]) -> list[ToolResult]:
    """Results whose tool gave nothing (MOSS's `No result.`)."""
    return [r for r in results if not r.ok or r.output.strip().strip("'") == NO_RESULT]


def answer_messages(book: PromptBook, conv: Conversation, human: str, thoughts: str | None,
                    calls: Sequence[ToolCall], results: Sequence[ToolResult], retry: str | None = None
                    ) -> list[dict[str, Any]]:
    """The answer call of a plugin turn: MOSS's reply given the real tool results."""
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
        notes.append(t.render("failed", failed=", ".join(f'{r.name}("{r.arg}")' for r in failed),
                              language_name=lang))
    system = t.render("system", meta_instruction=meta_instruction(conv).rstrip("\n"), language_name=lang)
    user = t.render("user", question=human, thoughts=thoughts or "None", commands=render_commands(list(calls)),
                    results=results_text(results), notes="\n".join(notes), language_name=lang)
    return [{"role": "system", "content": system}, *history(conv.turns),
            {"role": "user", "content": _with_retry(t, user, retry, conv)}]
