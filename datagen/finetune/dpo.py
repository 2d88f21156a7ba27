"""`datagen dpo`: preference training (DPO, TRL's `DPOTrainer`) of a local MOSS or causal LM on the
pairs `datagen preference` exports, with the loading and masking rules of `datagen finetune`.

Each pair is turned back into its two dialogues (prompt + chosen, prompt + rejected; TRL's
conversational rows, a reviewer's `review/pairs.jsonl` or MOSS text pairs), rendered as MOSS SFT
records and tokenised segment by segment as fine-tuning does (`datagen.model.tokenize`, the
model's tokenization). The prompt is every segment the two sides share; the completion is the
rest, and within it the loss mask is fine-tuning's: the body of a `<|Results|>` segment (what the
tools said, on `wrong_command` pairs) is never trained on. A pair whose completion does not fit
`max_length` is left out and counted. TRL gets the token ids ready-made (its own tokenisation of
text would merge segments and could not mask inside a completion).

Pairs are split by the published dataset's rule on the id of the dialogue they come from
(`datagen.splits.split_for`), so the held-out pairs come from held-out dialogues; the preference
accuracy (how often the trained model's implicit reward ranks chosen over rejected) is measured
on them at the end.

Output folder: `model/` (a standard Hugging Face folder, tokenizer included, EOS `<eom>`; loads with
`AutoModelForCausalLM.from_pretrained`), `metrics.json`, `config.json`, `train_log.jsonl`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, InputError
from datagen.model.tokenize import TOKENIZATIONS
from datagen.settings import Section

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DpoConfig(Section):
    """DPO settings (the `dpo:` section of a config file; CLI flags override them).

    Args:
        beta: DPO's temperature (how far the policy may move from the reference).
        loss_type: TRL's loss (`sigmoid` is DPO's; `ipo`, `hinge`, ... see TRL).
        min_margin: train only on pairs whose judge margin is at least this (review pairs, which
            have none, always count).
        max_length, tokenization: as for `datagen finetune`.
        epochs, max_steps, lr (default 5e-7, or 5e-6 with LoRA), weight_decay, warmup_ratio,
        batch_size (pairs per micro-batch), grad_accum, max_grad_norm, gradient_checkpointing,
        precision, lora, lora_r, lora_alpha, lora_dropout, lora_targets, merge_lora, save_dtype,
        log_steps, seed, device: as for `datagen finetune`.
        val_fraction: share of source dialogues whose pairs are held out for the preference accuracy.
    """

    beta: float = 0.1
    loss_type: str = "sigmoid"
    min_margin: float = 0.0
    max_length: int | None = None
    tokenization: str = "auto"
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    batch_size: int = 2
    grad_accum: int = 1
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
    log_steps: int = 10
    save_dtype: str = "auto"
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "lora_r", "log_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("max_length", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive integer or null, got {value!r}", field=name)
        for name in ("beta", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"must be a positive number, got {value!r}", field=name)
        if self.lr is not None and (
            isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or self.lr <= 0
        ):
            raise ConfigError(f"must be a positive number, got {self.lr!r}", field="lr")
        for name in ("warmup_ratio", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"must be within [0, 1), got {getattr(self, name)!r}", field=name)
        if self.min_margin < 0 or self.weight_decay < 0:
            raise ConfigError(
                "must not be negative", field="min_margin" if self.min_margin < 0 else "weight_decay"
            )
        if self.tokenization not in ("auto", *TOKENIZATIONS):
            raise ConfigError(
                f"must be auto, {' or '.join(TOKENIZATIONS)}, got {self.tokenization!r}", field="tokenization"
            )
        for name in ("precision", "save_dtype"):
            if getattr(self, name) not in ("auto", "bf16", "fp16", "fp32"):
                raise ConfigError("must be auto, bf16, fp16 or fp32", field=name)
        for name in ("lora", "merge_lora", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"must be true or false, got {getattr(self, name)!r}", field=name)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (5e-6 if self.lora else 5e-7)


# --------------------------------------------------------------------------- data


def read_pairs(paths: Iterable[str | os.PathLike]) -> list[tuple[dict[str, Any], str, int]]:
    """Every pair of these JSONL files, with where it came from (path, line)."""
    from datagen.io import iter_json_lines

    out = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError("no such file", path=str(path))
        for line, obj in iter_json_lines(path):
            if not isinstance(obj, dict):
                raise InputError("a pair must be a JSON object", path=str(path), line=line)
            out.append((obj, str(path), line))
    return out


def source_id(row: Mapping[str, Any]) -> str:
    """The dialogue a pair comes from (what the split hashes): `datagen.source_id`, else the id
    up to its `#`."""
    info = row.get("datagen") if isinstance(row.get("datagen"), dict) else {}
    return str(info.get("source_id") or row.get("source_id") or str(row.get("id", "")).split("#")[0])


@dataclass(slots=True)
class PairTokens:
    """One pair, tokenised: the shared prompt, each completion and its loss mask (0 on Results
    bodies)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_mask: list[int]
    rejected_mask: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tokenize_pair(
    row: Mapping[str, Any],
    tokenizer: Any,
    *,
    max_length: int,
    path: str | None = None,
    line: int | None = None,
) -> PairTokens | str:
    """A pair's token ids (see the module docstring), or why it cannot be used: `too_long` (the
    completion does not fit) or `same_sides` (nothing tells the two sides apart)."""
    from datagen.formats.moss import to_sft
    from datagen.model.tokenize import tokenize_record
    from datagen.preference.export import conversations_of

    sides = []
    for conv in conversations_of(dict(row), path=path, line=line):
        record = to_sft(conv)
        tokens = tokenize_record(record, tokenizer, max_length=max_length, path=path, line=line)
        if not tokens.fits:
            return "too_long"
        last = list(record["chat"].values())[-1]
        segs = [s for s in tokens.segments if s.turn == tokens.turns_total - 1]
        sides.append((tokens, [(s, last[s.key]) for s in segs]))
    (chosen, segs_c), (rejected, segs_r) = sides
    shared = 0
    while shared < min(len(segs_c), len(segs_r)) and segs_c[shared][1] == segs_r[shared][1]:
        shared += 1
    if shared == len(segs_c) or shared == len(segs_r):
        return "same_sides"
    start = segs_c[shared][0].start
    if start != segs_r[shared][0].start or chosen.input_ids[:start] != rejected.input_ids[:start]:
        raise InputError(
            "the two sides of the pair do not share the dialogue before their answers", path=path, line=line
        )
    return PairTokens(
        prompt_ids=chosen.input_ids[:start],
        chosen_ids=chosen.input_ids[start:],
        rejected_ids=rejected.input_ids[start:],
        chosen_mask=[int(m) for m in chosen.loss_mask[start:]],
        rejected_mask=[int(m) for m in rejected.loss_mask[start:]],
    )


