"""Part of the former datagen/moss/finetune.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from datagen.io import write_jsonl_atomic
from datagen.record import Conversation

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


def split_records(
    records: Sequence[Mapping[str, Any]],
    *,
    val_fraction: float,
    val_max: int | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Train/validation split by the published dataset's rule (`datagen.splits.split_for`: xxh64 of
    the conversation id below `val_fraction`), so with the same fraction a dialogue is held out here
    exactly when it is in the published validation split, whatever the order or the other rows.

    Args:
        records: MOSS SFT records.
        val_fraction: the share of ids in validation (the rule's threshold, not an exact count).
        val_max: evaluate on at most this many validation rows (those with the smallest hashes); the
            rest of the validation split is left out of both lists, never trained on.
        ids: the conversation ids (datagen's `Conversation.id`, as publish uses); default: each
            record's `conversation_id`.
    """
    from datagen.splits import split_for

    if ids is None:
        ids = [str(r.get("conversation_id", "")) for r in records]
    if len(ids) != len(records):
        raise ValueError(f"{len(ids)} ids for {len(records)} records")
    train: list[Mapping[str, Any]] = []
    held: list[tuple[int, int]] = []  # (hash, index)
    for i, (rid, record) in enumerate(zip(ids, records, strict=True)):
        if split_for(str(rid), val_fraction) == "validation":
            held.append((xxhash.xxh64_intdigest(str(rid).encode("utf-8")), i))
        else:
            train.append(record)
    if val_max is not None and len(held) > val_max:
        logger.warning(
            "%d dialogues fall in the validation split; evaluating on %d (val_max), the other %d are "
            "not used at all",
            len(held),
            val_max,
            len(held) - val_max,
        )
        held = sorted(held)[:val_max]
    chosen = {i for _, i in held}
    val = [r for i, r in enumerate(records) if i in chosen]
    return train, val


def conversations_to_sft(conversations: Iterable[Conversation]) -> list[dict[str, Any]]:
    """Render conversations as MOSS SFT records (`datagen.formats.moss.to_sft`)."""
    from datagen.formats.moss import to_sft

    return [to_sft(c) for c in conversations]


def write_sft_splits(
    train: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]], data_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """Write `train.jsonl` and `val.jsonl` (one SFT record per line, upstream's layout)."""
    data_dir = Path(data_dir)
    write_jsonl_atomic(data_dir / "train.jsonl", train)
    write_jsonl_atomic(data_dir / "val.jsonl", val)
    return data_dir / "train.jsonl", data_dir / "val.jsonl"


class SFTDataset:
    """Map-style dataset over a TokenizedSet: dicts of `input_ids` and `labels` (-100 where masked)."""

    def __init__(self, tokens: Any):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        ids, mask = self.tokens[i]
        ids = ids.astype(np.int64)
        return {"input_ids": ids, "labels": np.where(mask, ids, -100)}


@dataclass(slots=True)
class PadCollator:
    """Right-pads a batch to its longest sequence (rounded up to `multiple_of`)."""

    pad_id: int
    multiple_of: int = 1

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        width = -(-width // self.multiple_of) * self.multiple_of
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[r, :n] = torch.as_tensor(row["input_ids"])
            labels[r, :n] = torch.as_tensor(row["labels"])
            attn[r, :n] = 1
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


# --------------------------------------------------------------------------- metrics


def token_metrics_preprocess(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Keep per-token loss and argmax, not the [B, T, vocab] logits, for `token_metrics`."""
    import torch.nn.functional as F

    shift, target = logits[:, :-1].float(), labels[:, 1:]
    loss = F.cross_entropy(
        shift.reshape(-1, shift.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
    ).view(target.shape)
    return loss, shift.argmax(-1)


def token_metrics(pred: Any) -> dict[str, float]:
    """Token-weighted validation loss and token accuracy over the positions with a label."""
    import numpy as np

    loss, argmax = pred.predictions
    labels = pred.label_ids[:, 1:]
    width = min(labels.shape[1], loss.shape[1])
    labels, loss, argmax = labels[:, :width], loss[:, :width], argmax[:, :width]
    valid = labels != -100
    n = int(valid.sum())
    if n == 0:
        return {"token_loss": float("nan"), "token_accuracy": float("nan"), "tokens": 0}
    return {
        "token_loss": float(np.asarray(loss, dtype=np.float64)[valid].mean()),
        "token_accuracy": float((argmax[valid] == labels[valid]).mean()),
        "tokens": n,
    }
