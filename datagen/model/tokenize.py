"""MOSS SFT record -> token ids and label mask, the way upstream `finetune_moss.py` builds them.

Upstream encodes the meta instruction, then each segment of each turn separately, and concatenates;
a turn that would take the sample past the context is dropped together with every later turn, and a
sample where not even the first turn fits is dropped. Labels are -100 on the meta instruction and on
the body of each Results segment: the `<|Results|>:` prefix and the `<eor>` end keep their loss.
`assistant_only` also masks the Human segments.

Two tokenizations (`TOKENIZATIONS`), chosen when the tokenizer is loaded (`load_tokenizer(...,
tokenization=)`, which records it on the tokenizer; `tokenization_of` reads it back):

- `upstream` (the default for MOSS-layout checkpoints): the token stream the released MOSS models
  were trained on. Upstream's slow `MossTokenizer` under its pinned transformers 4.25.1 strips the
  whitespace on both sides of every added token, so the `\n` after each end tag (and any whitespace
  before one) never reaches the model; the loaded tokenizer's added tokens strip it the same way.
  The Results mask is upstream's own: token offsets `+5` from the segment start to `-2` from its end.
- `datagen`: every character of the record is encoded, the `\n` after each end tag included, and
  the Results mask comes from the tokenizer's character offsets, so exactly the body between
  `<|Results|>:` and `<eor>` is masked whatever the vocabulary (upstream's `+5/-2` only fits its own
  vocabulary, and with the `\n` stripped its `-2` also trains the last token of the body).

Scoring needs more than training: `segments` records where every segment of every kept turn lies,
so `datagen check` can average the loss over the assistant's segments turn by turn. A segment that
is exactly `None` (`<|Inner Thoughts|>: None<eot>`, `<|Commands|>: None<eoc>`: every plain-chat turn,
and plugin turns without a call) is marked `placeholder`: it keeps its labels for fine-tuning, as
upstream trains on it, but scoring leaves it out. Those constant tokens are nearly free to predict,
so counting them would lower plain-chat losses against plugin dialogues and bias a pooled
percentile cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import FormatError

#: Bump when the tokenisation or masking changes: it is part of the token cache key.
TOKENIZE_VERSION = 2

#: The token streams datagen can produce (see the module docstring); `auto` picks one per checkpoint.
TOKENIZATIONS: tuple[str, ...] = ("upstream", "datagen")
#: Where `load_tokenizer` records the tokenization on a tokenizer (`init_kwargs`, so a tokenizer
#: saved with `save_pretrained` keeps it in tokenizer_config.json).
TOKENIZATION_KEY = "datagen_tokenization"
#: Upstream's fixed Results offsets: the no-loss span is [segment start + 5, segment end - 2).
UPSTREAM_RESULTS_OFFSETS = (5, 2)

#: The segment keys of an SFT turn, in upstream order.
SEGMENT_KEYS: tuple[str, ...] = ("Human", "Inner Thoughts", "Commands", "Tool Responses", "MOSS")
#: Segments the model writes (scored by `datagen check`); Human and Results come from outside.
ASSISTANT_SEGMENTS: frozenset[str] = frozenset({"Inner Thoughts", "Commands", "MOSS"})
#: The constant `None` segments of turns without thoughts or calls (see `Segment.placeholder`).
PLACEHOLDER_SEGMENTS: dict[str, str] = {
    "Inner Thoughts": "<|Inner Thoughts|>: None<eot>",
    "Commands": "<|Commands|>: None<eoc>",
}
RESULTS_PREFIX = "<|Results|>:"
RESULTS_SUFFIXES = ("<eor>\n", "<eor>")


@dataclass(slots=True)
class Segment:
    """Where one segment of a kept turn lies in `TokenizedDialogue.input_ids` ([start, end))."""

    turn: int  # 0-based
    key: str
    start: int
    end: int
    #: an Inner Thoughts / Commands segment that is exactly `None`: trained on, not scored
    placeholder: bool = False


def is_placeholder(key: str, text: str) -> bool:
    """True for an Inner Thoughts or Commands segment whose body is exactly `None`."""
    constant = PLACEHOLDER_SEGMENTS.get(key)
    return constant is not None and text.rstrip("\n") == constant


@dataclass(slots=True)
class TokenizedDialogue:
    """One SFT record, tokenised.

    `input_ids` hold the meta instruction and the turns that fit; `loss_mask[i]` is True where
    position i is trained on (upstream's rule, plus Human when `assistant_only`). `full_length` is
    the length with every turn, `turns_total` / `turns_kept` say how many turns the context cut.
    `empty` is True when not even the first turn fits (upstream drops such a sample).
    """

    input_ids: list[int]
    loss_mask: list[bool]
    segments: list[Segment] = field(default_factory=list)
    meta_length: int = 0
    full_length: int = 0
    turns_total: int = 0
    turns_kept: int = 0

    @property
    def fits(self) -> bool:
        return self.turns_kept == self.turns_total

    @property
    def empty(self) -> bool:
        return self.turns_kept == 0

    def labels(self) -> list[int]:
        """Training labels: the ids, with -100 where the loss is masked."""
        return [t if m else -100 for t, m in zip(self.input_ids, self.loss_mask, strict=True)]


@dataclass(slots=True)
class TruncationStats:
    """What the context limit cost: counted, never silent. Adds up across shards."""

    dialogues: int = 0
    truncated: int = 0  # dialogues that lost at least one turn
    turns_dropped: int = 0
    dropped: int = 0  # dialogues where not even the first turn fits

    def add(self, d: TokenizedDialogue) -> None:
        self.dialogues += 1
        if d.turns_kept < d.turns_total:
            self.turns_dropped += d.turns_total - d.turns_kept
            if d.turns_kept:
                self.truncated += 1
            else:
                self.dropped += 1

    def merge(self, other: TruncationStats) -> None:
        self.dialogues += other.dialogues
        self.truncated += other.truncated
        self.turns_dropped += other.turns_dropped
        self.dropped += other.dropped

    def to_dict(self) -> dict[str, int]:
        return {
            "dialogues": self.dialogues,
            "truncated": self.truncated,
            "turns_dropped": self.turns_dropped,
            "dropped": self.dropped,
        }


def _turns(record: Mapping[str, Any], where: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    chat = record.get("chat")
    if not isinstance(chat, Mapping):
        raise FormatError("missing or not an object", **where, field="chat")
    n = record.get("num_turns", len(chat))
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise FormatError(f"not an integer: {n!r}", **where, field="num_turns") from None
    out = []
    for i in range(1, n + 1):
        name = f"turn_{i}"
        turn = chat.get(name)
        if not isinstance(turn, Mapping):
            raise FormatError("missing turn (num_turns says more)", **where, field=f"chat.{name}")
        for key, value in turn.items():
            if key not in SEGMENT_KEYS:
                raise FormatError(
                    f"unknown segment (known: {', '.join(SEGMENT_KEYS)})", **where, field=f"chat.{name}.{key}"
                )
            if not isinstance(value, str):
                raise FormatError("segment must be a string", **where, field=f"chat.{name}.{key}")
        out.append((name, dict(turn)))
    return out


def _results_body(segment: str, where: dict[str, Any], field_name: str) -> tuple[int, int]:
    """Character range of a Results segment's body (between `<|Results|>:` and `<eor>`)."""
    if not segment.startswith(RESULTS_PREFIX):
        raise FormatError(f"a Results segment must start with {RESULTS_PREFIX!r}", **where, field=field_name)
    for suffix in RESULTS_SUFFIXES:
        if segment.endswith(suffix):
            return len(RESULTS_PREFIX), len(segment) - len(suffix)
    raise FormatError("a Results segment must end with '<eor>'", **where, field=field_name)


def tokenization_of(tokenizer: Any) -> str:
    """The tokenization a tokenizer was loaded for (`upstream` or `datagen`); `datagen` for one
    that `load_tokenizer` did not load, whose added tokens keep the whitespace around them."""
    mode = (getattr(tokenizer, "init_kwargs", None) or {}).get(TOKENIZATION_KEY, "datagen")
    return mode if mode in TOKENIZATIONS else "datagen"


def _encode_segment(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def tokenize_record(
    record: Mapping[str, Any],
    tokenizer: Any,
    *,
    max_length: int,
    assistant_only: bool = False,
    path: str | None = None,
    line: int | None = None,
) -> TokenizedDialogue:
    """Tokenise one MOSS SFT record (see the module docstring for the rule).

    Args:
        record: `{"meta_instruction": ..., "num_turns": N, "chat": {"turn_1": {...}, ...}}`.
        tokenizer: a fast tokenizer (offsets are needed) with the MOSS end tags as special tokens;
            the tokenization it was loaded for (`tokenization_of`) decides the Results mask.
        max_length: the context; turns that would pass it are dropped from the end.
        assistant_only: also mask the Human segments.
        path, line: name the record in errors (FormatError carries file, line and field).
    """
    where: dict[str, Any] = {"path": path, "line": line}
    upstream = tokenization_of(tokenizer) == "upstream"
    if max_length < 1:
        raise ValueError("max_length must be positive")
    meta = record.get("meta_instruction")
    if not isinstance(meta, str) or not meta:
        raise FormatError("missing or empty", **where, field="meta_instruction")
    # The meta instruction is encoded like upstream's `tokenizer.encode(meta)`: with the
    # tokenizer's own special tokens (none for MOSS/GPT-2; a BOS for Llama-style tokenizers).
    meta_ids = list(tokenizer(meta, add_special_tokens=True)["input_ids"])
    out = TokenizedDialogue(
        input_ids=list(meta_ids), loss_mask=[False] * len(meta_ids), meta_length=len(meta_ids)
    )
    turns = _turns(record, where)
    out.turns_total = len(turns)
    length = len(meta_ids)
    stopped = False
    for t_index, (name, turn) in enumerate(turns):
        ids: list[int] = []
        mask: list[bool] = []
        segs: list[Segment] = []
        for key, text in turn.items():
            if not text:
                continue  # a segment the source did not have: nothing to encode
            seg_ids, offsets = _encode_segment(tokenizer, text)
            if key == "Tool Responses":
                lo, hi = _results_body(text, where, f"chat.{name}.{key}")
                if upstream:
                    head, tail = UPSTREAM_RESULTS_OFFSETS
                    seg_mask = [not head <= i < len(seg_ids) - tail for i in range(len(seg_ids))]
                else:
                    seg_mask = [not (lo <= a and b <= hi) for a, b in offsets]
            elif key == "Human" and assistant_only:
                seg_mask = [False] * len(seg_ids)
            else:
                seg_mask = [True] * len(seg_ids)
            start = length + len(ids)
            segs.append(
                Segment(
                    turn=t_index,
                    key=key,
                    start=start,
                    end=start + len(seg_ids),
                    placeholder=is_placeholder(key, text),
                )
            )
            ids.extend(seg_ids)
            mask.extend(seg_mask)
        length += len(ids)
        if stopped or length > max_length:
            stopped = True  # this turn and every later one are cut
            continue
        out.input_ids.extend(ids)
        out.loss_mask.extend(mask)
        out.segments.extend(segs)
        out.turns_kept += 1
    out.full_length = length
    return out
