"""Publish a run: dataset folder, card, Hub upload."""

from __future__ import annotations


def register(sub) -> None:
    """Add `datagen publish`."""
