"""Import torch and transformers or fail with the pip line to fix it."""

from __future__ import annotations

from types import ModuleType

from datagen.errors import MissingDependencyError


def require_torch() -> tuple[ModuleType, ModuleType]:
    """Return (torch, transformers); raise MissingDependencyError naming the `moss` extra."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "moss") from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "moss") from None
    return torch, transformers
