"""A reviewer's decisions, one JSON line each in `RUN_DIR/review.jsonl`, appended and never rewritten:

    {"id": "hhh-s1", "hash": "3f2a...", "decision": "reject", "reason": "wrong_answer", "note": "...",
     "who": "ana", "when": "2025-05-01T10:00:00+00:00"}
    {"id": "plugin-s9", "hash": "...", "decision": "edit", "turn": 0, "text": "the corrected answer", ...}
    {"id": "hhh-s2", "hash": "...", "decision": "accept", ...}

`hash` is the `content_hash` of the row as the reviewer saw it: a decision whose row has changed
since (a rerun made another dialogue under the same id) is flagged rather than applied.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.io import AppendWriter, iter_json_lines
from datagen.record import Conversation

DECISIONS_FILE = "review.jsonl"
KINDS = ("accept", "reject", "edit")
#: Reasons a reviewer picks from when rejecting (the funnel counts them); `note` says the rest.
REJECT_REASONS = (
    "wrong_answer",
    "unhelpful",
    "unsafe",
    "tool_misuse",
    "wrong_language",
    "formatting",
    "duplicate",
    "other",
)


def content_hash(conv: Conversation) -> str:
    """A hash of what a reviewer reads: every turn's human message, inner thoughts, commands, results
    and answer (not scores, tags or lineage, which later stages add)."""
    turns = [{k: v for k, v in t.to_dict().items() if k not in ("raw", "flags")} for t in conv.turns]
    blob = json.dumps(turns, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(slots=True)
class Decision:
    """One decision on one row. `turn` and `text` belong to edits (the 0-based turn whose answer is
    replaced, and the new answer); `reason` (one of REJECT_REASONS) to rejections."""

    id: str
    hash: str
    decision: str
    who: str
    when: str
    reason: str | None = None
    note: str | None = None
    turn: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in KINDS:
            raise ValueError(f"decision must be one of {', '.join(KINDS)}, got {self.decision!r}")
        if self.decision == "edit" and (
            not isinstance(self.turn, int)
            or isinstance(self.turn, bool)
            or self.turn < 0
            or not isinstance(self.text, str)
        ):
            raise ValueError("an edit needs `turn` (a turn index from 0) and `text` (the new answer)")
        if self.decision == "reject" and not self.reason:
            raise ValueError("a rejection needs a `reason`")

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("id", self.id),
                ("hash", self.hash),
                ("decision", self.decision),
                ("reason", self.reason),
                ("note", self.note),
                ("turn", self.turn),
                ("text", self.text),
                ("who", self.who),
                ("when", self.when),
            )
            if v is not None
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        if not isinstance(d, dict):
            raise TypeError(f"a decision must be a JSON object, got {type(d).__name__}")
        return cls(
            id=str(d["id"]),
            hash=str(d["hash"]),
            decision=d["decision"],
            who=str(d.get("who", "")),
            when=str(d.get("when", "")),
            reason=d.get("reason"),
            note=d.get("note"),
            turn=d.get("turn"),
            text=d.get("text"),
        )


def read_decisions(path: str | os.PathLike) -> list[Decision]:
    """Every decision in a review.jsonl, in the order they were made ([] when there is no file).
    A bad line raises InputError naming the file, line and field."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line, obj in iter_json_lines(path):
        try:
            out.append(Decision.from_dict(obj))
        except KeyError as exc:
            raise InputError(
                "missing required field", path=str(path), line=line, field=str(exc.args[0])
            ) from None
        except (TypeError, ValueError) as exc:
            raise InputError(str(exc), path=str(path), line=line) from None
    return out


def append_decision(path: str | os.PathLike, decision: Decision) -> None:
    """Append one decision (one flushed, fsynced line: a killed server loses nothing written)."""
    with AppendWriter(path) as w:
        w.write(decision)
