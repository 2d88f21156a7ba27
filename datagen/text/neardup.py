"""Near duplicates: MinHash signatures with LSH banding, streamed, plus Self-Instruct's ROUGE-L
criterion computed as LSH blocking and exact ROUGE-L on the few candidates.

Text becomes datagen's mixed token stream (`datagen.text.tokens.tokenize`: one token per Han/kana
character, lower-cased words for Latin text), then word n-gram shingles. Defaults per unit:

=========  ======  =========  ===============================================================
unit       ngram   threshold  why
=========  ======  =========  ===============================================================
prompt     2       0.5        short zh/en prompts: character bigrams at Jaccard 0.5 catch ~0.95
                              of paraphrase-level near duplicates; the document default (word
                              5-grams) catches under half
dialogue   3       0.7        whole dialogues are long: 3-grams at 0.7
=========  ======  =========  ===============================================================

Signatures are numpy-vectorised over xxhash token hashes (multiply-shift permutations),
faster than `datasketch.MinHash.update_batch` per row (4-10x in bench/dedup.py); the LSH is one dict per
band keyed by a 64-bit hash of the band. A candidate counts as a duplicate only when its estimated
Jaccard (signature agreement) reaches the threshold, so LSH false positives are not dropped.

`method="rouge"` reproduces Self-Instruct/Alpaca's `max ROUGE-L F > 0.7 against the pool -> drop`
with unigram LSH blocking at a low Jaccard threshold and exact ROUGE-L (rapidfuzz's Indel
similarity, which is exactly 2*LCS/(m+n), the ROUGE-L F-measure) on the candidates only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import xxhash

from datagen.errors import ConfigError
from datagen.text.tokens import shingles, tokenize

#: unit -> (ngram, threshold) defaults for the MinHash method.
UNIT_DEFAULTS: dict[str, tuple[int, float]] = {"prompt": (2, 0.5), "dialogue": (3, 0.7)}
#: Self-Instruct's ROUGE-L threshold (drop when ROUGE-L F > 0.7 against any kept prompt).
ROUGE_DEFAULT_THRESHOLD = 0.7
#: Jaccard threshold of the unigram LSH that finds ROUGE-L candidates. ROUGE-L F >= 0.7 means the
#: two prompts share most of their tokens, so unigram Jaccard is rarely under 0.4; blocking at 0.25
#: with many bands keeps recall near 1 while candidates stay few.
ROUGE_BLOCKING_THRESHOLD = 0.25
_MAX_HASH = np.uint64(32)


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted false-positive and
    false-negative areas of the LSH S-curve around threshold (datasketch's rule)."""
    best, best_err = (1, num_perm), math.inf
    xs_lo = np.linspace(0.0, threshold, 200)
    xs_hi = np.linspace(threshold, 1.0, 200)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - xs_lo**r) ** b, xs_lo)
            fn = np.trapezoid((1 - xs_hi**r) ** b, xs_hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def _cached_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    key = (round(threshold, 4), num_perm)
    if key not in _BANDS_CACHE:
        _BANDS_CACHE[key] = optimal_bands(threshold, num_perm)
    return _BANDS_CACHE[key]


_BANDS_CACHE: dict[tuple[float, int], tuple[int, int]] = {}


class MinHasher:
    """MinHash signatures (uint32, `num_perm` wide) of texts' n-gram shingle sets.

    Permutations are multiply-shift hashes of 64-bit xxh3 shingle hashes, drawn from `seed`, so the
    same text always gets the same signature, in any process.
    """

    def __init__(self, num_perm: int = 128, ngram: int = 1, seed: int = 1):
        if num_perm < 8:
            raise ConfigError("num_perm must be at least 8", field="num_perm")
        if ngram < 1:
            raise ConfigError("ngram must be at least 1", field="ngram")
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def shingle_hashes(self, text: str) -> list[int]:
        """64-bit hashes of text's distinct shingles."""
        sh = shingles(tokenize(text), self.ngram)
        return [xxhash.xxh3_64_intdigest(s.encode("utf-8")) for s in set(sh)]

    def signatures(self, texts: Sequence[str], batch_tokens: int = 50_000) -> np.ndarray:
        """Signatures of texts, shape (len(texts), num_perm). An empty text gets all 0xFFFFFFFF."""
        hashes = [self.shingle_hashes(t) for t in texts]
        return self.signatures_from_hashes(hashes, batch_tokens)

    def signatures_from_hashes(self, hashes: list[list[int]], batch_tokens: int = 50_000) -> np.ndarray:
        n = len(hashes)
        out = np.full((n, self.num_perm), 0xFFFFFFFF, dtype=np.uint32)
        lens = np.fromiter((len(h) for h in hashes), dtype=np.int64, count=n)
        flat = np.fromiter((x for h in hashes for x in h), dtype=np.uint64, count=int(lens.sum()))
        offs = np.concatenate([[0], np.cumsum(lens)])
        start = 0
        while start < n:
            # rows [start, end) whose shingles fit the batch (at least one row)
            end = int(np.searchsorted(offs, offs[start] + batch_tokens, side="right")) - 1
            end = min(max(end, start + 1), n)
            seg = flat[offs[start] : offs[end]]
            rows = np.nonzero(lens[start:end])[0]
            if rows.size:
                # in place: one (shingles x num_perm) buffer, no temporaries
                perm = np.multiply(seg[:, None], self._a[None, :])
                perm += self._b[None, :]
                perm >>= _MAX_HASH
                starts = (offs[start:end] - offs[start])[rows]
                out[start + rows] = np.minimum.reduceat(perm, starts, axis=0)
            start = end
        return out

    def signature(self, text: str) -> np.ndarray:
        """Signature of one text, shape (num_perm,)."""
        return self.signatures([text])[0]


def rouge_string(text: str) -> str:
    """Text's token stream as a string, one code point per token, so that rapidfuzz's C LCS works on
    tokens: Han/kana/Hangul keep their own code point, every other token maps by xxh32 into planes
    4-16 (851,968 code points, unused by any script)."""
    out = []
    for tok in tokenize(text):
        if len(tok) == 1 and ord(tok) >= 0x1100:
            out.append(tok)
        else:
            out.append(chr(0x40000 + xxhash.xxh32_intdigest(tok.encode("utf-8")) % 0xD0000))
    return "".join(out)


def _rf_process():
    from rapidfuzz import process

    return process


def _rf_indel():
    from rapidfuzz.distance import Indel

    return Indel


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure of two texts over datagen's token stream (2*LCS / (len_a + len_b)); 0 when
    either is empty (as rouge_score)."""
    from rapidfuzz.distance import Indel

    sa, sb = rouge_string(a), rouge_string(b)
    if not sa or not sb:
        return 0.0
    return Indel.normalized_similarity(sa, sb)


@dataclass(slots=True)
class Fingerprint:
    """What the index needs about one text, computable in a worker process: its MinHash signature
    (16-bit, b-bit MinHash: enough to estimate Jaccard, half the memory), its LSH band keys (from the
    full 32-bit signature) and, for the ROUGE-L method, its token string. `empty` texts match
    nothing."""

    signature: np.ndarray
    band_keys: list[int]
    tokens: str | None = None
    empty: bool = False


@dataclass(slots=True)
class FingerprintBatch:
    """Fingerprints of many texts as arrays (one pickle per batch between processes)."""

    signatures: np.ndarray  # (n, num_perm) uint16
    band_keys: np.ndarray  # (n, bands) uint64
    empty: np.ndarray  # (n,) bool
    tokens: list[str] | None = None

    def __len__(self) -> int:
        return len(self.signatures)

    def rows(self) -> list[Fingerprint]:
        keys = self.band_keys.tolist()
        empty = self.empty.tolist()
        toks = self.tokens
        return [
            Fingerprint(self.signatures[i], keys[i], toks[i] if toks is not None else None, empty[i])
            for i in range(len(keys))
        ]


_EMPTY32 = 0xFFFFFFFF


class NearDupIndex:
    """A streaming near-duplicate index: add texts one by one (or in batches), and ask whether a new
    text nearly duplicates one already in.

    Args:
        unit: `prompt` or `dialogue`; picks ngram and threshold defaults (see the module docstring).
        threshold: Jaccard threshold (MinHash) or ROUGE-L F threshold (rouge; duplicate when above).
        method: `minhash` (Jaccard of n-gram shingle sets) or `rouge` (Self-Instruct's ROUGE-L).
        ngram: shingle size in tokens (MinHash method only; rouge blocks on unigrams).
        num_perm: MinHash permutations.
        bands: LSH (bands, rows); by default the datasketch-style optimum for the threshold.
        seed: permutation seed.

    Empty texts are never duplicates and are not indexed. Memory: about 2*num_perm bytes of
    signature plus one dict entry per band per indexed text (about 1.5 KB per text at the prompt
    defaults).

    Example (the Self-Instruct loop)::

        index = NearDupIndex("prompt")
        for i, prompt in enumerate(new_prompts):
            dup_of = index.check_and_add(f"p{i}", prompt)
            if dup_of is not None:
                ...  # count it as a near duplicate of dup_of
    """

    def __init__(
        self,
        unit: str = "prompt",
        threshold: float | None = None,
        *,
        method: str = "minhash",
        ngram: int | None = None,
        num_perm: int = 128,
        bands: tuple[int, int] | None = None,
        seed: int = 1,
    ):
        if unit not in UNIT_DEFAULTS:
            raise ConfigError(f"unknown unit {unit!r} (choose from {', '.join(UNIT_DEFAULTS)})", field="unit")
        if method not in ("minhash", "rouge"):
            raise ConfigError(f"unknown method {method!r} (choose minhash or rouge)", field="method")
        d_ngram, d_threshold = UNIT_DEFAULTS[unit]
        self.unit, self.method = unit, method
        if method == "rouge":
            self.threshold = ROUGE_DEFAULT_THRESHOLD if threshold is None else float(threshold)
            self.ngram = 1
            lsh_threshold = ROUGE_BLOCKING_THRESHOLD
        else:
            self.threshold = d_threshold if threshold is None else float(threshold)
            self.ngram = d_ngram if ngram is None else int(ngram)
            lsh_threshold = self.threshold
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}", field="threshold")
        self.hasher = MinHasher(num_perm=num_perm, ngram=self.ngram, seed=seed)
        self.num_perm = num_perm
        self.bands, self.rows = tuple(bands) if bands else _cached_bands(lsh_threshold, num_perm)
        if self.bands * self.rows > num_perm:
            raise ConfigError(
                f"bands*rows ({self.bands}*{self.rows}) exceeds num_perm {num_perm}", field="bands"
            )
        rng = np.random.default_rng(seed + 7919)
        self._band_mult = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(
            1
        )
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._keys: list[str] = []
        self._sigs = np.empty((1024, num_perm), dtype=np.uint16)
        self._tokens: list[str] = []
        # b-bit correction: two different 16-bit values agree with probability 2^-16
        self._min_agree = int(np.ceil((self.threshold * (1 - 2**-16) + 2**-16) * num_perm - 1e-9))

    # -- fingerprints (pure; safe in worker processes) ---------------------------------------------

    def fingerprint_batch(self, texts: Sequence[str]) -> FingerprintBatch:
        """Fingerprints of many texts, vectorised (signatures and band keys)."""
        sigs = self.hasher.signatures(texts)
        empty = sigs[:, 0] == _EMPTY32
        if empty.any():
            empty &= (sigs == _EMPTY32).all(axis=1)
        bands = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = (bands * self._band_mult).sum(axis=2, dtype=np.uint64)
        toks = [rouge_string(t) for t in texts] if self.method == "rouge" else None
        return FingerprintBatch(sigs.astype(np.uint16), keys, empty, toks)

    def fingerprints(self, texts: Sequence[str]) -> list[Fingerprint]:
        """Per-text fingerprints (see `fingerprint_batch`)."""
        return self.fingerprint_batch(texts).rows()

    def fingerprint(self, text: str) -> Fingerprint:
        """Fingerprint of one text."""
        return self.fingerprints([text])[0]

    # -- the index ------------------------------------------------------------------------------------

    def _match(self, sig: np.ndarray, band_keys: list[int], tokens: str | None) -> int | None:
        # map() keeps the per-band loop in C: this lookup is the hot path of a million-row run
        hits = [v for v in map(dict.get, self._buckets, band_keys) if v is not None]
        return self._best(sig, hits, tokens) if hits else None

    def _best(self, sig: np.ndarray, hits: list, tokens: str | None) -> int | None:
        """The verified best candidate among bucket hits (ints or lists of ints), or None."""
        if len(hits) == 1 and isinstance(hits[0], int):
            cands = hits
        else:
            found: set[int] = set()
            for v in hits:
                if isinstance(v, int):
                    found.add(v)
                else:
                    found.update(v)
            cands = sorted(found)
        if self.method == "rouge":
            return self._rouge_match(tokens, cands)
        if len(cands) == 1:
            c = cands[0]
            return c if int(np.count_nonzero(self._sigs[c] == sig)) >= self._min_agree else None
        agree = np.count_nonzero(self._sigs[cands] == sig, axis=1)
        best = int(np.argmax(agree))  # the closest; the earliest among equals
        return cands[best] if int(agree[best]) >= self._min_agree else None

    def _check_and_add(
        self, key: str, sig: np.ndarray, band_keys: list[int], tokens: str | None
    ) -> str | None:
        # Insert first and look at what was there: one dict operation per band for a new text (the
        # common case); a duplicate takes its entries back out.
        i = len(self._keys)
        olds = list(map(dict.setdefault, self._buckets, band_keys, repeat(i)))
        hits = [v for v in olds if v is not i]
        best = self._best(sig, hits, tokens) if hits else None
        if best is not None:
            for bucket, k, v in zip(self._buckets, band_keys, olds, strict=True):
                if v is i:
                    del bucket[k]
            return self._keys[best]
        for bucket, k, v in zip(self._buckets, band_keys, olds, strict=True):
            if v is not i:
                if isinstance(v, int):
                    bucket[k] = [v, i]
                else:
                    v.append(i)
        self._store(key, sig, tokens)
        return None

    def _store(self, key: str, sig: np.ndarray, tokens: str | None) -> None:
        i = len(self._keys)
        self._keys.append(key)
        if i >= self._sigs.shape[0]:
            grown = np.empty((self._sigs.shape[0] * 2, self.num_perm), dtype=np.uint16)
            grown[:i] = self._sigs
            self._sigs = grown
        self._sigs[i] = sig
        if self.method == "rouge":
            self._tokens.append(tokens or "")

    def _rouge_match(self, tokens: str | None, cands: list[int]) -> int | None:
        """The candidate with the highest ROUGE-L F above the threshold, or None."""
        if not tokens:
            return None
        n = len(tokens)
        # F = 2*LCS/(m+n) <= 2*min(m,n)/(m+n): skip candidates whose length alone rules them out
        lo, hi = n * self.threshold / (2 - self.threshold), n * (2 - self.threshold) / self.threshold
        choices = [(i, self._tokens[i]) for i in cands if lo <= len(self._tokens[i]) <= hi]
        if not choices:
            return None
        # rapidfuzz's normalised Indel similarity is exactly 2*LCS/(m+n); with the cutoff it skips the
        # rest early, in C
        hits = _rf_process().extract(
            tokens,
            [c for _, c in choices],
            scorer=_rf_indel().normalized_similarity,
            limit=None,
            score_cutoff=self.threshold - 1e-6,
        )
        best, best_f = None, self.threshold
        for _, score, j in hits:
            m = len(choices[j][1])
            lcs = round(score * (m + n) / 2)
            # rouge_score's own arithmetic (p = lcs/m, r = lcs/n, f = 2pr/(p+r)), so that a pair exactly
            # at the threshold is decided as the pool filter decides it
            p, r = lcs / m, lcs / n
            f = 2 * p * r / (p + r)
            if f > best_f:
                best, best_f = choices[j][0], f
        return best

    def _add(self, key: str, sig: np.ndarray, band_keys: list[int], tokens: str | None) -> None:
        i = len(self._keys)
        olds = list(map(dict.setdefault, self._buckets, band_keys, repeat(i)))
        for bucket, k, v in zip(self._buckets, band_keys, olds, strict=True):
            if v is not i:  # the bucket already held other texts
                if isinstance(v, int):
                    bucket[k] = [v, i]
                else:
                    v.append(i)
        self._store(key, sig, tokens)

    def query_fingerprint(self, fp: Fingerprint) -> str | None:
        """Key of the closest indexed near-duplicate of a fingerprinted text, or None."""
        if fp.empty:
            return None
        i = self._match(fp.signature, fp.band_keys, fp.tokens)
        return None if i is None else self._keys[i]

    def add_fingerprint(self, key: str, fp: Fingerprint) -> None:
        """Index a fingerprinted text under key (no duplicate check; empty texts are skipped)."""
        if not fp.empty:
            self._add(key, fp.signature, fp.band_keys, fp.tokens)

    def check_and_add_fingerprint(self, key: str, fp: Fingerprint) -> str | None:
        """Key of an earlier near-duplicate (the text is then NOT added), or None after adding it."""
        if fp.empty:
            return None
        return self._check_and_add(key, fp.signature, fp.band_keys, fp.tokens)

    def check_and_add_batch(self, keys: Sequence[str], batch: FingerprintBatch) -> list[str | None]:
        """`check_and_add` for a fingerprinted batch, in order."""
        out: list[str | None] = []
        band_keys = batch.band_keys.tolist()
        empty = batch.empty.tolist()
        sigs = batch.signatures
        toks = batch.tokens
        for j, key in enumerate(keys):
            if empty[j]:
                out.append(None)
                continue
            out.append(self._check_and_add(key, sigs[j], band_keys[j], toks[j] if toks is not None else None))
        return out

    def check_and_add(self, key: str, text: str) -> str | None:
        """Return the key of an earlier near-duplicate of text and do not add it; otherwise add text
        under key and return None."""
        return self.check_and_add_batch([key], self.fingerprint_batch([text]))[0]

    def check_and_add_many(self, keys: Sequence[str], texts: Sequence[str]) -> list[str | None]:
        """`check_and_add` for a batch, in order (later texts are checked against earlier ones of the
        same batch), with the signatures vectorised."""
        return self.check_and_add_batch(keys, self.fingerprint_batch(texts))

    def check_and_add_stream(
        self, items: Iterable[tuple[str, str]], *, workers: int | None = None, chunk_size: int = 5000
    ) -> Iterator[tuple[str, str | None]]:
        """`check_and_add` over a stream of (key, text), yielding (key, duplicate_of or None) in
        order. With workers > 1, fingerprints are computed in that many worker processes while this
        process keeps the index (decisions in input order, the same as a serial run)."""
        chunks = _chunked(items, chunk_size)
        if (workers or 1) <= 1:
            for chunk in chunks:
                keys = [k for k, _ in chunk]
                yield from zip(keys, self.check_and_add_many(keys, [t for _, t in chunk]), strict=True)
            return
        from concurrent.futures import ProcessPoolExecutor

        from datagen.procs import pool_context

        params = self.params()
        ctx = pool_context()
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            pending = []
            for chunk in chunks:
                keys = [k for k, _ in chunk]
                pending.append((keys, pool.submit(_fingerprint_worker, params, [t for _, t in chunk])))
                while len(pending) > 2 * workers:
                    keys, fut = pending.pop(0)
                    yield from zip(keys, self.check_and_add_batch(keys, fut.result()), strict=True)
            for keys, fut in pending:
                yield from zip(keys, self.check_and_add_batch(keys, fut.result()), strict=True)

    def params(self) -> dict:
        """Constructor arguments that rebuild an index computing the same fingerprints."""
        return {
            "unit": self.unit,
            "threshold": self.threshold,
            "method": self.method,
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "bands": (self.bands, self.rows),
            "seed": self.hasher.seed,
        }

    def query(self, text: str) -> str | None:
        """Key of the closest indexed near-duplicate of text, or None (nothing is added)."""
        return self.query_fingerprint(self.fingerprint(text))

    def add(self, key: str, text: str) -> None:
        """Index text under key without checking it."""
        self.add_fingerprint(key, self.fingerprint(text))

    def __len__(self) -> int:
        return len(self._keys)


_WORKER_INDEX: dict[tuple, NearDupIndex] = {}


def _fingerprint_worker(params: dict, texts: list[str]) -> FingerprintBatch:
    key = tuple(sorted((k, str(v)) for k, v in params.items()))
    index = _WORKER_INDEX.get(key)
    if index is None:
        index = _WORKER_INDEX[key] = NearDupIndex(**params)
    return index.fingerprint_batch(texts)


def _chunked(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = []
        for x in it:
            chunk.append(x)
            if len(chunk) >= size:
                break
        if not chunk:
            return
        yield chunk
