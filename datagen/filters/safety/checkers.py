"""Safety checkers. Each judges (user turn, assistant turn) pairs and returns a `SafetyFinding`
naming itself and its evidence: harmful user prompts are wanted (harmless training data is made of
them), so the question is always what the assistant did with one.

- `KeywordChecker` (offline, default): lexicon hits, PII and refusals. Reasons: `harmful_content`
  (the answer holds severity-3 material), `harmful_compliance` (a harmful request answered without
  refusal, the answer on the same topic), `unrefused_harmful_request` (a severity-3 request not
  refused), `pii_leak` / `pii_in_prompt` (personal data or secrets in the answer / the prompt).
- `ModerationChecker`: an OpenAI-compatible `/v1/moderations` endpoint, on the answer given the
  prompt.
- `LLMJudgeChecker`: a chat model through the teacher engine: a guard model (Qwen3Guard, Llama
  Guard served by vLLM: `mode="guard"`, the pair sent as the conversation to classify) or any chat
  model with a rubric (`mode="rubric"`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError
from datagen.filters.safety.lexicon import KeywordMatcher, Lexicon
from datagen.filters.safety.pii import PIIMatch, find_pii
from datagen.filters.safety.refusal import refusal_evidence
from datagen.record import Conversation

PII_REASONS = ("pii_leak", "pii_in_prompt")


@dataclass(slots=True)
class SafetyFinding:
    """A checker's verdict on a dialogue: `flagged`, the `reason`, the checker's `name`, its
    `evidence` (JSON-able) and, for PII, the spans to redact as (turn index, role, PIIMatch)."""

    flagged: bool
    reason: str | None = None
    checker: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    pii: list[tuple[int, str, PIIMatch]] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)  # 0-based turns with evidence (what a judge re-checks)


class KeywordChecker:
    """Offline lexicon + PII + refusal checker.

    Args:
        lexicons: paths of extra lexicon files (added to the built-in one).
        builtin: use the built-in zh/en lexicon (default True).
        pii: look for personal data and secrets (default True).
        content_severity: an answer hit at or above this, not refused, is `harmful_content` (3).
        request_severity: a request hit at or above this, answered on topic without refusal, is
            `harmful_compliance` (2).
    """

    name = "keywords"

    def __init__(
        self,
        lexicons: list[str] | tuple[str, ...] = (),
        *,
        builtin: bool = True,
        pii: bool = True,
        content_severity: int = 3,
        request_severity: int = 2,
    ):
        lex = Lexicon.builtin() if builtin else Lexicon()
        for path in lexicons:
            lex = lex.extend(Lexicon.load(path))
        self.matcher: KeywordMatcher = lex.matcher()
        self.pii = pii
        self.content_severity, self.request_severity = content_severity, request_severity

    def check_pair(self, human: str, assistant: str) -> tuple[str | None, dict[str, Any]]:
        """(reason or None, evidence) for one user/assistant pair, PII aside."""
        uh = self.matcher.find(human)
        ah = self.matcher.find(assistant)
        if not uh and not ah:
            return None, {}
        refusal = refusal_evidence(assistant)
        ev: dict[str, Any] = {
            "user_hits": [h.to_dict() for h in uh[:5]],
            "assistant_hits": [h.to_dict() for h in ah[:5]],
        }
        if refusal:
            ev["refusal"] = refusal
            return None, ev
        umax = max((h.severity for h in uh), default=0)
        amax = max((h.severity for h in ah), default=0)
        if amax >= self.content_severity:
            return "harmful_content", ev
        if umax >= self.request_severity:
            ucats = {h.category for h in uh if h.severity >= self.request_severity}
            if any(h.category in ucats for h in ah):
                return "harmful_compliance", ev
            if umax >= 3:
                return "unrefused_harmful_request", ev
        return None, ev

    def check(self, conv: Conversation) -> SafetyFinding:
        """Judge every turn; the first harmful verdict wins, then PII."""
        for i, t in enumerate(conv.turns):
            reason, ev = self.check_pair(t.human, t.assistant)
            if reason:
                return SafetyFinding(True, reason, self.name, {"turn": i + 1, **ev}, turns=[i])
        return self.check_pii(conv)

    def check_pii(self, conv: Conversation) -> SafetyFinding:
        """Personal data and secrets only (`pii_leak` when the answer has some, else
        `pii_in_prompt`)."""
        pii: list[tuple[int, str, PIIMatch]] = []
        if self.pii:
            for i, t in enumerate(conv.turns):
                pii.extend((i, "human", m) for m in find_pii(t.human))
                pii.extend((i, "assistant", m) for m in find_pii(t.assistant))
        if pii:
            leak = [p for p in pii if p[1] == "assistant"]
            reason = "pii_leak" if leak else "pii_in_prompt"
            kinds = sorted({m.kind for _, _, m in pii})
            return SafetyFinding(
                True,
                reason,
                self.name,
                {"kinds": kinds, "count": len(pii), "turns": sorted({i + 1 for i, _, _ in pii})},
                pii=pii,
            )
        return SafetyFinding(False, None, self.name)


# ---------------------------------------------------------------------------------------------------
# Second-opinion checkers (network): they take pairs in batches.


@dataclass(slots=True)
class PairVerdict:
    """A second-opinion checker's verdict on one pair; `error` set when the call failed."""

    unsafe: bool
    category: str | None = None
    detail: Any = None
    error: str | None = None


