"""Score dialogues with a local model: how surprised is it by the assistant's side?

For each dialogue: the mean token loss (and perplexity) over the segments the model writes (Inner
Thoughts, Commands, MOSS) of the turns that fit the context, leaving out the constant `None`
Inner Thoughts / Commands segments of turns without thoughts or calls (`Segment.placeholder`: they
are trivially predictable, and counting them would make plain chat look better than plugin
dialogues), the same per turn, the full token length
and whether every turn fits. Batches are padded on the right and sorted by length within a window to
waste little compute; results come back in input order.

`apply_check_threshold` turns the scores into the funnel step `moss_check`: drop rows above an
absolute loss or above a percentile of the run.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError, InputError
from datagen.model import DEFAULT_MAX_LENGTH
from datagen.model._deps import require_torch
from datagen.model.tokenize import ASSISTANT_SEGMENTS, TokenizedDialogue, TruncationStats, tokenize_record
from datagen.record import Conversation

#: Keys `score_conversations` writes into `Conversation.scores`.
SCORE_KEYS = ("moss_loss", "moss_ppl", "moss_turn_losses", "moss_tokens", "moss_fits", "moss_turns_scored")
STEP_NAME = "moss_check"


@dataclass(slots=True)
class DialogueScore:
    """The scores of one dialogue. `loss`/`ppl` are None when no turn fits the context;
    `turn_losses[i]` is None for a kept turn without assistant tokens."""

    loss: float | None
    ppl: float | None
    turn_losses: list[float | None]
    tokens: int
    fits: bool
    turns_scored: int
    scored_tokens: int

    def to_scores(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        return {
            "moss_loss": r(self.loss),
            "moss_ppl": r(self.ppl),
            "moss_turn_losses": [r(x) for x in self.turn_losses],
            "moss_tokens": self.tokens,
            "moss_fits": self.fits,
            "moss_turns_scored": self.turns_scored,
        }


def resolve_max_length(max_length: int | None, context_length: int | None) -> int:
    """The one context value used everywhere: the caller's, else the model's, else 2048.

    None means "the model's context". A value beyond what the model declares is refused with one
    ConfigError line (never clamped: scores of a different context would not compare with the
    ones asked for), naming both numbers and the fix."""
    if max_length is None:
        return context_length or DEFAULT_MAX_LENGTH
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ConfigError(f"must be a positive number of tokens, got {max_length!r}", field="max_length")
    if context_length and max_length > context_length:
        raise ConfigError(
            f"{max_length} is beyond the model's context ({context_length} tokens); lower it or "
            "leave it unset to use the model's context",
            field="max_length",
        )
    return max_length


def token_losses(model: Any, batch: Sequence[Sequence[int]], *, pad_id: int) -> list[Any]:
    """Per-token cross-entropy of each sequence: element i of row r is the loss of predicting token
    i from tokens < i (element 0 is NaN). One padded forward pass; returns fp32 CPU tensors."""
    torch, _ = require_torch()
    import torch.nn.functional as F

    device = model.get_input_embeddings().weight.device
    width = max(len(s) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for r, seq in enumerate(batch):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[r, : len(seq)] = 1
    ids, attn = ids.to(device), attn.to(device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
        out = []
        for r, seq in enumerate(batch):
            n = len(seq)
            row = torch.full((n,), float("nan"), dtype=torch.float32)
            if n > 1:
                # one row at a time: a [T, vocab] fp32 copy, not [B, T, vocab]
                row[1:] = F.cross_entropy(logits[r, : n - 1].float(), ids[r, 1:n], reduction="none").cpu()
            out.append(row)
    return out


def summarise_dialogue(
    tok: TokenizedDialogue, losses: Any, *, ignore_ids: frozenset[int] = frozenset()
) -> DialogueScore:
    """Aggregate per-token losses over the assistant's segments, per turn and overall. Placeholder
    segments (exactly `None`) and targets in `ignore_ids` (end tags a non-MOSS model had to add, with
    untrained embeddings) are left out."""
    per_turn: dict[int, list[float]] = {}
    for seg in tok.segments:
        if seg.key not in ASSISTANT_SEGMENTS or seg.placeholder:
            continue
        bucket = per_turn.setdefault(seg.turn, [])
        for p in range(max(seg.start, 1), seg.end):
            if tok.input_ids[p] not in ignore_ids:
                bucket.append(float(losses[p]))
    turn_losses: list[float | None] = []
    total, count = 0.0, 0
    for t in range(tok.turns_kept):
        vals = per_turn.get(t, [])
        turn_losses.append(sum(vals) / len(vals) if vals else None)
        total += sum(vals)
        count += len(vals)
    loss = total / count if count else None
    ppl = math.exp(loss) if loss is not None and loss < 700 else (None if loss is None else math.inf)
    return DialogueScore(
        loss=loss,
        ppl=ppl,
        turn_losses=turn_losses,
        tokens=tok.full_length,
        fits=tok.fits,
        turns_scored=tok.turns_kept,
        scored_tokens=count,
    )


def score_tokenized(
    loaded: Any, dialogues: Sequence[TokenizedDialogue], *, batch_size: int = 8
) -> list[DialogueScore]:
    """Score already tokenised dialogues with a `LoadedModel`, `batch_size` at a time (longest
    first, so padding stays small); results in input order."""
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = loaded.tokenizer.eos_token_id or 0
    ignore = frozenset(loaded.added_token_ids)
    results: list[DialogueScore | None] = [None] * len(dialogues)
    order = sorted(range(len(dialogues)), key=lambda i: -len(dialogues[i].input_ids))
    todo = [i for i in order if not dialogues[i].empty]
    for i in order:
        if dialogues[i].empty:
            results[i] = summarise_dialogue(dialogues[i], [])
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        losses = token_losses(loaded.model, [dialogues[i].input_ids for i in chunk], pad_id=pad_id)
        for i, row in zip(chunk, losses, strict=True):
            results[i] = summarise_dialogue(dialogues[i], row, ignore_ids=ignore)
    return results  # type: ignore[return-value]


def score_records(
    records: Iterable[Mapping[str, Any]],
    model: Any,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    stats: TruncationStats | None = None,
    tokenization: str = "auto",
) -> list[DialogueScore]:
    """Score MOSS SFT records (dicts). `model` is a path/alias or a `LoadedModel`; `tokenization`
    applies when it is loaded here (see `load_model`)."""
    from datagen.model.loading import LoadedModel, load_model

    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, device=device, dtype=dtype, tokenization=tokenization)
    )
    limit = resolve_max_length(max_length, loaded.context_length)
    toks = [
        tokenize_record(r, loaded.tokenizer, max_length=limit, path="records", line=i + 1)
        for i, r in enumerate(records)
    ]
    if stats is not None:
        for t in toks:
            stats.add(t)
    return score_tokenized(loaded, toks, batch_size=batch_size)


def score_conversations(
    conversations: Iterable[Conversation],
    model: Any,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    window: int | None = None,
    stats: TruncationStats | None = None,
    tokenization: str = "auto",
) -> Iterator[Conversation]:
    """Score conversations with a local model, writing `moss_loss`, `moss_ppl`, `moss_turn_losses`,
    `moss_tokens`, `moss_fits` and `moss_turns_scored` into each `conv.scores`.

    Args:
        conversations: any iterable; it is consumed `window` rows at a time.
        model: a folder, `.gguf` file, alias (`smollm2`), Hub id, or a `LoadedModel` to reuse.
        batch_size: dialogues per forward pass.
        max_length: the context (default: the model's, else 2048); later turns that pass it are
            not scored and `moss_fits` is False.
        device, dtype: see `load_model`.
        window: rows sorted by length together (default 16 batches).
        stats: a TruncationStats to add this run's truncations to.
        tokenization: `auto`, `upstream` or `datagen`, when the model is loaded here (a
            `LoadedModel` keeps the one it was loaded with). `auto` scores a MOSS checkpoint on
            the token stream upstream trained it on.

    Yields the same Conversation objects, in input order, as each window finishes.
    """
    from datagen.formats.moss import to_sft
    from datagen.model.loading import LoadedModel, load_model

    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, device=device, dtype=dtype, tokenization=tokenization)
    )
    limit = resolve_max_length(max_length, loaded.context_length)
    window = window or batch_size * 16
    buf: list[Conversation] = []

    def flush() -> Iterator[Conversation]:
        toks = [
            tokenize_record(to_sft(c), loaded.tokenizer, max_length=limit, path=f"conversation {c.id}")
            for c in buf
        ]
        if stats is not None:
            for t in toks:
                stats.add(t)
        for conv, score in zip(buf, score_tokenized(loaded, toks, batch_size=batch_size), strict=True):
            conv.scores.update(score.to_scores())
            yield conv
        buf.clear()

    for conv in conversations:
        buf.append(conv)
        if len(buf) >= window:
            yield from flush()
    if buf:
        yield from flush()


# --------------------------------------------------------------------------- threshold and report


def percentile_value(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(slots=True)
class CheckVerdict:
    """The outcome of `apply_check_threshold`; unpacks as `kept, rejected = verdict`.

    `rejected` rows are dicts: the conversation's `to_dict()` plus
    `"rejected": {"step": "moss_check", "reason": ..., "evidence": {...}}`.
    """

    kept: list[Conversation] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    cutoff: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        yield self.kept
        yield self.rejected

    def funnel_step(self) -> dict[str, Any]:
        """The step as the funnel records it."""
        n_in = len(self.kept) + len(self.rejected)
        return {
            "step": STEP_NAME,
            "in": n_in,
            "kept": len(self.kept),
            "dropped": len(self.rejected),
            "tagged": 0,
            "reasons": dict(self.reasons),
        }


def threshold_cutoff(
    losses: Sequence[float], *, max_loss: float | None = None, percentile: float | None = None
) -> tuple[float | None, str | None]:
    """(loss cutoff, reason name) of the `moss_check` threshold over a run's losses: the lower of
    `max_loss` and the `percentile`-th percentile; (None, None) without either."""
    if percentile is not None and not 0 < percentile <= 100:
        raise ConfigError("must be within (0, 100]", field="percentile")
    cutoff, reason_name = None, None
    if percentile is not None and losses:
        cutoff, reason_name = percentile_value(losses, percentile), "loss_above_percentile"
    if max_loss is not None and (cutoff is None or max_loss < cutoff):
        cutoff, reason_name = max_loss, "loss_above_max"
    return cutoff, reason_name


def reject_reason(
    scores: Mapping[str, Any],
    *,
    cutoff: float | None,
    reason_name: str | None,
    percentile: float | None = None,
    require_fit: bool = False,
) -> tuple[str, dict[str, Any]] | None:
    """(reason, evidence) when a scored row fails the threshold, else None (see
    `apply_check_threshold`)."""
    loss = scores["moss_loss"]
    if loss is None:
        return "no_turn_fits", {"moss_tokens": scores.get("moss_tokens")}
    if require_fit and not scores.get("moss_fits", True):
        return "too_long", {"moss_tokens": scores.get("moss_tokens")}
    if cutoff is not None and loss > cutoff:
        evidence: dict[str, Any] = {"moss_loss": loss, "cutoff": round(cutoff, 6)}
        if reason_name == "loss_above_percentile":
            evidence["percentile"] = percentile
        return str(reason_name), evidence
    return None


def apply_check_threshold(
    conversations: Iterable[Conversation],
    *,
    max_loss: float | None = None,
    percentile: float | None = None,
    require_fit: bool = False,
) -> CheckVerdict:
    """Split scored conversations into kept and rejected (`moss_check`), in memory (`datagen check`
    streams its files through `threshold_cutoff` and `reject_reason` instead).

    Args:
        max_loss: drop rows whose `moss_loss` is above this.
        percentile: drop rows above this percentile (0-100) of the run's losses; with `max_loss`
            too, the lower cutoff wins.
        require_fit: also drop rows whose turns do not all fit the context (`too_long`); rows where
            no turn fits are always dropped (`no_turn_fits`: nothing could be scored).

    Raises InputError for a row that was never scored.
    """
    convs = list(conversations)
    for c in convs:
        if "moss_loss" not in c.scores:
            raise InputError("row has no moss_loss: run `datagen check` first", field=f"id {c.id}")
    losses = [float(c.scores["moss_loss"]) for c in convs if c.scores["moss_loss"] is not None]
    cutoff, reason_name = threshold_cutoff(losses, max_loss=max_loss, percentile=percentile)
    verdict = CheckVerdict(cutoff=cutoff)
    for c in convs:
        found = reject_reason(
            c.scores, cutoff=cutoff, reason_name=reason_name, percentile=percentile, require_fit=require_fit
        )
        if found is None:
            verdict.kept.append(c)
            continue
        reason, evidence = found
        c.tags[STEP_NAME] = reason
        row = c.to_dict()
        row["rejected"] = {"step": STEP_NAME, "reason": reason, "evidence": evidence}
        verdict.rejected.append(row)
        verdict.reasons[reason] = verdict.reasons.get(reason, 0) + 1
    return verdict


@dataclass(slots=True)
class ScoreColumns:
    """The numbers of scored rows the report and the threshold need, column by column (8 to 25
    bytes a row, no texts), so a file of millions of scored rows is summarised in one streaming
    pass. NaN stands for a missing loss or perplexity, -1 for missing tokens."""

    losses: array = field(default_factory=lambda: array("d"))
    ppls: array = field(default_factory=lambda: array("d"))
    tokens: array = field(default_factory=lambda: array("q"))
    fits: bytearray = field(default_factory=bytearray)

    def add(self, scores: Mapping[str, Any]) -> None:
        loss, ppl, tokens = scores.get("moss_loss"), scores.get("moss_ppl"), scores.get("moss_tokens")
        self.losses.append(math.nan if loss is None else float(loss))
        self.ppls.append(math.nan if ppl is None else float(ppl))
        self.tokens.append(-1 if tokens is None else int(tokens))
        self.fits.append(1 if scores.get("moss_fits") else 0)

    def __len__(self) -> int:
        return len(self.fits)

    def finite_losses(self) -> list[float]:
        """The losses of rows that have one (rows where no turn fits have none)."""
        return [x for x in self.losses if not math.isnan(x)]


def score_report(conversations: Iterable[Conversation] | ScoreColumns) -> dict[str, Any]:
    """The distribution of a run's scores: counts, loss/perplexity/length quantiles, truncation.
    Takes conversations (those without `moss_loss` are not counted) or a `ScoreColumns`."""
    if isinstance(conversations, ScoreColumns):
        cols = conversations
    else:
        cols = ScoreColumns()
        for c in conversations:
            if "moss_loss" in c.scores:
                cols.add(c.scores)
    losses = cols.finite_losses()
    ppls = [x for x in cols.ppls if not math.isnan(x)]
    tokens = [float(t) for t in cols.tokens if t >= 0]
    qs = (0, 10, 25, 50, 75, 90, 95, 99, 100)

    def dist(xs: list[float]) -> dict[str, float] | None:
        if not xs:
            return None
        d = {f"p{q}": round(percentile_value(xs, q), 4) for q in qs}
        d["mean"] = round(sum(xs) / len(xs), 4)
        return d

    no_loss = [math.isnan(x) for x in cols.losses]
    return {
        "scored": len(cols),
        "with_loss": len(losses),
        "fit": sum(cols.fits),
        "truncated": sum(1 for f, n in zip(cols.fits, no_loss, strict=True) if not f and not n),
        "no_turn_fits": sum(no_loss),
        "loss": dist(losses),
        "ppl": dist(ppls),
        "tokens": dist(tokens),
        "histogram": _histogram(losses),
    }


def _histogram(xs: list[float], bins: int = 10) -> list[dict[str, float]]:
    if not xs:
        return []
    lo, hi = min(xs), max(xs)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for x in xs:
        counts[min(int((x - lo) / width), bins - 1)] += 1
    return [
        {"from": round(lo + i * width, 4), "to": round(lo + (i + 1) * width, 4), "count": c}
        for i, c in enumerate(counts)
    ]


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"scored {report['scored']} dialogues: {report['fit']} fit the context, "
        f"{report['truncated']} truncated, {report['no_turn_fits']} with no turn that fits"
    ]
    for name in ("loss", "ppl", "tokens"):
        d = report.get(name)
        if d:
            lines.append(
                f"  {name:<6} mean {d['mean']:<10g} p10 {d['p10']:<10g} p50 {d['p50']:<10g} "
                f"p90 {d['p90']:<10g} p99 {d['p99']:<10g} max {d['p100']:g}"
            )
    hist = report.get("histogram") or []
    if hist:
        top = max(h["count"] for h in hist) or 1
        for h in hist:
            bar = "#" * max(1 if h["count"] else 0, round(30 * h["count"] / top))
            lines.append(f"  loss {h['from']:>8.3f} - {h['to']:<8.3f} {h['count']:>7} {bar}")
    return "\n".join(lines)
