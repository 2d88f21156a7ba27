"""`datagen preference`: candidate answers, the pairwise judge, and the exported pairs.

    from datagen.preference import PreferenceConfig, make_preference
    stats = make_preference(convs, PreferenceConfig(), teacher_config, "out/preference",
                            journal_path="out/journal.sqlite")
    print(stats.summary())

For each kept dialogue and each of its assistant turns (`turns`), the candidates of every source
(`candidates.py`; the local model's in `local.py`), repeats removed; then every pair of them judged
in both orders (`rank.py`), and the pairs that stand exported (`export.py`). Every teacher call,
candidates and judge alike, goes through the teacher engine and its journal: a rerun with the
same journal pays for nothing already answered, and a changed setting asks only what changed.

OUT receives (each written whole, atomically):

    candidates.jsonl     every candidate kept: slot (`<dialogue id>#<turn>`), source, contrastive, turn
    judgements.jsonl     every pair judged: both orders' scores, the mean, kept (chosen, rejected,
                         margin) or dropped with its reason
    pairs.jsonl          the kept pairs, TRL's conversational preference format
    pairs.moss.jsonl     the same pairs as MOSS text (TRL's standard text form)
    stats.json           counters (candidates by kind, failures and drops by reason, calls, cost)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import TeacherError
from datagen.generate.prompts import PromptBook
from datagen.io import write_json_atomic, write_jsonl_atomic
from datagen.preference.candidates import (
    Ask,
    Candidate,
    Slot,
    accept_answer,
    dedupe,
    endpoint_for,
    judge_pairs,
    plan_candidates,
    sample_label,
    select_turns,
    with_answer,
)
from datagen.preference.config import PreferenceConfig
from datagen.preference.export import moss_row, trl_row
from datagen.preference.prompts import judge_messages, load_template
from datagen.preference.rank import Order, Verdict, decide, parse_scores
from datagen.record import Conversation
from datagen.teacher.config import TeacherConfig
from datagen.teacher.failures import FATAL, RETRYABLE
from datagen.teacher.redact import redact
from datagen.teacher.types import Request, Result

STEP_NAME = "preference"
OUTPUTS = {
    "candidates": "candidates.jsonl",
    "judgements": "judgements.jsonl",
    "pairs": "pairs.jsonl",
    "moss": "pairs.moss.jsonl",
    "stats": "stats.json",
}


@dataclass(slots=True)
class PreferenceStats:
    """What the stage did: `counts` (dialogues, turns, candidates_<kind>, judged, pairs, tool_pairs,
    dropped_<reason>, failed_<reason>, skipped_<contrastive>_<why>), teacher usage, and
    `retryable_failed` (calls a rerun would make again: the stage is incomplete when above 0)."""

    counts: Counter = field(default_factory=Counter)
    retryable_failed: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    paid_cost: float = 0.0

    def add_result(self, result: Result) -> None:
        self.calls += 1
        self.cached_calls += bool(result.cached)
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost += result.cost
        if not result.cached:
            self.paid_cost += result.cost
        if not result.ok:
            self.fail(result.error or "unknown", result.detail)
            if result.error in RETRYABLE:
                self.retryable_failed += 1

    def fail(self, reason: str, detail: str | None = None) -> None:
        self.counts[f"failed_{reason}"] += 1
        if detail and reason not in self.examples:
            self.examples[reason] = redact(detail)[:300]

    def funnel_step(self) -> dict[str, Any]:
        """The funnel row: pairs judged in, kept, dropped by reason."""
        reasons = {
            k[len("dropped_") :]: v for k, v in sorted(self.counts.items()) if k.startswith("dropped_")
        }
        return {
            "step": STEP_NAME,
            "in": self.counts["judged"],
            "kept": self.counts["pairs"],
            "dropped": sum(reasons.values()),
            "tagged": 0,
            "reasons": reasons,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": STEP_NAME,
            **dict(sorted(self.counts.items())),
            "retryable_failed": self.retryable_failed,
            "failure_examples": dict(sorted(self.examples.items())),
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
            "paid_cost": round(self.paid_cost, 6),
            "funnel_step": self.funnel_step(),
        }

    def summary(self) -> str:
        """One line: pairs, drops by reason, failures, calls and cost."""
        c = self.counts
        drops = ", ".join(f"{k} {v}" for k, v in self.funnel_step()["reasons"].items() if v) or "none dropped"
        failed = {k[len("failed_") :]: v for k, v in c.items() if k.startswith("failed_")}
        parts = [
            f"preference: {c['pairs']} pairs ({c['tool_pairs']} on tool turns) from {c['judged']} judged "
            f"({drops}) over {c['turns']} turns of {c['dialogues']} dialogues"
        ]
        if failed:
            parts.append("failed: " + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())))
        if self.retryable_failed:
            parts.append(f"{self.retryable_failed} calls to retry: rerun the same command")
        parts.append(
            f"{self.calls} calls ({self.cached_calls} from the journal), ${self.cost:.4f} "
            f"(paid now ${self.paid_cost:.4f})"
        )
        return "; ".join(parts)


def _run(
    endpoint: TeacherConfig,
    requests: list[Request],
    journal_path: Any,
    progress: bool | None,
    desc: str,
    stats: PreferenceStats,
) -> list[Result]:
    from datagen.teacher.engine import run_requests

    if not requests:
        return []
    results = run_requests(endpoint, requests, journal_path=journal_path, progress=progress, desc=desc)
    for r in results:
        stats.add_result(r)
    fatal = next((r for r in results if r.error in FATAL), None)
    if fatal is not None and not any(r.ok for r in results):
        raise TeacherError(
            f"the teacher refused every call of {desc} ({fatal.error}: {redact(fatal.detail or '')}); "
            "fix the teacher settings and rerun the same command"
        )
    return results


def _ask_all(
    asks: list[Ask], journal_path: Any, progress: bool | None, stats: PreferenceStats
) -> list[Candidate]:
    groups: dict[tuple[str, str], list[Ask]] = defaultdict(list)
    for ask in asks:
        groups[(ask.endpoint.base_url, ask.endpoint.api_key_env)].append(ask)
    made: dict[int, Candidate] = {}
    for group in groups.values():
        results = _run(
            group[0].endpoint,
            [a.request for a in group],
            journal_path,
            progress,
            "preference candidates",
            stats,
        )
        for ask, result in zip(group, results, strict=True):
            if not result.ok:
                continue
            answer, why = accept_answer(result.text)
            if why is not None:
                stats.counts[f"rejected_candidate_{why}"] += 1
                continue
            made[id(ask)] = Candidate(
                ask.slot.key, ask.source, with_answer(ask.turn, answer), contrastive=ask.contrastive
            )
    return [made[id(a)] for a in asks if id(a) in made]


def _sample_local(slots: list[Slot], config: PreferenceConfig, stats: PreferenceStats) -> list[Candidate]:
    from datagen.preference.local import LocalSampler, sample_seed

    out = []
    for source in (s for s in config.sources if s.kind == "local"):
        sampler = LocalSampler(source.model or "", device=source.device)
        for slot in slots:
            head = slot.head()
            for t in source.temperatures:
                for s in range(source.samples):
                    label = sample_label(source.label, t, s, source.samples)
                    text = sampler.sample(
                        head,
                        slot.turn,
                        temperature=t,
                        top_p=source.top_p if source.top_p is not None else config.top_p,
                        max_new_tokens=source.max_tokens or config.max_tokens,
                        seed=sample_seed(config.seed, slot.key, label),
                    )
                    if text is None:
                        stats.counts["rejected_candidate_too_long"] += 1
                        continue
                    answer, why = accept_answer(text)
                    if why is not None:
                        stats.counts[f"rejected_candidate_{why}"] += 1
                        continue
                    out.append(Candidate(slot.key, label, with_answer(slot.turn, answer)))
    return out


def _kind(c: Candidate, config: PreferenceConfig) -> str:
    if c.contrastive:
        return "contrastive"
    label = c.source.split("@")[0]
    return next((s.kind for s in config.sources if s.label == label), "other")


def make_preference(
    conversations: Iterable[Conversation],
    config: PreferenceConfig | None = None,
    teacher: TeacherConfig | None = None,
    out_dir: str | Path = "preference",
    *,
    journal_path: str | Path | None = None,
    progress: bool | None = None,
) -> PreferenceStats:
    """Make preference pairs from kept dialogues and write them to `out_dir` (see the module
    docstring). `journal_path` is the teacher journal (default `out_dir/journal.sqlite`).

    Returns the stats (also in `out_dir/stats.json`). Raises TeacherError when the teacher or
    the judge refuses every call (bad key, unknown model)."""
    config = config or PreferenceConfig()
    teacher = teacher or TeacherConfig()
    out = Path(out_dir)
    journal_path = journal_path if journal_path is not None else out / "journal.sqlite"
    stats = PreferenceStats()
    convs = list(conversations)
    slots = [Slot(c, i) for c in convs for i in select_turns(c, config.turns)]
    stats.counts.update(dialogues=len(convs), turns=len(slots))
    book = PromptBook(config.templates_dir, dict(config.template_versions))
    contrastive = load_template(
        "contrastive", config.template_versions.get("contrastive"), config.templates_dir
    )
    judge_t = load_template("judge", config.judge.template_version, config.templates_dir)
    tools = _tools(slots, config)
    try:
        by_slot: dict[str, list[Candidate]] = defaultdict(list)
        asks: list[Ask] = []
        for slot in slots:
            ready, more, skipped = plan_candidates(slot, config, book, contrastive, teacher, tools)
            by_slot[slot.key] += ready
            asks += more
            stats.counts.update(skipped)
    finally:
        if tools:
            from datagen.tools.base import close_tools

            close_tools(tools)
    for cand in _ask_all(asks, journal_path, progress, stats) + _sample_local(slots, config, stats):
        by_slot[cand.slot].append(cand)

    all_candidates: list[Candidate] = []
    planned: list[tuple[Slot, Candidate, Candidate]] = []
    for slot in slots:
        kept, repeats = dedupe(by_slot[slot.key])
        stats.counts["duplicate_candidates"] += repeats
        all_candidates += kept
        for c in kept:
            stats.counts[f"candidates_{_kind(c, config)}"] += 1
        planned += [(slot, a, b) for a, b in judge_pairs(kept, config.max_pairs_per_turn)]

    verdicts = _judge(planned, config, judge_t, teacher, journal_path, progress, stats)
    judge_model = config.judge.model or teacher.model
    pairs, judgements = [], []
    for (slot, a, b), v in zip(planned, verdicts, strict=True):
        judgements.append({"slot": slot.key, **v.to_dict()})
        stats.counts["judged"] += 1
        if not v.kept:
            stats.counts[f"dropped_{v.reason}"] += 1
            continue
        chosen, rejected = (a, b) if v.chosen == a.source else (b, a)
        meta = {
            "origin": "judge",
            "chosen_source": chosen.source,
            "rejected_source": rejected.source,
            "contrastive": rejected.contrastive or chosen.contrastive,
            "judge": {
                "model": judge_model,
                "template": judge_t.id,
                "first": [o.first for o in v.orders],
                "scores": [list(o.scores or ()) for o in v.orders],
            },
        }
        pairs.append(
            trl_row(
                slot.conv,
                slot.index,
                chosen.turn,
                rejected.turn,
                margin=v.margin,
                meta=meta,
                pair_id=f"{slot.key}:{chosen.source}>{rejected.source}",
            )
        )
        stats.counts["pairs"] += 1
        stats.counts["tool_pairs"] += bool(chosen.turn.calls or rejected.turn.calls)
        if meta["contrastive"]:
            stats.counts[f"pairs_contrastive_{meta['contrastive']}"] += 1
    for key in ("judged", "pairs", "tool_pairs"):
        stats.counts[key] += 0
    write_jsonl_atomic(out / OUTPUTS["candidates"], all_candidates)
    write_jsonl_atomic(out / OUTPUTS["judgements"], judgements)
    write_jsonl_atomic(out / OUTPUTS["pairs"], pairs)
    write_jsonl_atomic(out / OUTPUTS["moss"], (moss_row(p) for p in pairs))
    write_json_atomic(out / OUTPUTS["stats"], {**stats.to_dict(), "config": config.to_dict()}, sort_keys=True)
    return stats


def _tools(slots: list[Slot], config: PreferenceConfig) -> dict[str, Any] | None:
    """The tools `wrong_command` runs: the configured ones, else each needed plugin's defaults."""
    if "wrong_command" not in config.contrastive:
        return None
    needed = sorted({p for s in slots if s.turn.calls for p in s.conv.plugins})
    if not needed:
        return None
    from datagen.tools.base import build_tools

    return build_tools(config.tools if config.tools is not None else needed)


