"""The filter step base class: policies (tag, redact) and stateful prepare/decide on top of
`datagen.stage.Filter`, whose verdicts and counters it uses.

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

Dedup steps (`global_dedup`) can also be decided over the whole stream at once by a
`datagen.stage.DedupBackend` (the Ray executor's): `global_input(conv)` is what the backend
compares, `decide_global` asks it, `global_verdict` is the verdict of a row it found repeating
another; the verdicts are the ones `decide_batch` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from datagen.errors import ConfigError
from datagen.record import Conversation
from datagen.stage import KEEP, DedupBackend, Filter, FilterResult, Verdict

__all__ = ["KEEP", "POLICIES", "BaseFilter", "FilterResult", "Verdict"]  # Verdict lives in datagen.stage

POLICIES = ("drop", "tag", "redact")


class BaseFilter(Filter):
    """Base of every filter step.

    Args:
        policy: `drop` (default), `tag` or `redact` (only for steps with `supports_redact`).

    Subclasses set `name` and implement `filter(conv)`; stateful ones set `stateful = True` and
    implement `prepare` and `decide_batch` instead.
    """

    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    supports_redact: ClassVar[bool] = False
    #: A keep-first dedup a `DedupBackend` may decide over the whole stream (see the module docstring).
    global_dedup: ClassVar[bool] = False

    def __init__(self, *, policy: str = "drop"):
        if policy not in POLICIES:
            raise ConfigError(
                f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})", field="policy"
            )
        if policy == "redact" and not self.supports_redact:
            raise ConfigError(f"step {self.name!r} cannot redact; use drop or tag", field="policy")
        super().__init__()
        self.policy = policy

    # -- what subclasses implement -----------------------------------------------------------------

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

    def verdict(self, conv: Conversation) -> Verdict:
        """This step's verdict on one row in this process (a stateful step decides a batch of one)."""
        if self.stateful:
            return self.decide_batch([(conv, self.prepare(conv))])[0]
        return Verdict.of(self.filter(conv))

    def global_input(self, conv: Conversation) -> Any:
        """Dedup steps: what a `DedupBackend` compares for this row (a text, a tuple of hashes),
        computed where `prepare` would be."""
        raise NotImplementedError

    def decide_global(
        self, backend: DedupBackend, inputs: list[Any]
    ) -> tuple[Sequence[int], Sequence[int] | None]:
        """Dedup steps: the backend's answer for the rows reaching this step, in input order: per row
        the position of the kept row it repeats (-1: kept), and the unit column that matched (or
        None for a step with one unit)."""
        raise NotImplementedError

    def global_verdict(self, first: str, column: int | None) -> Verdict:
        """Dedup steps: the verdict on a row that repeats the kept row with id `first`."""
        raise NotImplementedError

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
