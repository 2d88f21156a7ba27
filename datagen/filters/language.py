"""The `language` step: decide each dialogue's language by script (see `language.py`), fill
`conv.language` when it is empty, drop dialogues in languages not asked for, and flag drift (the
assistant answering in another language than the user wrote in)."""

from __future__ import annotations

from datagen.filters.base import BaseFilter, FilterResult, Verdict
from datagen.filters.registry import register_step
from datagen.record import Conversation
from datagen.text.language import DRIFT_OK_CATEGORIES, detect_dialogue


@register_step
class LanguageFilter(BaseFilter):
    """Keep dialogues in the wanted languages.

    Args:
        languages: allowed codes (`zh`, `en`, ...; `zh-Hans`/`zh-Hant` restrict the Chinese variant);
            None allows any. Default: zh and en (MOSS's languages).
        drop_undecided: drop dialogues where no turn gets a verdict (`no_language`). Default False.
        check_drift: drop/tag dialogues whose assistant answers in another language
            (`language_drift`), except categories in `drift_ok_categories` and translation requests.
        drift_ok_categories: categories where switching language is the point.
        set_language: write the detected language into `conv.language` when it is empty (zh as
            `zh-Hans`/`zh-Hant` when the characters tell, else `zh`).
    """

    name = "language"

    def __init__(
        self,
        *,
        policy: str = "drop",
        languages: list[str] | None = ("zh", "en"),
        drop_undecided: bool = False,
        check_drift: bool = True,
        drift_ok_categories: list[str] | None = None,
        set_language: bool = True,
    ):
        super().__init__(policy=policy)
        self.languages = None if languages is None else frozenset(languages)
        self.drop_undecided = drop_undecided
        self.check_drift = check_drift
        self.drift_ok = (
            frozenset(drift_ok_categories) if drift_ok_categories is not None else DRIFT_OK_CATEGORIES
        )
        self.set_language = set_language

    def filter(self, conv: Conversation) -> FilterResult:
        d = detect_dialogue(conv, drift_ok_categories=self.drift_ok)
        tag = d.variant if d.language == "zh" and d.variant else d.language
        updates = {"language": tag} if self.set_language and not conv.language and tag else None
        if d.language is None:
            return Verdict(not self.drop_undecided, None if not self.drop_undecided else "no_language")
        if self.languages is not None and d.language not in self.languages and tag not in self.languages:
            return Verdict(False, f"language_{tag}", {"language": tag}, updates=updates)
        if self.check_drift and d.drift:
            turns = []
            for i in d.drift_turns:
                vh, va = d.verdicts[2 * (i - 1)][1], d.verdicts[2 * (i - 1) + 1][1]
                turns.append({"turn": i, "human": vh.language, "assistant": va.language})
            return Verdict(False, "language_drift", {"language": tag, "turns": turns}, updates=updates)
        return Verdict(True, updates=updates)
