"""Part of the former datagen/moss/finetune.py (see ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass

from datagen.errors import ConfigError
from datagen.model.attention import ATTENTIONS
from datagen.model.tokenize import TOKENIZATIONS
from datagen.settings import Section

#: Upstream's sampling settings, written into the saved generation_config.json.
GENERATION_DEFAULTS = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 40,
    "repetition_penalty": 1.02,
    "max_new_tokens": 512,
}


@dataclass(slots=True)
class FinetuneConfig(Section):
    """Fine-tuning settings (the `finetune:` section of a run config; CLI flags override them).

    Args:
        max_length: the context; turns past it are dropped (default: the model's, 2048 for MOSS).
        assistant_only: also mask the Human turns (upstream trains on them).
        tokenization: `auto` (upstream's token stream for a MOSS checkpoint, else datagen's),
            `upstream` or `datagen` (see `datagen.model.tokenize`); the saved tokenizer keeps it.
        epochs: passes over the training split; `max_steps` (optimizer steps) wins when set.
        lr: peak learning rate (default 1e-5, or 2e-4 with LoRA). Upstream used 9e-6 to 1.5e-5.
        weight_decay, warmup_ratio: AdamW decay (not on biases and norms) and the cosine warm-up share.
        batch_size: sequences per device per micro-batch (packed rows of `max_length` tokens with
            `packing`); `grad_accum` micro-batches per step. The global batch is batch_size x
            grad_accum x the number of processes (`torchrun --nproc_per_node N`).
        packing: lay dialogues end to end in rows of `max_length` tokens (each keeps its own
            positions and attends only to itself) instead of padding each batch to its longest;
            `datagen.finetune.packing`.
        attention: `auto` (SDPA where the model can run it, MOSS included), `eager` or `sdpa`
            (`datagen.model.attention`).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        precision: `auto` (fp32 on CPU, bf16 on GPUs that have it, else fp16), `bf16`, `fp16`, `fp32`.
        lora: train LoRA adapters instead of all weights; `lora_r`, `lora_alpha`, `lora_dropout`,
            `lora_targets` (module names, or `all-linear`); `merge_lora` folds them into the saved model.
        val_fraction, val_max: share of dialogues held out, by the published dataset's rule (a hash of
            the conversation id, `datagen.splits.split_for`): the same ids are in validation here and
            on the Hub. At most `val_max` of them are evaluated; the rest are not trained on either.
        eval_steps: evaluate every N steps (and always at the end); `eval_before` also at step 0.
        save_steps: write a Trainer checkpoint every N steps (resumable); `save_dtype` of the final
            model: `auto` keeps the source checkpoint's dtype.
        device: `cpu`, `cuda` (default: a GPU when there is one).
    """

    max_length: int | None = None
    assistant_only: bool = False
    tokenization: str = "auto"
    epochs: float = 2.0
    max_steps: int | None = None
    lr: float | None = None
    weight_decay: float = 0.1
    warmup_ratio: float = 0.05
    batch_size: int = 4
    grad_accum: int = 1
    packing: bool = True
    attention: str = "auto"
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    precision: str = "auto"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] | str = "all-linear"
    merge_lora: bool = True
    val_fraction: float = 0.05
    val_max: int = 1000
    eval_steps: int | None = None
    eval_before: bool = True
    log_steps: int = 10
    save_steps: int | None = None
    save_dtype: str = "auto"
    group_by_length: bool = False
    seed: int = 0
    device: str | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "lora_r": self.lora_r,
            "log_steps": self.log_steps,
            "val_max": self.val_max,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("max_length", "max_steps", "eval_steps", "save_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive integer or null, got {value!r}", field=name)
        if self.lr is not None and not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ConfigError(f"must be a positive number, got {self.lr!r}", field="lr")
        if not (isinstance(self.epochs, int | float) and self.epochs > 0):
            raise ConfigError(f"must be a positive number, got {self.epochs!r}", field="epochs")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"must be within [0, 1), got {self.warmup_ratio!r}", field="warmup_ratio")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"must be within [0, 1), got {self.val_fraction!r}", field="val_fraction")
        if self.weight_decay < 0:
            raise ConfigError("must not be negative", field="weight_decay")
        if self.tokenization not in ("auto", *TOKENIZATIONS):
            raise ConfigError(
                f"must be auto, {' or '.join(TOKENIZATIONS)}, got {self.tokenization!r}", field="tokenization"
            )
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"must be {', '.join(ATTENTIONS)}, got {self.attention!r}", field="attention")
        for name in (
            "packing",
            "lora",
            "merge_lora",
            "assistant_only",
            "gradient_checkpointing",
            "eval_before",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"must be true or false, got {getattr(self, name)!r}", field=name)
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError("must be auto, bf16, fp16 or fp32", field="precision")
        if self.save_dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError("must be auto, bf16, fp16 or fp32", field="save_dtype")
        if not isinstance(self.lora_targets, str | list):
            raise ConfigError("must be a list of module names or 'all-linear'", field="lora_targets")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 1e-5)
