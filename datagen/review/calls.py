"""Which teacher calls made which dialogue.

The journal keys calls by request hash and keeps no dialogue id, but every call a dialogue makes
(assistant, simulated user, plan, answer, safety judge, and their content retries) carries that
dialogue's first user message in its messages. One Aho-Corasick pass over the journal finds, for
each call, the dialogues whose first message it contains. Expansion calls quote seed prompts as
examples, so they are left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ahocorasick

from datagen.teacher.journal import Journal

#: Shorter first messages ("hi") would match unrelated calls.
MIN_CHARS = 6
_NOT_DIALOGUE = ("expand",)


@dataclass(slots=True)
class CallInfo:
    """What the review page shows of one teacher call."""

    key: str
    status: str
    template: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency: float | None
    attempts: int
    error: str | None
    created: float
    request: str  # the last message sent, for context
    response: str | None

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.status,
            self.template,
            self.model,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost,
            self.latency,
            self.attempts,
            self.error,
            self.created,
            self.request,
            self.response,
        )


CALL_COLUMNS = (
    "key",
    "status",
    "template",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "latency",
    "attempts",
    "error",
    "created",
    "request",
    "response",
)


def link_calls(
    journal_path: Path, first_messages: Mapping[str, list[str]]
) -> Iterator[tuple[list[str], CallInfo]]:
    """For each journal call that carries one of `first_messages` (text -> dialogue ids), yield the
    ids of those dialogues and the call. Streams the journal once."""
    if not journal_path.exists() or not first_messages:
        return
    automaton = ahocorasick.Automaton()
    for text, ids in first_messages.items():
        if len(text) >= MIN_CHARS:
            automaton.add_word(text, ids)
    if len(automaton) == 0:
        return
    automaton.make_automaton()
    for entry in Journal(journal_path).entries():
        template = str(entry.request.get("template_version") or "")
        if template.startswith(_NOT_DIALOGUE):
            continue
        messages = entry.request.get("messages") or []
        text = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
        ids: list[str] = []
        for _, found in automaton.iter(text):
            ids.extend(i for i in found if i not in ids)
        if ids:
            last = messages[-1].get("content") if messages else ""
            yield (
                ids,
                CallInfo(
                    key=entry.key,
                    status=entry.status,
                    template=template,
                    model=entry.model,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    cost=entry.paid_cost or entry.cost,
                    latency=entry.latency,
                    attempts=entry.attempts,
                    error=entry.error,
                    created=entry.created,
                    request=last if isinstance(last, str) else "",
                    response=entry.response,
                ),
            )