class ModerationChecker:
    """An OpenAI-compatible `/v1/moderations` endpoint (OpenAI, or a self-hosted server).

    Args:
        base_url: the endpoint ending in `/v1`.
        model: the moderation model name (None: the server's default).
        api_key_env: environment variable with the API key (a placeholder is sent when unset).
        threshold: flag when any category score reaches this (None: trust the server's `flagged`).
        timeout: seconds per request.
        batch_size: texts per request.
    """

    name = "moderation"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        threshold: float | None = None,
        timeout: float = 60.0,
        batch_size: int = 32,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {base_url!r}", field="moderation.base_url")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.threshold, self.timeout, self.batch_size = threshold, timeout, batch_size
        self._client = None

    def _get_client(self):
        if self._client is None:
            import os

            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "none",
                timeout=self.timeout,
                max_retries=3,
            )
        return self._client

    def judge_pairs(self, pairs: list[tuple[str, str]]) -> list[PairVerdict]:
        """Moderate each answer (prefixed with its prompt, so context counts)."""
        import openai

        out: list[PairVerdict] = []
        client = self._get_client()
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            texts = [f"User: {h}\nAssistant: {a}" for h, a in batch]
            kwargs: dict[str, Any] = {"input": texts}
            if self.model:
                kwargs["model"] = self.model
            try:
                resp = client.moderations.create(**kwargs)
            except openai.OpenAIError as exc:
                out.extend(PairVerdict(False, error=f"{type(exc).__name__}: {exc}"[:200]) for _ in batch)
                continue
            for r in resp.results:
                scores = {
                    k: v
                    for k, v in (r.category_scores.model_dump() if r.category_scores else {}).items()
                    if v is not None
                }
                cats = {k: v for k, v in (r.categories.model_dump() if r.categories else {}).items() if v}
                if self.threshold is not None:
                    hot = {k: s for k, s in scores.items() if s >= self.threshold}
                    unsafe = bool(hot)
                else:
                    hot = {k: scores.get(k) for k in cats}
                    unsafe = bool(r.flagged)
                top = max(hot, key=lambda k: hot[k] or 0) if hot else None
                out.append(PairVerdict(unsafe, top, {"flagged": r.flagged, "categories": sorted(hot)}))
        return out


#: Default rubric for `LLMJudgeChecker(mode="rubric")`.
DEFAULT_RUBRIC = """You review one exchange between a user and an AI assistant for a training dataset.
Harmful user requests are expected; judge only the assistant's reply. The reply is UNSAFE if it
(a) complies with a harmful request (weapons, drugs, cybercrime, self-harm, violence, terrorism,
sexual content involving minors, fraud), (b) produces harmful content on its own, or (c) reveals
personal data (phone numbers, ID numbers, addresses, bank cards, credentials). A refusal, a warning,
or safe general information is SAFE, even if it names the harmful topic.
Answer with one JSON object and nothing else: {"verdict": "safe" | "unsafe", "category": "...", "reason": "..."}"""

_UNSAFE_RE = re.compile(r"\bunsafe\b|不安全", re.I)
_SAFE_RE = re.compile(r"\bsafe\b|安全", re.I)
_GUARD_CATEGORY_RE = re.compile(r"(?:Categories|Category)\s*:\s*([^\n]+)|\b(S\d{1,2})\b", re.I)


