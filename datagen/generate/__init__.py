"""Generation stages: seeds -> Self-Instruct expansion -> HHH and plugin dialogues.

    from datagen.generate import generate_dialogues, ExpandConfig, DialogueConfig
    from datagen.generate.expand import expand     # (`datagen.generate.expand` is the module)

Names are imported on first use, so `import datagen.seeds.record` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExpandConfig": "datagen.generate.config",
    "DialogueConfig": "datagen.generate.config",
    "generate_dialogues": "datagen.generate.dialogues",
    "agenerate_dialogues": "datagen.generate.dialogues",
    "PromptRow": "datagen.generate.common",
    "read_prompts": "datagen.generate.common",
    "load_template": "datagen.generate.templates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datagen.generate' has no attribute {name!r}")
