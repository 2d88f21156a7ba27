"""`datagen finetune`: supervised fine-tuning of a local MOSS (or any causal LM) on datagen dialogues.

What upstream `finetune_moss.py` does, minus its traps: the same tokenisation and label rule
(`datagen.model.tokenize`), with an `assistant_only` option; a token cache that cannot go stale
(`datagen.model.cache`); counted truncations; no DeepSpeed requirement. Training runs on the
transformers `Trainer`: AdamW, cosine schedule with warm-up, weight decay off for biases and norms,
gradient accumulation with token-weighted loss, gradient checkpointing, bf16/fp16 on GPU, optional
LoRA (peft), SDPA attention (`datagen.model.attention`) and sequence packing
(`datagen.finetune.packing`).

Several processes: launch the same command under torchrun (or `accelerate launch`), e.g.
`torchrun --nproc_per_node 8 -m datagen finetune ...` on one machine (add `--nnodes`/`--rdzv-endpoint`
for several). The Trainer runs DDP (gloo on CPU): every process loads the model and the same split,
takes its share of each global batch (batch_size x grad_accum x processes) and the loss is averaged
over all their tokens; only rank 0 writes data/, cache/, model/ and the logs.

Output folder:

    data/train.jsonl, data/val.jsonl   the split, in MOSS SFT schema (upstream's --data_dir layout)
    cache/{train,val}/                 token cache (meta.json + tokens.npz)
    checkpoints/                       Trainer checkpoints (only with save_steps), for resume
    model/                             the result: a standard Hugging Face folder, tokenizer included,
                                       EOS `<eom>`; `AutoModelForCausalLM.from_pretrained` loads it
    metrics.json, config.json          what happened and with which settings
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, InputError
from datagen.finetune.config import GENERATION_DEFAULTS, FinetuneConfig
from datagen.finetune.data import (
    PadCollator,
    SFTDataset,
    conversations_to_sft,
    split_records,
    token_metrics,
    token_metrics_preprocess,
    write_sft_splits,
)
from datagen.finetune.packing import PackCollator, PackedDataset, keeps_sequences_apart
from datagen.model._deps import require_torch
from datagen.record import Conversation

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- training


def _log_callback(path: Path, progress: bool) -> Any:
    """A Trainer callback: a progress bar and one line per log on stderr, and the same logs appended
    to `path` as JSON lines; by the first process only (under torchrun every process runs it)."""
    import sys

    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class StderrLog(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if progress and state.is_world_process_zero:
                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    desc="finetune",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            logs = {
                k: v for k, v in (logs or {}).items() if not k.endswith(("_per_second", "preparation_time"))
            }
            line = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            msg = f"[finetune] step {state.global_step}/{state.max_steps} {line}"
            if self.bar is not None:
                self.bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")

    return StderrLog()


def _precision(config: FinetuneConfig, device: str) -> str:
    import torch

    if config.precision != "auto":
        if config.precision in ("bf16", "fp16") and not device.startswith("cuda"):
            raise ConfigError(f"{config.precision} needs a GPU; use fp32 on {device}", field="precision")
        return config.precision
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _module_name(model: Any, module: Any) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name.rsplit(".", 1)[-1]
    return None


def _apply_lora(model: Any, config: FinetuneConfig, added_token_ids: list[int]) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from datagen.errors import MissingDependencyError

        raise MissingDependencyError("peft", "moss") from None
    modules_to_save = None
    if added_token_ids:
        # New end tags have untrained rows: train the embedding (and an untied head) in full.
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        names = {_module_name(model, emb)}
        if head is not None and head.weight is not emb.weight:
            names.add(_module_name(model, head))
        modules_to_save = sorted(n for n in names if n)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, lora)


def _save_dtype(config: FinetuneConfig, source_config: Mapping[str, Any], torch: Any) -> Any:
    names = {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    if config.save_dtype != "auto":
        return names[config.save_dtype]
    return names.get(str(source_config.get("torch_dtype") or source_config.get("dtype")), torch.float32)


def _training_args_compat(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Adapt TrainingArguments names across transformers 5.x releases: newer ones call gradient
    checkpointing `activation_checkpointing` and length grouping `train_sampling_strategy`."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    out = dict(kwargs)
    if "activation_checkpointing" not in names and "activation_checkpointing" in out:
        out["gradient_checkpointing"] = out.pop("activation_checkpointing")
        out["gradient_checkpointing_kwargs"] = out.pop("activation_checkpointing_kwargs", None)
    if "train_sampling_strategy" not in names and "train_sampling_strategy" in out:
        out["group_by_length"] = out.pop("train_sampling_strategy") == "group_by_length"
    return {k: v for k, v in out.items() if k in names}


def world_size() -> int:
    """The number of training processes (torchrun's WORLD_SIZE; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the process that writes files: the only one, or torchrun's rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def training_examples(tokens: Any, config: FinetuneConfig, row_length: int | None) -> Any:
    """The Trainer's dataset over a TokenizedSet: packed rows of `row_length` tokens with
    `config.packing`, else one dialogue per example."""
    if config.packing:
        return PackedDataset(tokens, row_length or max(tokens.lengths(), default=1))
    return SFTDataset(tokens)


def build_trainer(
    net: Any,
    train_set: Any,
    val_set: Any | None,
    config: FinetuneConfig,
    *,
    out_dir: str | os.PathLike,
    device: str,
    precision: str,
    pad_id: int,
    row_length: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The transformers `Trainer` that `finetune` runs (also used by bench/moss_gpu.py).

    `train_set`/`val_set` are TokenizedSets, packed into rows of `row_length` tokens (default: the
    longest example) when `config.packing`; checkpoints go to `out_dir/checkpoints`, logs to
    `out_dir/train_log.jsonl` and stderr (never stdout). Under torchrun the Trainer runs DDP (gloo
    on CPU): each process takes its share of every global batch.
    """
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    out = Path(out_dir)
    on_gpu = device.startswith("cuda")
    train_data = training_examples(train_set, config, row_length)
    eval_on = val_set is not None and len(val_set) > 0
    val_data = training_examples(val_set, config, row_length) if eval_on else None
    per_step = config.batch_size * config.grad_accum * world_size()
    steps_per_epoch = math.ceil(len(train_data) / per_step)
    max_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    kwargs = dict(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        optim="adamw_torch",
        max_grad_norm=config.max_grad_norm,
        max_steps=max_steps,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        ddp_backend=None if on_gpu or world_size() == 1 else "gloo",
        ddp_find_unused_parameters=False,  # a causal LM uses every weight in each forward pass
        logging_strategy="steps",
        logging_steps=min(config.log_steps, max_steps),
        logging_first_step=True,
        eval_strategy="steps" if (eval_on and config.eval_steps) else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=not progress,
        seed=config.seed,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length"
        if config.group_by_length and not config.packing
        else "random",
        dataloader_num_workers=0,
    )
    args = TrainingArguments(**_training_args_compat(TrainingArguments, kwargs))
    collator_class = PackCollator if config.packing else PadCollator
    collator = collator_class(pad_id=pad_id, multiple_of=8 if on_gpu else 1)
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_data,
        data_collator=collator,
        compute_metrics=token_metrics,
        preprocess_logits_for_metrics=token_metrics_preprocess,
    )
    # The Trainer prints its logs on stdout; datagen keeps stdout for data.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_log_callback(out / "train_log.jsonl", progress))
    for cb in callbacks:
        trainer.add_callback(cb)
    return trainer


def finetune(
    conversations: Iterable[Conversation] | None,
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: FinetuneConfig | None = None,
    *,
    records: Sequence[Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `model` on conversations and save the result under `out_dir/model`.

    Args:
        conversations: datagen conversations (rendered with `to_sft`); or pass `records`, MOSS SFT
            dicts, instead.
        model: a MOSS folder, another causal LM folder, a `.gguf` file or an alias (see `load_model`).
        out_dir: the output folder (layout in the module docstring); reruns reuse its token cache
            and, with `save_steps`, resume from the last checkpoint.
        config: FinetuneConfig (defaults when None).
        progress: show the Trainer's progress bar.

    Returns the metrics written to `out_dir/metrics.json`: losses before/after, validation loss
    and token accuracy, steps, tokens, tokens/s, truncation counts, where the model was saved.
    """
    torch, transformers = require_torch()

    from datagen.model.cache import tokenize_cached
    from datagen.model.loading import EOS_TAG, load_model, pick_device
    from datagen.model.score import resolve_max_length

    config = config or FinetuneConfig()
    out = Path(out_dir)
    ids: list[str] | None = None
    if records is None:
        if conversations is None:
            raise InputError("nothing to train on: pass conversations or records")
        conversations = list(conversations)
        ids = [c.id for c in conversations]  # the ids publish splits by (to_sft may keep a source's own)
        records = conversations_to_sft(conversations)
    records = list(records)
    if not records:
        raise InputError("nothing to train on: no dialogues")
    train_records, val_records = split_records(
        records, val_fraction=config.val_fraction, val_max=config.val_max, ids=ids
    )
    if config.val_fraction > 0 and not val_records:
        logger.warning(
            "no dialogue falls in the validation split (fraction %s of %d dialogues): training without "
            "evaluation",
            config.val_fraction,
            len(records),
        )
    # Under torchrun every process runs this function; the split is the same in each (by id), and
    # only the first writes files.
    main = is_main_process()
    if main:
        write_sft_splits(train_records, val_records, out / "data")

    device = pick_device(config.device)
    device_map = None
    if world_size() > 1 and device == "cuda":
        device = device_map = (
            f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one GPU per process, no sharding
        )
    precision = _precision(config, device)
    # Full fine-tuning keeps fp32 master weights (the Trainer autocasts); LoRA freezes the base, so
    # it can sit in 16 bits.
    load_dtype = precision if (config.lora and precision in ("bf16", "fp16")) else "fp32"
    transformers.set_seed(config.seed)
    loaded = load_model(
        model,
        device=device,
        dtype=load_dtype,
        device_map=device_map,
        tokenization=config.tokenization,
        attention=config.attention,
    )
    tokenizer, net = loaded.tokenizer, loaded.model
    max_length = resolve_max_length(config.max_length, loaded.context_length)

    cache = out / "cache" if config.cache and main else None
    train_set = tokenize_cached(
        train_records,
        tokenizer,
        cache and cache / "train",
        max_length=max_length,
        assistant_only=config.assistant_only,
        source=str(out / "data" / "train.jsonl"),
    )
    val_set = tokenize_cached(
        val_records,
        tokenizer,
        cache and cache / "val",
        max_length=max_length,
        assistant_only=config.assistant_only,
        source=str(out / "data" / "val.jsonl"),
    )
    if len(train_set) == 0:
        raise InputError(
            f"no training dialogue fits max_length={max_length} ({train_set.stats.dropped} dropped)"
        )
    for name, s in (("train", train_set), ("val", val_set)):
        if s.stats.turns_dropped:
            logger.warning(
                "%s: %d dialogues truncated, %d turns dropped, %d dialogues that do not fit at all",
                name,
                s.stats.truncated,
                s.stats.turns_dropped,
                s.stats.dropped,
            )

    # EOS is <eom> from here on: the saved tokenizer, config and generation config agree.
    eom = loaded.end_tag_ids[EOS_TAG]
    tokenizer.eos_token = EOS_TAG
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOS_TAG
    net.config.eos_token_id = eom
    net.config.pad_token_id = tokenizer.pad_token_id
    net.config.use_cache = False

    run_config = config
    if config.packing and not keeps_sequences_apart(net):
        logger.warning(
            "%s lets packed dialogues attend to each other (its attention ignores the position_ids "
            "restarts): training on padded batches instead",
            loaded.source.display,
        )
        run_config = config.replace(packing=False)

    if config.lora:
        net = _apply_lora(net, config, loaded.added_token_ids)

    eval_on = len(val_set) > 0
    trainer = build_trainer(
        net,
        train_set,
        val_set if eval_on else None,
        run_config,
        out_dir=out,
        device=device,
        precision=precision,
        pad_id=tokenizer.pad_token_id,
        row_length=max_length,
        progress=progress,
    )
    train_data = trainer.train_dataset
    steps_per_epoch = math.ceil(len(train_data) / (config.batch_size * config.grad_accum * world_size()))

    metrics: dict[str, Any] = {
        "model": loaded.source.display,
        "max_length": max_length,
        "tokenization": loaded.tokenization,
        "precision": precision,
        "attention": loaded.attention,
        "packing": run_config.packing,
        "packing_efficiency": (round(train_data.efficiency, 4) if run_config.packing else None),
        "world_size": world_size(),
        "train_examples": len(train_data),
        "lora": config.lora,
        "train_dialogues": len(train_set),
        "val_dialogues": len(val_set),
        "val_unused": len(records) - len(train_records) - len(val_records),
        "train_tokens": train_set.tokens,
        "val_tokens": val_set.tokens,
        "truncation": {"train": train_set.stats.to_dict(), "val": val_set.stats.to_dict()},
        "token_cache_hit": {"train": train_set.from_cache, "val": val_set.from_cache},
    }
    if eval_on and config.eval_before:
        before = trainer.evaluate(metric_key_prefix="before")
        metrics["val_loss_before"] = before.get("before_token_loss")
        metrics["val_token_accuracy_before"] = before.get("before_token_accuracy")
    resume = bool(config.save_steps) and any((out / "checkpoints").glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    history = [h for h in trainer.state.log_history if "loss" in h]
    metrics.update(
        {
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_loss_first": history[0]["loss"] if history else None,
            "train_loss_last": history[-1]["loss"] if history else None,
            "train_loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
            "train_runtime_s": result.metrics.get("train_runtime"),
            "train_tokens_per_s": None,
            "resumed": resume,
        }
    )
    runtime = result.metrics.get("train_runtime") or 0
    # tokens actually processed: the training split's tokens per epoch times the epochs run
    epochs_run = trainer.state.global_step / steps_per_epoch
    if runtime:
        metrics["train_tokens_per_s"] = round(train_set.tokens * epochs_run / runtime, 1)
    if eval_on:
        after = trainer.evaluate(metric_key_prefix="val")
        metrics["val_loss"] = after.get("val_token_loss")
        metrics["val_token_accuracy"] = after.get("val_token_accuracy")

    model_dir = out / "model"
    metrics["model_dir"] = str(model_dir)
    if not trainer.is_world_process_zero():
        return metrics
    save_outputs(trainer.model, config, loaded, tokenizer, eom, out, metrics)
    return metrics


def save_outputs(
    final: Any, config: Any, loaded: Any, tokenizer: Any, eom: int, out: Path, metrics: dict[str, Any]
) -> None:
    """Save a trained model as plain transformers loads it (LoRA merged unless asked not to, the
    cache back on, the dtype it came in, MOSS's generation defaults ending at <eom>), its tokenizer,
    and `config.json`/`metrics.json` beside it. Shared by `finetune` and `dpo`."""
    import torch

    if config.lora and config.merge_lora:
        final = final.merge_and_unload()
    final.config.use_cache = True
    final.to(_save_dtype(config, loaded.source.config, torch))
    gen = final.generation_config
    gen.eos_token_id = eom
    gen.pad_token_id = tokenizer.pad_token_id
    for k, v in GENERATION_DEFAULTS.items():
        setattr(gen, k, v)
    model_dir = out / "model"
    final.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
