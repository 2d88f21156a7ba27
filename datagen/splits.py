"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import xxhash

# ------------------------------------------------------------------------------------ rows


def split_for(conversation_id: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of ids (xxh64 of the UTF-8 id), else `train`."""
    if validation_fraction <= 0:
        return "train"
    h = xxhash.xxh64_intdigest(conversation_id.encode("utf-8"))
    return "validation" if h / 2**64 < validation_fraction else "train"
