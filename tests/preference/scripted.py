"""A scripted teacher and judge for the preference tests, on the fake OpenAI server.

Candidate answers carry a quality mark the scripted judge reads: `[good]` (9 points), `[ok]` (5),
`[bad]` (2). The teacher's answer templates give `[good]` at temperatures up to 0.5 and `[ok]`
above; contrastive prompts get `[bad]` answers that misuse the tools; the judge scores the two
answers it is shown by their marks, plus `bias` points for whichever it reads first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_server import last_user_text
from tests.generate.scripted_teacher import ANSWER, ASSISTANT

JUDGE = "You are an impartial judge"
AS_IF_SUCCEEDED = "as if every command had succeeded"
IGNORE_RESULTS = "from your own memory only"
MARKS = {"[good]": 9, "[ok]": 5, "[bad]": 2}


def _system(request: dict[str, Any]) -> str:
    return next((m["content"] for m in request["messages"] if m["role"] == "system"), "")


def _answer(user: str, which: str) -> str:
    m = re.search(rf"\[Answer {which}\]\n(.*?)\n\[End of answer {which}\]", user, re.S)
    assert m, user
    return m.group(1)


def mark_score(text: str) -> int:
    return next((v for k, v in MARKS.items() if k in text), 5)


@dataclass
class Script:
    """The responder: `bias` points go to the answer shown first; `judge_text` replaces the judge's
    reply (e.g. prose without scores); `requests` keeps every request's role."""

    bias: float = 0.0
    judge_text: str | None = None
    roles: list[str] = field(default_factory=list)

    def __call__(self, request: dict[str, Any]) -> str:
        system, user = _system(request), last_user_text(request)
        temperature = request.get("temperature", 0.7)
        if JUDGE in system:
            self.roles.append("judge")
            if self.judge_text is not None:
                return self.judge_text
            a, b = mark_score(_answer(user, "A")) + self.bias, mark_score(_answer(user, "B"))
            return "```json\n" + json.dumps({"score_a": a, "score_b": b, "reason": "marks"}) + "\n```"
        if AS_IF_SUCCEEDED in user:
            self.roles.append("failed_as_success")
            return "MOSS: [bad] The result is exactly 1093, no doubt about it."
        if IGNORE_RESULTS in user:
            self.roles.append("ignore_results")
            return "[bad] From memory it is about a thousand or so."
        if ANSWER in system:
            self.roles.append("answer")
            results = user.split("Tool results:\n", 1)[1].split("\n\n", 1)[0].strip()
            mark = "[good]" if temperature <= 0.5 else "[ok]"
            return f"MOSS: {mark} From the results ({results.splitlines()[0]}), at t={temperature:g}.<eom>"
        if ASSISTANT in system:
            self.roles.append("assistant")
            mark = "[good]" if temperature <= 0.5 else "[ok]"
            return f'{mark} About "{user[:30]}" at t={temperature:g}.'
        self.roles.append("server")
        return f"[ok] A plain server answer at t={temperature:g}."
