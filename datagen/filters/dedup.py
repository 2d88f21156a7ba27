"""Near duplicates: MinHash signatures with LSH banding, streamed, plus Self-Instruct's ROUGE-L
criterion computed as LSH blocking and exact ROUGE-L on the few candidates.

Text becomes datagen's mixed token stream (`datagen.filters.tokens.tokenize`: one token per Han/kana
character, lower-cased words for Latin text), then word n-gram shingles. Defaults per unit:

=========  ======  =========  ===============================================================
unit       ngram   threshold  why
=========  ======  =========  ===============================================================
prompt     2       0.5        short zh/en prompts: character bigrams at Jaccard 0.5 catch ~0.95
                              of paraphrase-level near duplicates; the document default (word
                              5-grams) catches under half
dialogue   3       0.7        whole dialogues are long: 3-grams at 0.7
=========  ======  =========  ===============================================================

Signatures are numpy-vectorised over xxhash token hashes (multiply-shift permutations), about 5x
faster than `datasketch.MinHash.update_batch` per row (see bench/dedup.py); the LSH is one dict per
band keyed by a 64-bit hash of the band. A candidate counts as a duplicate only when its estimated
Jaccard (signature agreement) reaches the threshold, so LSH false positives are not dropped.

`method="rouge"` reproduces Self-Instruct/Alpaca's `max ROUGE-L F > 0.7 against the pool -> drop`
with unigram LSH blocking at a low Jaccard threshold and exact ROUGE-L (rapidfuzz's Indel
similarity, which is exactly 2*LCS/(m+n), the ROUGE-L F-measure) on the candidates only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from datagen.errors import ConfigError
from datagen.filters.tokens import shingles, tokenize

#: unit -> (ngram, threshold) defaults for the MinHash method.
UNIT_DEFAULTS: dict[str, tuple[int, float]] = {"prompt": (2, 0.5), "dialogue": (3, 0.7)}
#: Self-Instruct's ROUGE-L threshold (drop when ROUGE-L F > 0.7 against any kept prompt).
ROUGE_DEFAULT_THRESHOLD = 0.7
#: Jaccard threshold of the unigram LSH that finds ROUGE-L candidates. ROUGE-L F >= 0.7 means the
#: two prompts share most of their tokens, so unigram Jaccard is rarely under 0.4; blocking at 0.25
#: with many bands keeps recall near 1 while candidates stay few.
ROUGE_BLOCKING_THRESHOLD = 0.25
_MAX_HASH = np.uint64(32)


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
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

    def signatures(self, texts: Sequence[str], batch_tokens: int = 400_000) -> np.ndarray:
        """Signatures of texts, shape (len(texts), num_perm). An empty text gets all 0xFFFFFFFF."""
        hashes = [self.shingle_hashes(t) for t in texts]
        return self.signatures_from_hashes(hashes, batch_tokens)

    def signatures_from_hashes(self, hashes: list[list[int]], batch_tokens: int = 400_000) -> np.ndarray:
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
                with np.errstate(over="ignore"):
                    perm = ((seg[:, None] * self._a[None, :] + self._b[None, :]) >> _MAX_HASH).astype(np.uint32)
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
    and, for the ROUGE-L method, its token string."""

    signature: np.ndarray
    tokens: str | None = None


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
        self.bands, self.rows = bands or _cached_bands(lsh_threshold, num_perm)
        if self.bands * self.rows > num_perm:
            raise ConfigError(f"bands*rows ({self.bands}*{self.rows}) exceeds num_perm {num_perm}", field="bands")
        rng = np.random.default_rng(seed + 7919)
        self._band_mult = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._keys: list[str] = []
        # Signatures kept for verification, 16 bits per permutation (b-bit MinHash): enough to
        # estimate Jaccard, half the memory.
        self._sigs = np.empty((1024, num_perm), dtype=np.uint16)
        self._tokens: list[str] = []

    # -- fingerprints (pure; safe in worker processes) ---------------------------------------------

    def fingerprint(self, text: str) -> Fingerprint:
        """Signature (and token string for the ROUGE method) of one text."""
        return self.fingerprints([text])[0]

    def fingerprints(self, texts: Sequence[str]) -> list[Fingerprint]:
        """Fingerprints of many texts, vectorised."""
        sigs = self.hasher.signatures(texts)
        if self.method == "rouge":
            return [Fingerprint(sigs[i], rouge_string(t)) for i, t in enumerate(texts)]
        return [Fingerprint(sigs[i]) for i in range(len(texts))]

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        bands = sig[: self.bands * self.rows].reshape(self.bands, self.rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            return (bands * self._band_mult).sum(axis=1, dtype=np.uint64).tolist()

    # -- queries ------------------------------------------------------------------------------------

    def _candidates(self, band_keys: list[int]) -> list[int]:
        found: set[int] = set()
        for bucket, k in zip(self._buckets, band_keys, strict=True):
            v = bucket.get(k)
            if v is None:
                continue
            if isinstance(v, int):
                found.add(v)
            else:
                found.update(v)
        return sorted(found)

    def _best_match(self, fp: Fingerprint, band_keys: list[int]) -> int | None:
        cands = self._candidates(band_keys)
        if not cands:
            return None
        if self.method == "rouge":
            if not fp.tokens:
                return None
            from rapidfuzz import process
            from rapidfuzz.distance import Indel

            choices = [self._tokens[i] for i in cands]
            hit = process.extractOne(fp.tokens, choices, scorer=Indel.normalized_similarity,
                                     score_cutoff=self.threshold)
            if hit is None or hit[1] <= self.threshold:
                return None
            return cands[hit[2]]
        if not fp.signature.size or int(fp.signature[0]) == 0xFFFFFFFF and (fp.signature == 0xFFFFFFFF).all():
            return None  # an empty text duplicates nothing
        idx = np.fromiter(cands, dtype=np.int64, count=len(cands))
        agree = (self._sigs[idx] == fp.signature.astype(np.uint16)).mean(axis=1)
        # correct for the 1/65536 chance that two different 16-bit values agree
        est = (agree - 2**-16) / (1 - 2**-16)
        best = int(np.argmax(est))
        return int(idx[best]) if est[best] >= self.threshold else None

    def query_fingerprint(self, fp: Fingerprint) -> str | None:
        """Key of the closest indexed near-duplicate of a fingerprinted text, or None."""
        i = self._best_match(fp, self._band_keys(fp.signature))
        return None if i is None else self._keys[i]

    def add_fingerprint(self, key: str, fp: Fingerprint, band_keys: list[int] | None = None) -> None:
        """Index a fingerprinted text under key (no duplicate check)."""
        i = len(self._keys)
        self._keys.append(key)
        if i >= self._sigs.shape[0]:
            grown = np.empty((self._sigs.shape[0] * 2, self.num_perm), dtype=np.uint16)
            grown[:i] = self._sigs
            self._sigs = grown
        self._sigs[i] = fp.signature.astype(np.uint16)
        if self.method == "rouge":
            self._tokens.append(fp.tokens or "")
        for bucket, k in zip(self._buckets, band_keys or self._band_keys(fp.signature), strict=True):
            v = bucket.get(k)
            if v is None:
                bucket[k] = i
            elif isinstance(v, int):
                bucket[k] = [v, i]
            else:
                v.append(i)

    def check_and_add_fingerprint(self, key: str, fp: Fingerprint) -> str | None:
        """Key of an earlier near-duplicate (the text is then NOT added), or None after adding it."""
        band_keys = self._band_keys(fp.signature)
        i = self._best_match(fp, band_keys)
        if i is not None:
            return self._keys[i]
        self.add_fingerprint(key, fp, band_keys)
        return None

    def check_and_add(self, key: str, text: str) -> str | None:
        """Return the key of an earlier near-duplicate of text and do not add it; otherwise add text
        under key and return None."""
        return self.check_and_add_fingerprint(key, self.fingerprint(text))

    def check_and_add_many(self, keys: Sequence[str], texts: Sequence[str]) -> list[str | None]:
        """`check_and_add` for a batch, in order (later texts are checked against earlier ones of the
        same batch), with the signatures vectorised."""
        return [self.check_and_add_fingerprint(k, fp) for k, fp in zip(keys, self.fingerprints(texts), strict=True)]

    def query(self, text: str) -> str | None:
        """Key of the closest indexed near-duplicate of text, or None (nothing is added)."""
        return self.query_fingerprint(self.fingerprint(text))

    def add(self, key: str, text: str) -> None:
        """Index text under key without checking it."""
        self.add_fingerprint(key, self.fingerprint(text))

    def __len__(self) -> int:
        return len(self._keys)
