"""`datagen run CONFIG`: drive every stage; `datagen status RUN_DIR`."""

from __future__ import annotations


def register(sub) -> None:
    """Add `datagen run` and `datagen status`."""
