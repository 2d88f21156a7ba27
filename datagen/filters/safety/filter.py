"""The `safety` step: a cascade of checkers on (user turn, assistant turn) pairs.

The offline keyword checker (lexicon, PII, refusals) runs on every row, in worker processes. When a
second-opinion checker is configured (`moderation`, `judge`), it runs in the main process, in
batches, on the rows the keywords flagged (PII aside: personal data is found exactly) plus a
seeded random audit sample of the rest; its verdict is final for those rows: it can clear a keyword
hit (the row is kept, tagged `safety.review = cleared by <checker>`) or flag a row the keywords
missed (`<checker>_unsafe`). A failed call falls back to the keyword verdict. Every verdict keeps
its checker's name and evidence.

Policy `redact` replaces personal data with labels (`[PHONE]`, `[EMAIL]`, ...) and keeps the row;
harmful verdicts cannot be redacted and are dropped.
"""

from __future__ import annotations

from typing import Any

import xxhash

from datagen.errors import ConfigError
from datagen.filters.base import KEEP, BaseFilter, FilterResult, Verdict
from datagen.filters.registry import register_step
from datagen.filters.safety.checkers import (
    PII_REASONS,
    KeywordChecker,
    LLMJudgeChecker,
    ModerationChecker,
    SafetyFinding,
)
from datagen.filters.safety.pii import find_pii, redact_pii
from datagen.record import Conversation, Turn


def _finding_verdict(f: SafetyFinding) -> Verdict:
    if not f.flagged:
        return KEEP
    return Verdict(False, f.reason, {"checker": f.checker, **f.evidence})


