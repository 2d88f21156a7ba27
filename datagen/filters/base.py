"""The filter step base class, its verdicts and its counters.

A step is one small class with a `name` and a predicate `filter(conv)` returning `True` (keep) or
`(False, reason)` / `(False, reason, evidence)` / a `Verdict`. The base class applies the step's
policy and counts what it did:

- `drop`: the row leaves the stream (it goes to `rejected.jsonl` with step, reason, evidence);
- `tag`: the row stays, `conv.tags[step] = reason` (and `conv.tags[step + ".evidence"]`);
- `redact`: the step rewrites the offending spans (`redact(conv, verdict)`) and the row stays; a
  verdict the step cannot redact (e.g. harmful compliance) is dropped instead.

Stateful steps (dedup indexes, LLM judges) split their work in two: `prepare(conv)` runs in worker
processes (signatures, hashes, keyword hits) and `decide_batch(items)` runs in the main process,
in input order. Stateless steps only implement `filter`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datagen.errors import ConfigError
from datagen.record import Conversation

POLICIES = ("drop", "tag", "redact")


@dataclass(slots=True)
class Verdict:
    """A step's decision on one row. `evidence` is JSON-able (matched text, scores, checker name);
    `duplicate_of` is the id of the row a dropped duplicate repeats. Filters must not mutate the row."""

    keep: bool
    reason: str | None = None
    evidence: Any = None
    duplicate_of: str | None = None
    #: Fields to set on the row whatever the policy (e.g. `{"language": "zh-Hans"}`): filters run in
    #: worker processes, so they report changes instead of mutating the row.
    updates: dict[str, Any] | None = None

    @classmethod
    def of(cls, result: bool | tuple | Verdict) -> Verdict:
        """Normalise a filter's return value (`True`, `False`, `(False, reason[, evidence])`)."""
        if isinstance(result, Verdict):
            return result
        if isinstance(result, bool):
            return KEEP if result else cls(False, "dropped")
        if isinstance(result, tuple) and result and isinstance(result[0], bool):
            if result[0]:
                return KEEP
            reason = result[1] if len(result) > 1 else "dropped"
            evidence = result[2] if len(result) > 2 else None
            return cls(False, reason, evidence)
        raise TypeError(f"a filter must return bool, (bool, reason[, evidence]) or Verdict, got {result!r}")


KEEP = Verdict(True)

FilterResult = bool | tuple | Verdict


@dataclass(slots=True)
class StepStats:
    """Counters of one step; `+` sums shards. `in_` is written `in` in JSON."""

    step: str
    in_: int = 0
    kept: int = 0
    dropped: int = 0
    tagged: int = 0
    redacted: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def __add__(self, other: StepStats) -> StepStats:
        if other.step != self.step:
            raise ValueError(f"cannot add stats of {other.step!r} to {self.step!r}")
        return StepStats(self.step, self.in_ + other.in_, self.kept + other.kept, self.dropped + other.dropped,
                         self.tagged + other.tagged, self.redacted + other.redacted,
                         self.reasons + other.reasons, self.seconds + other.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "in": self.in_, "kept": self.kept, "dropped": self.dropped,
                "tagged": self.tagged, "redacted": self.redacted,
                "reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        return cls(d["step"], d.get("in", 0), d.get("kept", 0), d.get("dropped", 0), d.get("tagged", 0),
                   d.get("redacted", 0), Counter(d.get("reasons", {})), d.get("seconds", 0.0))


class BaseFilter:
    """Base of every filter step.

    Args:
        policy: `drop` (default), `tag` or `redact` (only for steps with `supports_redact`).

    Subclasses set `name` and implement `filter(conv)`; stateful ones set `stateful = True` and
    implement `prepare` and `decide_batch` instead.
    """

    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    supports_redact: ClassVar[bool] = False

    def __init__(self, *, policy: str = "drop"):
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})", field="policy")
        if policy == "redact" and not self.supports_redact:
            raise ConfigError(f"step {self.name!r} cannot redact; use drop or tag", field="policy")
        self.policy = policy
        self.step_name = self.name  # the name in the funnel; a config may run one type twice
        self.stats = StepStats(self.name)

    # -- what subclasses implement -----------------------------------------------------------------

    def filter(self, conv: Conversation) -> FilterResult:
        """Keep (`True`) or drop (`(False, reason[, evidence])`) one conversation."""
        raise NotImplementedError

    def prepare(self, conv: Conversation) -> Any:
        """Stateful steps: the part of the work that can run in a worker (signatures, hashes)."""
        return None

    def prepare_batch(self, convs: list[Conversation]) -> list[Any]:
        """`prepare` for many rows (override to vectorise)."""
        return [self.prepare(c) for c in convs]

    def decide_batch(self, items: list[tuple[Conversation, Any]]) -> list[Verdict]:
        """Stateful steps: verdicts for (conv, prepare(conv)) pairs, in input order, in the main
        process."""
        return [Verdict.of(self.filter(conv)) for conv, _ in items]

    def redact(self, conv: Conversation, verdict: Verdict) -> Conversation | None:
        """Return conv with the offending spans rewritten, or None when this verdict cannot be
        redacted (the row is then dropped)."""
        return None

    # -- policy and counting -----------------------------------------------------------------------

    def apply(self, conv: Conversation, verdict: Verdict) -> tuple[Conversation | None, Verdict]:
        """Count the verdict and apply the policy: (row to keep or None, verdict). The returned
        verdict is the one to record on a dropped row."""
        st = self.stats
        st.in_ += 1
        if verdict.updates:
            for k, v in verdict.updates.items():
                setattr(conv, k, v)
        if verdict.keep:
            st.kept += 1
            return conv, verdict
        reason = verdict.reason or "dropped"
        st.reasons[reason] += 1
        if self.policy == "tag":
            conv.tags[self.step_name] = reason
            if verdict.evidence is not None:
                conv.tags[self.step_name + ".evidence"] = verdict.evidence
            if verdict.duplicate_of is not None:
                conv.tags[self.step_name + ".duplicate_of"] = verdict.duplicate_of
            st.tagged += 1
            st.kept += 1
            return conv, verdict
        if self.policy == "redact":
            redacted = self.redact(conv, verdict)
            if redacted is not None:
                redacted.tags[self.step_name] = f"redacted:{reason}"
                st.redacted += 1
                st.kept += 1
                return redacted, verdict
        st.dropped += 1
        return None, verdict

    def __call__(self, rows: Iterable[Conversation],
                 on_reject: Callable[[Conversation, Verdict], None] | None = None) -> Iterator[Conversation]:
        """Filter a stream in this process (datatrove style); rejected rows go to on_reject."""
        for conv in rows:
            t0 = time.perf_counter()
            if self.stateful:
                verdict = self.decide_batch([(conv, self.prepare(conv))])[0]
            else:
                verdict = Verdict.of(self.filter(conv))
            out, verdict = self.apply(conv, verdict)
            self.stats.seconds += time.perf_counter() - t0
            if out is not None:
                yield out
            elif on_reject is not None:
                on_reject(conv, verdict)
