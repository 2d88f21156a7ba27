"""The `safety` step (work in progress: the full checker lands next)."""

from __future__ import annotations

from datagen.filters.base import BaseFilter, FilterResult
from datagen.filters.registry import register_step
from datagen.record import Conversation


@register_step
class SafetyFilter(BaseFilter):
    """Drop dialogues where the assistant complied with a harmful request, produced harmful content
    or leaked personal data."""

    name = "safety"
    supports_redact = True

    def filter(self, conv: Conversation) -> FilterResult:
        return True