@register_step
class SafetyFilter(BaseFilter):
    """Drop dialogues where the assistant complied with a harmful request, produced harmful
    content, or where personal data appears (redactable).

    Args:
        lexicons: extra lexicon files (`term<TAB>category<TAB>severity`, `allow<TAB>phrase`,
            `re<TAB>pattern<TAB>category<TAB>severity`), added to the built-in zh/en one.
        builtin_lexicon: use the built-in lexicon (default True).
        pii: check personal data and secrets (default True).
        content_severity, request_severity: see `KeywordChecker`.
        moderation: `ModerationChecker` arguments (base_url, model, api_key_env, threshold, ...).
        judge: `LLMJudgeChecker` arguments (teacher: {...}, mode: guard|rubric, rubric, journal).
        audit_rate: share of keyword-clean rows also sent to the second opinion (default 0.01).
        audit_seed: seed of the audit sample (chosen by hash of row id and seed: reproducible).
        max_turns: turns of one dialogue sent to the second opinion (default 4).
    """

    name = "safety"
    supports_redact = True

    def __init__(
        self,
        *,
        policy: str = "drop",
        lexicons: list[str] | None = None,
        builtin_lexicon: bool = True,
        pii: bool = True,
        content_severity: int = 3,
        request_severity: int = 2,
        moderation: dict[str, Any] | None = None,
        judge: dict[str, Any] | None = None,
        audit_rate: float = 0.01,
        audit_seed: int = 0,
        max_turns: int = 4,
    ):
        super().__init__(policy=policy)
        self.keywords = KeywordChecker(
            lexicons or (),
            builtin=builtin_lexicon,
            pii=pii,
            content_severity=content_severity,
            request_severity=request_severity,
        )
        if not 0.0 <= audit_rate <= 1.0:
            raise ConfigError(f"audit_rate must be in [0, 1], got {audit_rate}", field="audit_rate")
        self.second: list[ModerationChecker | LLMJudgeChecker] = []
        try:
            if moderation:
                self.second.append(ModerationChecker(**moderation))
            if judge:
                self.second.append(LLMJudgeChecker(**judge))
        except TypeError as exc:
            raise ConfigError(
                f"safety checker: {exc}", field="moderation" if moderation else "judge"
            ) from None
        self.stateful = bool(self.second)
        self.audit_rate, self.audit_seed, self.max_turns = audit_rate, audit_seed, max_turns

    # -- offline path ---------------------------------------------------------------------------------

    def filter(self, conv: Conversation) -> FilterResult:
        return _finding_verdict(self.keywords.check(conv))

    def prepare(self, conv: Conversation) -> SafetyFinding:
        return self.keywords.check(conv)

    # -- cascade ----------------------------------------------------------------------------------

    def _audited(self, conv_id: str) -> bool:
        if self.audit_rate <= 0:
            return False
        h = xxhash.xxh64_intdigest(f"{self.audit_seed}:{conv_id}".encode())
        return h / 2**64 < self.audit_rate

    def decide_batch(self, items: list[tuple[Conversation, Any]]) -> list[Verdict]:
        findings = [f if isinstance(f, SafetyFinding) else self.keywords.check(c) for c, f in items]
        verdicts = [_finding_verdict(f) for f in findings]
        if not self.second:
            return verdicts
        # rows to review: keyword-flagged (harmful reasons) and the audit sample
        review: list[tuple[int, list[int], str]] = []
        for i, ((conv, _), f) in enumerate(zip(items, findings, strict=True)):
            if f.flagged and f.reason not in PII_REASONS:
                review.append((i, f.turns[: self.max_turns], "flagged"))
            elif self._audited(conv.id):
                review.append((i, list(range(min(len(conv.turns), self.max_turns))), "audit"))
        if not review:
            return verdicts
        pairs: list[tuple[str, str]] = []
        owners: list[tuple[int, int]] = []
        for i, turns, _ in review:
            conv = items[i][0]
            for t in turns:
                pairs.append((conv.turns[t].human, conv.turns[t].assistant))
                owners.append((i, t))
        for checker in self.second:
            results = checker.judge_pairs(pairs)
            by_row: dict[int, list[tuple[int, Any]]] = {}
            for (i, t), r in zip(owners, results, strict=True):
                by_row.setdefault(i, []).append((t, r))
            for i, _turns, why in review:
                got = by_row.get(i, [])
                if any(r.error for _, r in got) or not got:
                    errors = [r.error for _, r in got if r.error]
                    v = verdicts[i]
                    if not v.keep:
                        v.evidence = {**(v.evidence or {}), f"{checker.name}_error": errors[:1]}
                    continue
                unsafe = [(t, r) for t, r in got if r.unsafe]
                conv = items[i][0]
                if unsafe:
                    t, r = unsafe[0]
                    ev = {
                        "checker": checker.name,
                        "turn": t + 1,
                        "category": r.category,
                        "detail": r.detail,
                        "via": why,
                    }
                    if not verdicts[i].keep:
                        ev["keywords"] = verdicts[i].evidence
                        verdicts[i] = Verdict(False, verdicts[i].reason, ev)
                    else:
                        verdicts[i] = Verdict(False, f"{checker.name}_unsafe", ev)
                elif not verdicts[i].keep and why == "flagged":
                    conv.tags[f"{self.step_name}.review"] = f"cleared by {checker.name}"
                    conv.tags[f"{self.step_name}.review.evidence"] = {
                        "keywords": verdicts[i].evidence,
                        checker.name: [r.detail for _, r in got],
                    }
                    # a cleared row may still carry personal data
                    verdicts[i] = _finding_verdict(self.keywords.check_pii(conv))
            # rows cleared or flagged by this checker are settled; later checkers see the same rows
        return verdicts

    # -- redaction ----------------------------------------------------------------------------------

    def redact(self, conv: Conversation, verdict: Verdict) -> Conversation | None:
        if verdict.reason not in PII_REASONS:
            return None
        turns = []
        for t in conv.turns:
            turns.append(
                Turn(
                    human=redact_pii(t.human),
                    assistant=redact_pii(t.assistant),
                    thoughts=redact_pii(t.thoughts) if t.thoughts and find_pii(t.thoughts) else t.thoughts,
                    calls=list(t.calls),
                    results=list(t.results),
                    flags=list(t.flags),
                    raw=dict(t.raw),
                )
            )
        out = Conversation.from_dict(conv.to_dict())
        out.turns = turns
        return out