def _judge(
    planned: list[tuple[Slot, Candidate, Candidate]],
    config: PreferenceConfig,
    t: Any,
    teacher: TeacherConfig,
    journal_path: Any,
    progress: bool | None,
    stats: PreferenceStats,
) -> list[Verdict]:
    j = config.judge
    endpoint = endpoint_for(teacher, j.base_url, j.api_key_env)
    params = {"temperature": j.temperature, "max_tokens": j.max_tokens}
    requests, firsts = [], []
    for slot, a, b in planned:
        head = slot.head()
        for first, second in ((a, b), (b, a)):
            requests.append(
                Request(
                    messages=judge_messages(t, head, first.turn, second.turn),
                    params=params,
                    model=j.model,
                    template_version=t.id,
                    tag=(slot.key, first.source),
                )
            )
            firsts.append(first.source)
    results = _run(endpoint, requests, journal_path, progress, "preference judge", stats)
    stats.counts["judge_calls"] += len(results)
    orders = []
    for first, r in zip(firsts, results, strict=True):
        scores = parse_scores(r.text) if r.ok else None
        orders.append(
            Order(
                first=first, scores=scores, cached=r.cached, error=None if scores else (r.error or "unparsed")
            )
        )
    return [
        decide(a.source, b.source, orders[2 * i : 2 * i + 2], min_margin=j.min_margin)
        for i, (_, a, b) in enumerate(planned)
    ]