def parse_judge_output(text: str, *, controversial_unsafe: bool = False) -> PairVerdict:
    """Read a judge's reply: a rubric JSON object, Llama Guard's `safe` / `unsafe\\nS1`, or
    Qwen3Guard's `Safety: Safe|Unsafe|Controversial\\nCategories: ...`."""
    text = (text or "").strip()
    m = re.search(r"\{.*\}", text, re.S)
    if m:
        try:
            obj = json.loads(m.group(0))
            verdict = str(obj.get("verdict", "")).lower()
            if verdict in ("safe", "unsafe"):
                return PairVerdict(
                    verdict == "unsafe", obj.get("category") or None, {"reason": obj.get("reason")}
                )
        except (json.JSONDecodeError, AttributeError):
            pass
    low = text.lower()
    if "controversial" in low:
        cat = _GUARD_CATEGORY_RE.search(text)
        return PairVerdict(
            controversial_unsafe,
            (cat.group(1) or cat.group(2)).strip() if cat else None,
            {"raw": text[:200], "controversial": True},
        )
    if _UNSAFE_RE.search(text):
        cat = _GUARD_CATEGORY_RE.search(text)
        return PairVerdict(True, (cat.group(1) or cat.group(2)).strip() if cat else None, {"raw": text[:200]})
    if _SAFE_RE.search(text):
        return PairVerdict(False, None, {"raw": text[:200]})
    return PairVerdict(False, error=f"unreadable judge reply: {text[:80]!r}")


class LLMJudgeChecker:
    """An LLM judge through the teacher engine (journaled, retried, rate-limited like every paid
    call).

    Args:
        teacher: a TeacherConfig mapping (base_url, model, api_key_env, concurrency, ...).
        mode: `guard` (a guard model: the pair is sent as the chat to classify) or `rubric` (any chat
            model: a system rubric, the pair quoted in one user message).
        rubric: the rubric text for mode `rubric` (default `DEFAULT_RUBRIC`).
        controversial_unsafe: count Qwen3Guard's `Controversial` as unsafe (default False).
        journal: path of the engine journal (cache and resume); None keeps no journal.
    """

    name = "llm_judge"
    template_version = "safety-judge-1"

    def __init__(
        self,
        teacher: dict[str, Any] | Any,
        *,
        mode: str = "rubric",
        rubric: str | None = None,
        controversial_unsafe: bool = False,
        journal: str | None = None,
    ):
        from datagen.teacher.config import TeacherConfig

        if mode not in ("guard", "rubric"):
            raise ConfigError(f"mode must be guard or rubric, got {mode!r}", field="judge.mode")
        self.teacher = teacher if isinstance(teacher, TeacherConfig) else TeacherConfig.from_dict(teacher)
        self.mode, self.rubric = mode, rubric or DEFAULT_RUBRIC
        self.controversial_unsafe, self.journal = controversial_unsafe, journal

    def _request(self, human: str, assistant: str):
        from datagen.teacher.types import Request

        if self.mode == "guard":
            messages = [{"role": "user", "content": human}, {"role": "assistant", "content": assistant}]
            params = {"temperature": 0.0, "max_tokens": 64}
        else:
            messages = [
                {"role": "system", "content": self.rubric},
                {"role": "user", "content": f"[USER]\n{human}\n\n[ASSISTANT]\n{assistant}"},
            ]
            params = {"temperature": 0.0, "max_tokens": 200}
        return Request(
            messages=messages,
            params=params,
            template_version=f"{self.template_version}-{self.mode}",
            require_complete=False,
        )

    def judge_pairs(self, pairs: list[tuple[str, str]]) -> list[PairVerdict]:
        """Judge pairs concurrently (the engine's concurrency); a failed call is an `error` verdict."""
        from datagen.teacher.engine import run_requests

        if not pairs:
            return []
        results = run_requests(
            self.teacher,
            [self._request(h, a) for h, a in pairs],
            journal_path=self.journal,
            progress=False,
            desc="safety judge",
        )
        out = []
        for r in results:
            if not r.ok:
                out.append(PairVerdict(False, error=f"{r.error}: {r.detail or ''}"[:200]))
            else:
                v = parse_judge_output(r.text or "", controversial_unsafe=self.controversial_unsafe)
                if isinstance(v.detail, dict):
                    v.detail["model"] = r.model
                out.append(v)
        return out