def collator(pad_id: int) -> Any:
    """TRL's preference collator, with each completion's own loss mask (fine-tuning's: Results
    bodies off) laid over its completion mask."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    base = DataCollatorForPreference(pad_token_id=pad_id)

    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = base.torch_call(examples)
        masks = [[0] * len(e["prompt_ids"]) + list(e["chosen_mask"]) for e in examples]
        masks += [[0] * len(e["prompt_ids"]) + list(e["rejected_mask"]) for e in examples]
        width = out["completion_mask"].shape[1]
        own = torch.zeros_like(out["completion_mask"])
        for i, m in enumerate(masks):
            own[i, : len(m)] = torch.tensor(m[:width], dtype=own.dtype)
        out["completion_mask"] = out["completion_mask"] * own
        return out

    return collate


def _trainer_class() -> Any:
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on rows that already hold `prompt_ids`, `chosen_ids` and `rejected_ids`."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PretokenizedDPOTrainer


def _log_callback(path: Path, progress: bool) -> Any:
    import sys

    from transformers import TrainerCallback

    class StderrLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = {
                k: v for k, v in (logs or {}).items() if not k.endswith(("_per_second", "preparation_time"))
            }
            if progress:
                line = " ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                )
                print(f"[dpo] step {state.global_step}/{state.max_steps} {line}", file=sys.stderr, flush=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")

    return StderrLog()


# --------------------------------------------------------------------------- training


def dpo(
    pairs: Iterable[tuple[Mapping[str, Any], str | None, int | None]] | Iterable[Mapping[str, Any]],
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: DpoConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` on preference pairs with DPO and save it under `out_dir/model`.

    Args:
        pairs: exported pairs (dicts), or (pair, path, line) tuples as `read_pairs` gives them.
        model: a MOSS folder, another causal LM folder, a `.gguf` file or an alias (`load_model`).
        out_dir: the output folder (see the module docstring).
        config: DpoConfig (defaults when None).

    Returns the metrics written to `out_dir/metrics.json`: pairs used and left out (by reason),
    steps, losses, the held-out preference accuracy and reward margin, where the model was saved.
    """
    from datagen.model._deps import require_torch

    torch, transformers = require_torch()
    try:
        import trl  # noqa: F401
    except ImportError:
        from datagen.errors import MissingDependencyError

        raise MissingDependencyError("trl", "moss") from None
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig

    from datagen.finetune.train import _apply_lora, _precision, _training_args_compat, save_outputs
    from datagen.model.loading import EOS_TAG, load_model, pick_device
    from datagen.model.score import resolve_max_length
    from datagen.splits import split_for

    config = config or DpoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [p if isinstance(p, tuple) else (p, None, None) for p in pairs]
    if not rows:
        raise InputError("nothing to train on: no preference pairs")
    device = pick_device(config.device)
    precision = _precision(config, device)
    transformers.set_seed(config.seed)
    loaded = load_model(model, device=device, dtype="fp32", tokenization=config.tokenization)
    tokenizer, net = loaded.tokenizer, loaded.model
    max_length = resolve_max_length(config.max_length, loaded.context_length)

    left_out: Counter = Counter()
    split: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for row, path, line in rows:
        margin = row.get("margin")
        if margin is not None and margin < config.min_margin:
            left_out["low_margin"] += 1
            continue
        tokens = tokenize_pair(row, tokenizer, max_length=max_length, path=path, line=line)
        if isinstance(tokens, str):
            left_out[tokens] += 1
            continue
        split[split_for(source_id(row), config.val_fraction)].append(tokens.to_dict())
    if not split["train"]:
        raise InputError(
            f"no pair to train on ({len(rows)} read; left out: {dict(left_out) or 'none'}; "
            f"{len(split['validation'])} held out)"
        )

    eom = loaded.end_tag_ids[EOS_TAG]
    tokenizer.eos_token = EOS_TAG
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOS_TAG
    net.config.eos_token_id = eom
    net.config.pad_token_id = tokenizer.pad_token_id
    net.config.use_cache = False
    ref = None
    if config.lora:
        net = _apply_lora(net, config, loaded.added_token_ids)  # the reference: the adapter switched off
    else:
        ref = copy.deepcopy(net).eval()  # TRL would reload by name, which a MOSS folder does not allow
        ref.requires_grad_(False)

    per_step = config.batch_size * config.grad_accum
    max_steps = config.max_steps or max(
        1, math.ceil(math.ceil(len(split["train"]) / per_step) * config.epochs)
    )
    kwargs = dict(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=1,  # TRL averages the accuracy per batch: one pair each is exact
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        max_steps=max_steps,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not device.startswith("cuda"),
        logging_steps=min(config.log_steps, max_steps),
        logging_first_step=True,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        beta=config.beta,
        loss_type=[config.loss_type],
        max_length=None,
        precompute_ref_log_probs=False,
    )
    args = DPOConfig(**_training_args_compat(DPOConfig, kwargs))
    val = Dataset.from_list(split["validation"]) if split["validation"] else None
    trainer = _trainer_class()(
        model=net,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(split["train"]),
        eval_dataset=val,
        processing_class=tokenizer,
        data_collator=collator(tokenizer.pad_token_id),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_log_callback(out / "train_log.jsonl", progress))
    result = trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    metrics: dict[str, Any] = {
        "model": loaded.source.display,
        "tokenization": loaded.tokenization,
        "max_length": max_length,
        "precision": precision,
        "lora": config.lora,
        "pairs_read": len(rows),
        "pairs_train": len(split["train"]),
        "pairs_val": len(split["validation"]),
        "left_out": dict(left_out),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_loss_first": history[0]["loss"] if history else None,
        "train_loss_last": history[-1]["loss"] if history else None,
        "pref_accuracy": None,
        "reward_margin": None,
    }
    if val is not None:
        ev = trainer.evaluate()
        metrics["pref_accuracy"] = ev.get("eval_rewards/accuracies")
        metrics["reward_margin"] = ev.get("eval_rewards/margins")
        metrics["val_loss"] = ev.get("eval_loss")
    else:
        logger.warning(
            "no pair falls in the validation split (fraction %s): no preference accuracy", config.val_fraction
        )

    metrics["model_dir"] = str(out / "model")
    save_outputs(trainer.model, config, loaded, tokenizer, eom, out, metrics)
    return metrics
