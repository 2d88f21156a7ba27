"""A scripted judge for the fake OpenAI server: it answers a `judge` step's requests the way a real
judge would (the JSON skeleton of the request, filled in), with scores written into the dialogues.

A turn (any of its text) holds markers:

    JUDGE:helpful=2        this turn's `helpful` score (others default to `default`)
    JUDGE:garbage          the first reply is prose, the re-ask gets a good one
    JUDGE:garbage2         both replies are prose (the row fails as judge_unparseable)

The dialogue score of a criterion is the lowest turn score. A request for another model than the
judge's (`second_model`) gets every score lowered by `second_offset`, clamped to 1..5.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_TURN = re.compile(r"^\[Turn (\d+)\]\n", re.M)
_MARK = re.compile(r"JUDGE:([a-z_]+)=(\d)")


def _skeleton(user: str) -> dict[str, Any]:
    start = user.index('{"turns"')
    return json.loads(user[start:])


def _turn_blocks(user: str) -> dict[int, str]:
    parts = _TURN.split(user.split(">>>\n\nThe dialogue", 1)[-1])
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def scripted_judge(
    *,
    default: int = 5,
    second_model: str | None = None,
    second_offset: int = 1,
    score: Callable[[int, str, str], int] | None = None,
) -> Callable[[dict[str, Any]], str]:
    """The responder. `score(turn, criterion, block_text)` may replace the marker rule."""

    def respond(body: dict[str, Any]) -> str:
        messages = body["messages"]
        user = messages[1]["content"]
        retry = len(messages) > 2
        skeleton = _skeleton(user)
        blocks = _turn_blocks(user)
        text = "\n".join(blocks.values())
        if "JUDGE:garbage2" in text or ("JUDGE:garbage" in text and not retry):
            return "This dialogue looks good to me, I would give it a 4."
        criteria = [c for c in skeleton["dialogue"]]
        out_turns = []
        for item in skeleton["turns"]:
            n = item["turn"]
            block = blocks.get(n, "")
            marks = dict(_MARK.findall(block))
            row: dict[str, Any] = {"turn": n}
            for c in criteria:
                s = score(n, c, block) if score else int(marks.get(c, default))
                if second_model and body.get("model") == second_model:
                    s = max(1, min(5, s - second_offset))
                row[c] = {"score": s, "reason": f"turn {n} {c} scored {s}."}
            out_turns.append(row)
        dialogue = {
            c: {"score": min(t[c]["score"] for t in out_turns), "reason": f"weakest turn for {c}."}
            for c in criteria
        }
        return json.dumps({"turns": out_turns, "dialogue": dialogue})

    return respond
