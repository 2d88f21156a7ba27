"""Candidate answers for the assistant turns of kept dialogues.

A candidate is the whole turn as it would be with another answer (a `Turn`): usually the turn's
own thoughts, commands and results with a new answer, so a pair of them differs only in the answer;
a `wrong_command` candidate also carries its own commands and the results they really returned.

    slots = [Slot(conv, i) for conv in convs for i in select_turns(conv, "all")]
    ready, asks, skipped = plan_candidates(slot, config, book, teacher, tools)   # original + calls to make

Sources (see `PreferenceConfig.sources`): `original` is the kept answer itself; `teacher` asks the
answer template of generation (`hhh_assistant` / `plugin_answer`: "the same prompts") at each
temperature, `samples` times each (`Request.sample` keeps the samples apart in the journal);
`server` sends the dialogue as plain chat messages; `local` samples a local model (`local.py`).
Contrastive candidates (plugin turns with commands only): `failed_as_success` where a tool returned
nothing, `ignore_results` where one returned something, `wrong_command` where another command can be
made (another enabled tool, or a number of the argument shifted) and run.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from datagen.generate.common import rng_for
from datagen.generate.parsing import clean_reply
from datagen.generate.prompts import (
    PromptBook,
    answer_messages,
    assistant_messages,
    enabled_commands,
    failed_calls,
)
from datagen.generate.templates import Template
from datagen.preference.config import PreferenceConfig, SourceConfig
from datagen.preference.prompts import contrastive_messages, head_of, server_messages
from datagen.record import Conversation, ToolCall, Turn
from datagen.teacher.config import TeacherConfig
from datagen.teacher.types import Request

#: The journal's template id of `server` requests (plain chat messages, no template file).
SERVER_PROMPT = "preference-server-chat.v1"
_NUMBER = re.compile(r"\d+")


@dataclass(slots=True)
class Slot:
    """One assistant turn to find candidates for: turn `index` of `conv`."""

    conv: Conversation
    index: int

    @property
    def key(self) -> str:
        return f"{self.conv.id}#{self.index}"

    @property
    def turn(self) -> Turn:
        return self.conv.turns[self.index]

    def head(self) -> Conversation:
        """The dialogue before this turn."""
        return head_of(self.conv, self.index)


@dataclass(slots=True)
class Candidate:
    """One candidate turn of a slot and where it came from (`source`, unique within the slot)."""

    slot: str
    source: str
    turn: Turn
    contrastive: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "source": self.source,
            "contrastive": self.contrastive,
            "turn": self.turn.to_dict(),
        }


@dataclass(slots=True)
class Ask:
    """A teacher call whose reply becomes a candidate: `turn` with the reply as its answer."""

    slot: Slot
    source: str
    endpoint: TeacherConfig
    request: Request
    turn: Turn
    contrastive: str | None = None


def select_turns(conv: Conversation, mode: str) -> list[int]:
    """The indices of the turns that get candidates: those with an answer, all of them or the
    first or last one."""
    answered = [i for i, t in enumerate(conv.turns) if t.assistant.strip()]
    if mode == "first":
        return answered[:1]
    if mode == "last":
        return answered[-1:]
    return answered


def endpoint_for(teacher: TeacherConfig, base_url: str | None, api_key_env: str | None) -> TeacherConfig:
    """The teacher config of another endpoint (the run's own when neither is given)."""
    changes = {k: v for k, v in (("base_url", base_url), ("api_key_env", api_key_env)) if v}
    return dataclasses.replace(teacher, **changes) if changes else teacher


def accept_answer(text: str | None) -> tuple[str, str | None]:
    """The answer in a reply (role prefixes and end tags removed), or why there is none."""
    return clean_reply(text, role="assistant")


def with_answer(turn: Turn, answer: str, **changes: Any) -> Turn:
    """A copy of `turn` with another answer (and any other field changed)."""
    copy = Turn.from_dict(turn.to_dict())
    copy.assistant = answer
    copy.raw = {}
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


def sample_label(label: str, temperature: float, sample: int, samples: int) -> str:
    """`teacher@0.7`, or `teacher@0.7#1` when a temperature has several samples."""
    return f"{label}@{temperature:g}" + (f"#{sample}" if samples > 1 else "")


def _sampling(config: PreferenceConfig, source: SourceConfig, temperature: float) -> dict[str, Any]:
    return {
        "temperature": temperature,
        "top_p": source.top_p if source.top_p is not None else config.top_p,
        "max_tokens": source.max_tokens or config.max_tokens,
    }


def shift_number(arg: str, rng: Any) -> str | None:
    """`arg` with one of its numbers changed (`23*47+12` -> `23*49+12`); None when it has none."""
    found = list(_NUMBER.finditer(arg))
    if not found:
        return None
    m = rng.choice(found)
    return arg[: m.start()] + str(int(m.group(0)) + rng.randint(1, 9)) + arg[m.end() :]


def wrong_calls(calls: list[ToolCall], enabled: list[str], rng: Any) -> list[ToolCall] | None:
    """The turn's commands made wrong: each call goes to another enabled tool with the same
    argument, or, with one tool enabled, gets a number of its argument shifted. None when no call
    can be made wrong."""
    out, changed = [], False
    for call in calls:
        others = [name for name in enabled if name != call.name]
        if others:
            out.append(ToolCall(name=rng.choice(others), arg=call.arg))
            changed = True
        elif (arg := shift_number(call.arg, rng)) is not None:
            out.append(ToolCall(name=call.name, arg=arg))
            changed = True
        else:
            out.append(call)
    return out if changed else None


def plan_candidates(
    slot: Slot,
    config: PreferenceConfig,
    book: PromptBook,
    contrastive: Template,
    teacher: TeacherConfig,
    tools: Any = None,
) -> tuple[list[Candidate], list[Ask], Counter]:
    """The candidates a slot has at once (`original`) and the teacher calls that make the others.
    `tools` (plugin -> Tool) runs the wrong commands; without it none are made. The Counter holds
    contrastive candidates that could not be made, by reason (`skipped_<kind>_<why>`)."""
    ready: list[Candidate] = []
    asks: list[Ask] = []
    skipped: Counter = Counter()
    conv, turn, head = slot.conv, slot.turn, slot.head()
    plugin = bool(conv.plugins)
    template = book.get("plugin_answer" if plugin else "hhh_assistant")
    for source in config.sources:
        if source.kind == "original":
            ready.append(Candidate(slot.key, source.label, with_answer(turn, turn.assistant)))
            continue
        if source.kind not in ("teacher", "server"):
            continue  # local sources are sampled apart (datagen.preference.local)
        endpoint = endpoint_for(teacher, source.base_url, source.api_key_env)
        for temperature in source.temperatures:
            params = _sampling(config, source, temperature)
            if source.kind == "server":
                messages, version = server_messages(head, turn), SERVER_PROMPT
            elif plugin:
                messages = answer_messages(
                    book,
                    head,
                    turn.human,
                    turn.thoughts,
                    turn.calls,
                    turn.results,
                    max_tokens=params["max_tokens"],
                )
                version = template.id
            else:
                messages = assistant_messages(book, head, turn.human, max_tokens=params["max_tokens"])
                version = template.id
            for s in range(source.samples):
                label = sample_label(source.label, temperature, s, source.samples)
                request = Request(
                    messages=messages,
                    params=params,
                    model=source.model,
                    template_version=version,
                    sample=s,
                    tag=(slot.key, label),
                )
                asks.append(Ask(slot, label, endpoint, request, with_answer(turn, "")))
    if plugin and turn.calls:
        for kind in config.contrastive:
            ask, why = _contrastive(kind, slot, head, config, book, contrastive, teacher, tools)
            if ask is not None:
                asks.append(ask)
            else:
                skipped[f"skipped_{kind}_{why}"] += 1
    return ready, asks, skipped


def _contrastive(
    kind: str,
    slot: Slot,
    head: Conversation,
    config: PreferenceConfig,
    book: PromptBook,
    t: Template,
    teacher: TeacherConfig,
    tools: Any,
) -> tuple[Ask | None, str]:
    turn = slot.turn
    params = {
        "temperature": config.contrastive_temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
    }
    failed = failed_calls(turn.results)
    label = f"contrastive:{kind}"
    if kind == "failed_as_success":
        if not failed:
            return None, "no_failed_tool"
        messages, version, cand = contrastive_messages(t, head, turn, kind), t.id, with_answer(turn, "")
    elif kind == "ignore_results":
        if len(failed) == len(turn.results):
            return None, "no_results"
        messages, version, cand = contrastive_messages(t, head, turn, kind), t.id, with_answer(turn, "")
    else:  # wrong_command
        if not tools:
            return None, "no_tools"
        wrong = wrong_calls(
            turn.calls, enabled_commands(slot.conv), rng_for(config.seed, "wrong-command", slot.key)
        )
        if wrong is None:
            return None, "no_other_command"
        from datagen.tools.base import ToolUnavailableError, run_calls

        try:
            results = run_calls(tools, wrong)
        except ToolUnavailableError:  # a backend down or too slow: no such candidate this time
            return None, "tool_unavailable"
        flags = ["tool_failed"] if failed_calls(results) else []
        messages = answer_messages(
            book, head, turn.human, turn.thoughts, wrong, results, max_tokens=config.max_tokens
        )
        version = book.get("plugin_answer").id
        cand = with_answer(turn, "", calls=wrong, results=results, flags=flags)
    request = Request(messages=messages, params=params, template_version=version, tag=(slot.key, label))
    return Ask(slot, label, teacher, request, cand, contrastive=kind), ""


def dedupe(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
    """Candidates of one slot without repeats (same answer, ignoring spacing and case, and the
    same commands): the first of each is kept. Returns (kept, how many were dropped)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for c in candidates:
        key = ("".join(c.turn.assistant.split()).lower(), repr([x.to_dict() for x in c.turn.calls]))
        if key in seen:
            continue
        seen.add(key)
        kept.append(c)
    return kept, len(candidates) - len(kept)


def judge_pairs(candidates: list[Candidate], limit: int | None = None) -> list[tuple[Candidate, Candidate]]:
    """The pairs of a slot to judge: every two candidates but two contrastive ones (both are made
    to be worse: their order teaches nothing), at most `limit`."""
    pairs = [
        (a, b)
        for i, a in enumerate(candidates)
        for b in candidates[i + 1 :]
        if not (a.contrastive and b.contrastive)
    ]
    return pairs[:limit] if limit else pairs
