"""The token cache: tokenised SFT records on disk, reused only when nothing they depend on changed.

Upstream `finetune_moss.py` reloads its token pickles whatever the tokenizer or data: a silent stale
cache. Here a cache folder holds `meta.json` (the key and its parts) and `tokens.npz` (ids and loss
masks, concatenated, with offsets). The key covers the source data, the tokenizer (its full
serialisation: vocabulary, merges, added tokens, normalisers), the max length, the options and the
tokenisation code version. On any mismatch the cache is rebuilt and a warning names what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datagen.io import atomic_write, write_json_atomic
from datagen.model.tokenize import TOKENIZE_VERSION, TruncationStats, tokenize_record

logger = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides a tokenizer's ids (vocab, merges, added tokens, ...)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8"))
    h.update(json.dumps(getattr(tokenizer, "added_tokens_encoder", {}), sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:32]


def records_fingerprint(records: Sequence[Mapping[str, Any]]) -> str:
    """A hash of the SFT records' canonical JSON, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:32]


@dataclass(slots=True)
class CacheKey:
    """What a cached tokenisation depends on."""

    data: str
    tokenizer: str
    max_length: int
    options: dict[str, Any] = field(default_factory=dict)
    version: int = TOKENIZE_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def changed(self, stored: Mapping[str, Any]) -> list[str]:
        """Names of the parts that differ from a stored key."""
        return [k for k, v in asdict(self).items() if stored.get(k) != v]


@dataclass(slots=True)
class TokenizedSet:
    """Training examples (ids and loss masks as int32/bool numpy arrays) and the truncation counts.
    Dialogues where no turn fits are not in it (they are counted in `stats.dropped`)."""

    ids: Any
    mask: Any
    offsets: Any
    stats: TruncationStats
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.mask[a:b]

    def lengths(self) -> list[int]:
        return [int(b - a) for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])


def tokenize_cached(
    records: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    cache_dir: str | os.PathLike | None,
    *,
    max_length: int,
    assistant_only: bool = False,
    source: str = "records",
) -> TokenizedSet:
    """Tokenise records for training, through the cache in `cache_dir` (None: no cache).

    A cache whose key differs (data, tokenizer, max length, options or code version) is rebuilt,
    with a warning naming the parts that changed.
    """
    import numpy as np

    key = CacheKey(
        data=records_fingerprint(records),
        tokenizer=tokenizer_fingerprint(tokenizer),
        max_length=max_length,
        options={"assistant_only": assistant_only},
    )
    folder = Path(cache_dir) if cache_dir is not None else None
    if folder is not None and (folder / "meta.json").is_file() and (folder / "tokens.npz").is_file():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            meta = {}
        stored = meta.get("key") or {}
        if meta.get("digest") == key.digest() and not key.changed(stored):
            with np.load(folder / "tokens.npz") as z:
                ids, mask, offsets = z["ids"], z["mask"], z["offsets"]
            logger.info("token cache hit: %s (%d examples)", folder, len(offsets) - 1)
            return TokenizedSet(
                ids=ids,
                mask=mask,
                offsets=offsets,
                stats=TruncationStats(**meta.get("stats", {})),
                from_cache=True,
            )
        logger.warning(
            "token cache %s is stale (%s changed): rebuilding",
            folder,
            ", ".join(key.changed(stored)) or "format",
        )

    stats = TruncationStats()
    all_ids: list[Any] = []
    all_mask: list[Any] = []
    offsets = [0]
    for i, record in enumerate(records):
        tok = tokenize_record(
            record, tokenizer, max_length=max_length, assistant_only=assistant_only, path=source, line=i + 1
        )
        stats.add(tok)
        if tok.empty:
            continue
        all_ids.append(np.asarray(tok.input_ids, dtype=np.int32))
        all_mask.append(np.asarray(tok.loss_mask, dtype=bool))
        offsets.append(offsets[-1] + len(tok.input_ids))
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32)
    mask = np.concatenate(all_mask) if all_mask else np.zeros(0, dtype=bool)
    off = np.asarray(offsets, dtype=np.int64)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)  # never pair an old key with new tokens
        with atomic_write(folder / "tokens.npz", "wb") as fh:
            np.savez(fh, ids=ids, mask=mask, offsets=off)
        write_json_atomic(
            folder / "meta.json",
            {"digest": key.digest(), "key": asdict(key), "stats": stats.to_dict(), "examples": len(off) - 1},
            ensure_ascii=True,
            newline=False,
        )
    return TokenizedSet(ids=ids, mask=mask, offsets=off, stats=stats)
