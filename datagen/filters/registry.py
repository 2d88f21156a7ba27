"""Step registry: step type name -> filter class, so configs (and other stages) add steps by name.

from datagen.filters.registry import register_step
@register_step
class MyFilter(BaseFilter):
    name = "my_filter"
    def filter(self, conv): ...
"""

from __future__ import annotations

import importlib

from datagen.errors import ConfigError
from datagen.filters.base import BaseFilter

STEPS: dict[str, type[BaseFilter]] = {}

#: Modules that define datagen's built-in steps (imported on first lookup).
BUILTIN_MODULES = (
    "datagen.filters.quality",
    "datagen.filters.language",
    "datagen.filters.safety.filter",
    "datagen.filters.dedup",
    "datagen.filters.judge",
)
_loaded = False


def register_step(cls: type[BaseFilter]) -> type[BaseFilter]:
    """Class decorator: make a filter available to configs under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    STEPS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in BUILTIN_MODULES:
            importlib.import_module(mod)


def get_step(type_name: str) -> type[BaseFilter]:
    """The filter class registered as type_name; ConfigError listing the known ones otherwise."""
    _load_builtins()
    try:
        return STEPS[type_name]
    except KeyError:
        raise ConfigError(
            f"unknown filter step {type_name!r} (known: {', '.join(sorted(STEPS))})", field="steps"
        ) from None


def step_names() -> list[str]:
    """Every registered step type."""
    _load_builtins()
    return sorted(STEPS)
