"""Subcommands of this stage (registered by `datagen.cli`)."""

from __future__ import annotations


def register(sub) -> None:
    """Add this stage's subcommands to the `datagen` parser."""
