"""The `review` funnel step: apply a reviewer's decisions (`review.jsonl`) to a run's rows.

    rows, stats = apply_decisions(iter_conversations(run / "checked" / "kept.jsonl"), run / "review.jsonl",
                                  dropped=iter_conversations(run / "checked" / "rejected.jsonl"))
    stats.to_step()        # the funnel step; stats.pairs, stats.flagged

`review_stage(run_dir, kept, out)` is the same as a run's stage: it streams, writes the rows and
`review/pairs.jsonl`, and returns the stage info with the funnel step.

For each row, only the decisions made on the content it has now count (same `content_hash`); the
others are flagged (`stats.flagged`), never applied. Of those that count, the latest accept or reject
is the verdict and the latest edit of each turn replaces that turn's answer:

- rejected: the row leaves (the funnel counts it under the reviewer's reason);
- accepted: the row stays; one that an earlier step dropped (it is in `dropped`) comes back, so a
  threshold never overrules a reviewer;
- edited: the answer is replaced, the row is marked (`review_mark`) and the edit becomes a
  preference pair (edited answer chosen, original rejected) in TRL's conversational format.

Nothing here writes files: callers write the rows, the pairs (`write_pairs`) and the funnel step.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.formats.messages import to_messages
from datagen.io import iter_conversations, iter_json_lines, write_jsonl_atomic
from datagen.record import Conversation
from datagen.review.decisions import DECISIONS_FILE, Decision, content_hash, read_decisions

STEP_NAME = "review"
CHANGED = "the row changed since this decision"


@dataclass(slots=True)
class Flagged:
    """A decision that was not applied, and why."""

    decision: Decision
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"why": self.why, **self.decision.to_dict()}


@dataclass(slots=True)
class ReviewStats:
    """What the review step did. `in_` counts the rows that came in plus those brought back;
    `kept = in_ - rejected`."""

    in_: int = 0
    kept: int = 0
    rejected: int = 0
    accepted: int = 0
    rescued: int = 0
    edited: int = 0
    reasons: Counter = field(default_factory=Counter)
    flagged: list[Flagged] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def to_step(self) -> dict[str, Any]:
        """The funnel step (`{"step", "in", "kept", "dropped", "tagged", "reasons"}` plus the
        review's own counters)."""
        return {
            "step": STEP_NAME,
            "in": self.in_,
            "kept": self.kept,
            "dropped": self.rejected,
            "tagged": self.edited,
            "reasons": dict(self.reasons),
            "accepted": self.accepted,
            "rescued": self.rescued,
            "edited": self.edited,
            "flagged": len(self.flagged),
        }


@dataclass(slots=True)
class Resolution:
    """The decisions that count for one row as it is now."""

    hash: str
    verdict: Decision | None = None
    edits: dict[int, Decision] = field(default_factory=dict)
    flagged: list[Flagged] = field(default_factory=list)


class DecisionBook:
    """All decisions of a run, by row id, in the order they were made."""

    def __init__(self, decisions: Iterable[Decision]):
        self.by_id: dict[str, list[Decision]] = defaultdict(list)
        for d in decisions:
            self.by_id[d.id].append(d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DecisionBook:
        return cls(read_decisions(path))

    def resolve(self, conv: Conversation) -> Resolution | None:
        """The verdict and edits that apply to `conv` as it is now (None when it has no decision)."""
        decisions = self.by_id.get(conv.id)
        if not decisions:
            return None
        res = Resolution(hash=content_hash(conv))
        for d in decisions:
            if d.hash != res.hash:
                res.flagged.append(Flagged(d, CHANGED))
            elif d.decision == "edit":
                if d.turn >= len(conv.turns):
                    res.flagged.append(Flagged(d, f"the row has no turn {d.turn}"))
                else:
                    res.edits[d.turn] = d
            else:
                res.verdict = d
        return res

    def accepted_ids(self) -> set[str]:
        """Ids whose latest accept-or-reject is an accept (whatever their content): rows a later
        threshold must not drop. `apply_decisions` checks their content hash."""
        out = set()
        for row_id, decisions in self.by_id.items():
            verdicts = [d for d in decisions if d.decision != "edit"]
            if verdicts and verdicts[-1].decision == "accept":
                out.add(row_id)
        return out


def accepted_ids(decisions_path: str | os.PathLike) -> set[str]:
    """Ids of the rows a reviewer accepted (see `DecisionBook.accepted_ids`)."""
    return DecisionBook.load(decisions_path).accepted_ids()


def iter_apply(
    book: DecisionBook,
    rows: Iterable[Conversation],
    stats: ReviewStats,
    *,
    dropped: Iterable[Conversation] = (),
) -> Iterator[Conversation]:
    """Stream `rows` through the decisions (then the accepted rows of `dropped`), filling `stats`."""
    seen: set[str] = set()
    for conv in rows:
        seen.add(conv.id)
        stats.in_ += 1
        out = _apply_one(conv, book.resolve(conv), stats)
        if out is not None:
            yield out
    for conv in dropped:
        if conv.id in seen:
            continue
        seen.add(conv.id)
        res = book.resolve(conv)
        if res is None or res.verdict is None or res.verdict.decision != "accept":
            continue  # stays dropped; its other decisions are moot
        stats.in_ += 1
        stats.rescued += 1
        out = _apply_one(conv, res, stats)
        if out is not None:
            yield out


def apply_decisions(
    rows: Iterable[Conversation], decisions_path: str | os.PathLike, *, dropped: Iterable[Conversation] = ()
) -> tuple[list[Conversation], ReviewStats]:
    """Apply `review.jsonl` to `rows` (the rows the step before kept, in order) and bring back the
    accepted rows of `dropped` (rows earlier steps rejected; give their Conversations). Returns the
    rows that stay, edits applied, and the stats (funnel step, flagged decisions, preference pairs)."""
    stats = ReviewStats()
    kept = list(iter_apply(DecisionBook.load(decisions_path), rows, stats, dropped=dropped))
    return kept, stats


def _apply_one(conv: Conversation, res: Resolution | None, stats: ReviewStats) -> Conversation | None:
    if res is None:
        stats.kept += 1
        return conv
    stats.flagged.extend(res.flagged)
    if res.verdict is not None and res.verdict.decision == "reject":
        stats.rejected += 1
        stats.reasons[res.verdict.reason or "other"] += 1
        return None
    stats.kept += 1
    if res.verdict is None and not res.edits:
        return conv
    if res.verdict is not None:
        stats.accepted += 1
    conv = Conversation.from_dict(conv.to_dict())  # the caller's row stays as it was
    originals = {i: conv.turns[i].assistant for i in res.edits}
    for i, d in sorted(res.edits.items()):
        conv.turns[i].assistant = d.text
    if res.edits:
        stats.edited += 1
        for i, d in sorted(res.edits.items()):
            stats.pairs.append(preference_pair(conv, i, originals[i], d))
    _mark(conv, res)
    return conv


def _mark(conv: Conversation, res: Resolution) -> None:
    decisions = [*([res.verdict] if res.verdict else []), *res.edits.values()]
    mark: dict[str, Any] = {
        "decision": "edited" if res.edits else "accepted",
        "original_hash": res.hash,
        "who": sorted({d.who for d in decisions}),
        "when": max(d.when for d in decisions),
    }
    if res.edits:
        mark["edited_turns"] = sorted(res.edits)
    conv.tags[STEP_NAME] = mark["decision"]
    # The mark belongs in the lineage; `Lineage` has no field for it in older records, so it
    # rides in `extra` there.
    if hasattr(conv.lineage, "review"):
        conv.lineage.review = mark
    else:
        conv.extra[STEP_NAME] = mark


def review_mark(conv: Conversation) -> dict[str, Any] | None:
    """The review mark `apply_decisions` left on a row (decision, original_hash, who, when,
    edited_turns), or None."""
    return getattr(conv.lineage, "review", None) or conv.extra.get(STEP_NAME) or None


def preference_pair(conv: Conversation, turn: int, original: str, decision: Decision) -> dict[str, Any]:
    """A TRL conversational preference row for an edited answer: `prompt` is the dialogue up to
    that answer (meta instruction, earlier turns as they now are, this turn's human message and any
    commands and results), `chosen` the edited answer, `rejected` the original."""
    head = Conversation.from_dict(conv.to_dict())
    head.turns = head.turns[: turn + 1]
    record = to_messages(head, metadata=False)
    messages = record["messages"]
    answer = messages.pop()
    pair: dict[str, Any] = {
        "id": f"{conv.id}#{turn}",
        "prompt": messages,
        "chosen": [answer | {"content": decision.text}],
        "rejected": [answer | {"content": original}],
    }
    if "tools" in record:
        pair["tools"] = record["tools"]
    pair["datagen"] = {"source_id": conv.id, "turn": turn, "who": decision.who, "when": decision.when}
    return pair


def write_pairs(pairs: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write preference pairs as JSONL (atomically); returns how many."""
    return write_jsonl_atomic(path, pairs)


def rows_with_ids(paths: Iterable[str | os.PathLike], ids: set[str]) -> Iterator[Conversation]:
    """The rows of these files (missing ones are skipped) whose id is in `ids`; only those are
    parsed, so bringing back a few accepted rows does not parse every rejected one."""
    for path in paths:
        if not Path(path).exists():
            continue
        for line, obj in iter_json_lines(path):
            if isinstance(obj, dict) and str(obj.get("id")) in ids:
                try:
                    yield Conversation.from_dict(obj)
                except KeyError as exc:
                    raise InputError(
                        "missing required field", path=str(path), line=line, field=str(exc.args[0])
                    ) from None
                except (TypeError, ValueError, AttributeError) as exc:
                    raise InputError(str(exc), path=str(path), line=line) from None


def review_stage(
    run_dir: str | os.PathLike, kept: str | os.PathLike, out: str | os.PathLike
) -> dict[str, Any]:
    """The `review` stage of a run: apply `RUN_DIR/review.jsonl` to the rows of `kept` (the last
    stage's kept file), bringing back accepted rows from `filtered/rejected.jsonl` and
    `checked/rejected.jsonl`; write the rows to `out` and the pairs to `RUN_DIR/review/pairs.jsonl`
    (both atomically). Returns the stage info: `count`, `funnel_step`, `flagged` (decisions not
    applied, with why)."""
    run_dir = Path(run_dir)
    book = DecisionBook.load(run_dir / DECISIONS_FILE)
    stats = ReviewStats()
    dropped = rows_with_ids(
        [run_dir / "filtered" / "rejected.jsonl", run_dir / "checked" / "rejected.jsonl"], book.accepted_ids()
    )
    count = write_jsonl_atomic(out, iter_apply(book, iter_conversations(kept), stats, dropped=dropped))
    write_pairs(stats.pairs, run_dir / "review" / "pairs.jsonl")
    return {"count": count, "funnel_step": stats.to_step(), "flagged": [f.to_dict() for f in stats.flagged]}
