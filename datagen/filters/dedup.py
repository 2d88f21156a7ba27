"""Dedup steps: `exact_dedup` (xxhash of normalised text) and `near_dedup` (MinHash LSH or
ROUGE-L), both keep-first and streaming. Hashes and signatures are computed in worker processes
(`prepare`); the index lives in the main process (`decide_batch`). A dropped row's verdict names the
row it repeats (`duplicate_of`). Given a `datagen.stage.DedupBackend` (a run on Ray), the filter run
asks it instead (`global_input`, `decide_global`), for the same verdicts over the whole stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datagen.errors import ConfigError
from datagen.filters.base import KEEP, BaseFilter, Verdict
from datagen.filters.registry import register_step
from datagen.record import Conversation
from datagen.stage import DedupBackend
from datagen.text.exact import ExactIndex, dialogue_hash, prompt_hash
from datagen.text.neardup import Fingerprint, NearDupIndex

UNITS = ("prompt", "dialogue")


def unit_text(conv: Conversation, unit: str) -> str:
    """The text a dedup unit compares: the first human turn, or every message of the dialogue."""
    if unit == "prompt":
        return conv.turns[0].human if conv.turns else ""
    return "\n".join(t for t in conv.texts() if t)


@register_step
class ExactDedupFilter(BaseFilter):
    """Drop rows whose normalised first human turn (`duplicate_prompt`) or whole dialogue
    (`duplicate_dialogue`) was seen before (NFKC, case, whitespace and punctuation folded).

    Args:
        units: which units to check, any of `prompt`, `dialogue` (default both).
    """

    name = "exact_dedup"
    stateful = True
    global_dedup = True

    def __init__(self, *, policy: str = "drop", units: list[str] | tuple[str, ...] = UNITS):
        super().__init__(policy=policy)
        bad = [u for u in units if u not in UNITS]
        if bad or not units:
            raise ConfigError(
                f"units must be a non-empty subset of {list(UNITS)}, got {list(units)}", field="units"
            )
        self.units = tuple(units)
        self._indexes = {u: ExactIndex() for u in self.units}

    def prepare(self, conv: Conversation) -> dict[str, int]:
        hashers = {"prompt": prompt_hash, "dialogue": dialogue_hash}
        return {u: hashers[u](conv) for u in self.units}

    @property
    def _checked(self) -> tuple[str, ...]:
        """The units in the order a row is checked against them."""
        return tuple(u for u in ("dialogue", "prompt") if u in self.units)

    @staticmethod
    def _duplicate(unit: str, first: str) -> Verdict:
        return Verdict(False, f"duplicate_{unit}", {"unit": unit}, duplicate_of=first)

    def decide_batch(self, items: list[tuple[Conversation, Any]]) -> list[Verdict]:
        out = []
        for conv, hashes in items:
            hashes = hashes if hashes is not None else self.prepare(conv)
            verdict = KEEP
            # check every unit before adding any, so a dropped row leaves no trace in the indexes
            for u in self._checked:
                if (first := self._indexes[u].get(hashes[u])) is not None:
                    verdict = self._duplicate(u, first)
                    break
            if verdict.keep:
                for u, h in hashes.items():
                    self._indexes[u].check_and_add(conv.id, h)
            out.append(verdict)
        return out

    def global_input(self, conv: Conversation) -> tuple[int, ...]:
        hashes = self.prepare(conv)
        return tuple(hashes[u] for u in self._checked)

    def decide_global(
        self, backend: DedupBackend, inputs: list[Any]
    ) -> tuple[Sequence[int], Sequence[int] | None]:
        return backend.exact_duplicates(inputs, step=self.step_name)

    def global_verdict(self, first: str, column: int | None) -> Verdict:
        return self._duplicate(self._checked[column or 0], first)


@register_step
class NearDedupFilter(BaseFilter):
    """Drop rows nearly duplicating an earlier kept row (`near_duplicate`), keep-first, streaming.

    Args:
        unit: `prompt` (first human turn; default) or `dialogue` (all messages).
        method: `minhash` (Jaccard of n-gram sets, default) or `rouge` (Self-Instruct's
            ROUGE-L F > threshold, via LSH blocking plus exact ROUGE-L on the candidates).
        threshold: Jaccard (minhash) or ROUGE-L (rouge) threshold; default per unit/method
            (prompt 0.5 on character bigrams, dialogue 0.7 on 3-grams, rouge 0.7).
        ngram: shingle size in tokens (minhash).
        num_perm: MinHash permutations (default 128).
    """

    name = "near_dedup"
    stateful = True
    global_dedup = True

    def __init__(
        self,
        *,
        policy: str = "drop",
        unit: str = "prompt",
        method: str = "minhash",
        threshold: float | None = None,
        ngram: int | None = None,
        num_perm: int = 128,
    ):
        super().__init__(policy=policy)
        if unit not in UNITS:
            raise ConfigError(f"unit must be one of {list(UNITS)}, got {unit!r}", field="unit")
        self.unit = unit
        self.index = NearDupIndex(unit, threshold, method=method, ngram=ngram, num_perm=num_perm)

    def prepare(self, conv: Conversation):
        return self.index.fingerprint(unit_text(conv, self.unit))

    def prepare_batch(self, convs: list[Conversation]) -> list:
        return self.index.fingerprints([unit_text(c, self.unit) for c in convs])

    def decide_batch(self, items: list[tuple[Conversation, Any]]) -> list[Verdict]:
        missing = [i for i, (_, fp) in enumerate(items) if not isinstance(fp, Fingerprint)]
        if missing:
            fps = self.index.fingerprints([unit_text(items[i][0], self.unit) for i in missing])
            items = list(items)
            for i, fp in zip(missing, fps, strict=True):
                items[i] = (items[i][0], fp)
        out = []
        for conv, fp in items:
            first = self.index.check_and_add_fingerprint(conv.id, fp)
            out.append(KEEP if first is None else self.global_verdict(first, None))
        return out

    def global_input(self, conv: Conversation) -> str:
        return unit_text(conv, self.unit)

    def decide_global(
        self, backend: DedupBackend, inputs: list[Any]
    ) -> tuple[Sequence[int], Sequence[int] | None]:
        return backend.near_duplicates(inputs, self.index.params(), step=self.step_name), None

    def global_verdict(self, first: str, column: int | None) -> Verdict:
        return Verdict(
            False,
            "near_duplicate",
            {"unit": self.unit, "method": self.index.method, "threshold": self.index.threshold},
            duplicate_of=first,
        )
