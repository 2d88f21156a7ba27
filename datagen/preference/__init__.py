"""Preference data from the same prompts, engine and journal as the dialogues: candidate answers
for each assistant turn of the kept dialogues, a pairwise judge read in both orders, and pairs
exported for TRL (`pairs.jsonl`) and as MOSS text (`pairs.moss.jsonl`). A stage after the
review step and before fine-tuning; `datagen dpo` (datagen.finetune.dpo) trains on the pairs.

    candidates.py  where candidates come from (sources, contrastive answers of plugin turns)
    local.py       the local model's own samples (transformers, MOSS format)
    rank.py        judge replies -> verdicts (both orders, margins, drop reasons)
    export.py      TRL conversational rows, MOSS text rows, reviewers' pairs
    run.py         the stage: `make_preference`
"""

from datagen.preference.config import CONTRASTIVE_KINDS, JudgeConfig, PreferenceConfig, SourceConfig
from datagen.preference.run import OUTPUTS, PreferenceStats, make_preference

__all__ = [
    "CONTRASTIVE_KINDS",
    "OUTPUTS",
    "JudgeConfig",
    "PreferenceConfig",
    "PreferenceStats",
    "SourceConfig",
    "make_preference",
]
