"""`datagen check` and `datagen finetune` (registered by `datagen.cli`). torch and transformers are
imported inside the commands, so `datagen --help` stays fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

CHECK_EXAMPLES = """examples:
  datagen check filtered/kept.jsonl --model ~/models/moss-moon-003-sft --out checked/scored.jsonl
  datagen check dialogues/ --model smollm2 --out scored.jsonl --percentile 95
  datagen check data.jsonl --model model.Q4_1.gguf --out scored.jsonl --max-loss 2.5 --require-fit

Scored rows carry scores.moss_loss, moss_ppl, moss_turn_losses, moss_tokens, moss_fits. A rerun skips
the ids already in OUT. The report goes to stdout and to OUT's *.report.json; with a threshold, kept
and rejected rows go to *.kept.jsonl and *.rejected.jsonl beside OUT."""

FINETUNE_EXAMPLES = """examples:
  datagen finetune final.jsonl --model ~/models/moss-moon-003-sft --out runs/ft --lora --epochs 2
  datagen finetune data/ --model ./tiny-codegen --out runs/ft --max-steps 200 --lr 2e-5 --config run.yaml

DIR receives data/{train,val}.jsonl (MOSS SFT schema), cache/, model/ (a standard Hugging Face
folder, EOS <eom>) and metrics.json. --config reads the `finetune:` section of a YAML file (or the
whole file when it has none); flags win over it.

Dialogues are packed into rows of --max-length tokens (each keeps its own positions and attends only
to itself; --no-packing pads batches instead), and attention runs on torch's SDPA where the model can
(--attention eager for the reference kernel).

Several GPUs or machines: the same command under torchrun (or `accelerate launch`); the Trainer runs
DDP, the global batch is --batch-size x --grad-accum x processes, only rank 0 writes files:
  torchrun --nproc_per_node 8 -m datagen finetune final.jsonl --model ~/models/moss-moon-003-sft --out runs/ft
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m datagen finetune ...
On CPUs, --device cpu uses the gloo backend (OMP_NUM_THREADS is 1 per process unless set)."""


def register(sub: Any) -> None:
    """Add `check` and `finetune` to the `datagen` parser."""
    p = sub.add_parser(
        "check",
        help="score dialogues with a local model (loss, perplexity, fit)",
        description="Score each dialogue with a local MOSS or causal LM: mean loss and perplexity "
        "on the assistant's segments, per-turn losses, token length, context fit.",
        epilog=CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="files or folders of conversations (any known format)"
    )
    p.add_argument("--model", required=True, help="model folder, .gguf file, `smollm2`, or a Hub id")
    p.add_argument("--out", required=True, type=Path, help="scored rows (JSONL); resumed when it exists")
    p.add_argument("--batch-size", type=int, default=8, help="dialogues per forward pass (default 8)")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="context in tokens (default: the model's, 2048 for MOSS; more than the model's is an error)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--max-loss", type=float, default=None, help="reject rows whose loss is above this")
    p.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="reject rows above this percentile of the run's losses (e.g. 95)",
    )
    p.add_argument("--require-fit", action="store_true", help="reject rows whose turns do not all fit")
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="score only the first N input rows; with a threshold the rest go to the kept file unscored",
    )
    p.add_argument(
        "--tokenization",
        choices=["auto", "upstream", "datagen"],
        default="auto",
        help="token stream: upstream (what released MOSS models saw), datagen (every character), "
        "auto (upstream for MOSS checkpoints; default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    p.set_defaults(func=cmd_check)

    f = sub.add_parser(
        "finetune",
        help="fine-tune a local MOSS or causal LM on dialogues",
        description="Supervised fine-tuning with MOSS's tokenisation and label masks; saves a "
        "standard Hugging Face folder (tokenizer included, EOS <eom>).",
        epilog=FINETUNE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument(
        "inputs", nargs="+", metavar="IN", help="files or folders of conversations (any known format)"
    )
    f.add_argument("--model", required=True, help="model folder, .gguf file, `smollm2`, or a Hub id")
    f.add_argument("--out", required=True, type=Path, help="output folder")
    f.add_argument("--config", type=Path, default=None, help="YAML with a `finetune:` section")
    f.add_argument("--max-steps", type=int, default=None, help="optimizer steps (wins over --epochs)")
    f.add_argument("--epochs", type=float, default=None, help="passes over the training split (default 2)")
    f.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default 1e-5; 2e-4 with --lora)"
    )
    f.add_argument("--batch-size", type=int, default=None, help="sequences per micro-batch (default 4)")
    f.add_argument(
        "--grad-accum", type=int, default=None, help="micro-batches per optimizer step (default 1)"
    )
    f.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pack dialogues into rows of --max-length tokens (default) or pad each batch",
    )
    f.add_argument(
        "--attention",
        choices=["auto", "eager", "sdpa"],
        default=None,
        help="attention kernel: sdpa (torch's fused attention), eager, or auto (sdpa where the model "
        "can run it; default)",
    )
    f.add_argument("--max-length", type=int, default=None, help="context in tokens (default: the model's)")
    f.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.1)")
    f.add_argument(
        "--warmup-ratio", type=float, default=None, help="share of steps warming up (default 0.05)"
    )
    f.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=None)
    f.add_argument("--device", default=None, help="cpu or cuda (default: a GPU when there is one)")
    f.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters (peft)")
    f.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 16)")
    f.add_argument(
        "--no-merge-lora",
        dest="merge_lora",
        action="store_false",
        default=None,
        help="save the adapter instead of merging it into the model",
    )
    f.add_argument("--assistant-only", action="store_true", default=None, help="also mask the Human turns")
    f.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        default=None,
        help="keep activations (faster, more memory)",
    )
    f.add_argument("--val-fraction", type=float, default=None, help="share held out (default 0.05)")
    f.add_argument(
        "--eval-steps", type=int, default=None, help="evaluate every N steps (default: at the end)"
    )
    f.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps (resumable)")
    f.add_argument("--seed", type=int, default=None)
    f.add_argument(
        "--tokenization",
        choices=["auto", "upstream", "datagen"],
        default=None,
        help="token stream: upstream, datagen, or auto (upstream for MOSS checkpoints; default)",
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_finetune)


def cmd_check(args: argparse.Namespace) -> int:
    """Run `datagen check`."""
    from datagen.check.files import check_files
    from datagen.model.score import format_report

    summary = check_files(
        args.inputs,
        args.out,
        model=args.model,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
        max_loss=args.max_loss,
        percentile=args.percentile,
        require_fit=args.require_fit,
        max_rows=args.max_rows,
        progress=not args.no_progress,
        tokenization=args.tokenization,
    )
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(format_report(summary["report"]))
    step = summary["funnel_step"]
    if step["dropped"] or summary.get("cutoff") is not None:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(step["reasons"].items())) or "none"
        cutoff = summary.get("cutoff")
        print(
            f"moss_check: kept {step['kept']} of {step['in']}"
            + (f" (loss cutoff {cutoff:.4g})" if cutoff is not None else "")
            + f"; rejected: {reasons}"
        )
        print(f"kept -> {summary['kept_path']}\nrejected -> {summary['rejected_path']}")
    if summary.get("unscored"):
        print(
            f"{summary['unscored']} rows past --max-rows {summary['max_rows']} were not scored; they are in the "
            f"kept file unchanged"
        )
    print(
        f"scored {summary['scored_now']} now, {summary['resumed']} from an earlier run -> {args.out}; "
        f"report -> {summary['report_path']}"
    )
    return 0


def _config_section(path: Path) -> dict[str, Any]:
    from datagen.errors import ConfigError
    from datagen.yamlfile import read_yaml

    data = read_yaml(path).data or {}
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping", path=str(path))
    if "finetune" in data:
        return data["finetune"] or {}
    from datagen.run.config import TOP_LEVEL_KEYS

    if set(data) & (TOP_LEVEL_KEYS - {"finetune"}):
        return {}  # a run config without a finetune section
    return data  # a file holding just the section


def cmd_finetune(args: argparse.Namespace) -> int:
    """Run `datagen finetune`."""
    from datagen.errors import ConfigError, InputError
    from datagen.finetune.config import FinetuneConfig
    from datagen.finetune.train import finetune
    from datagen.formats.reader import read_conversations

    base = FinetuneConfig()
    if args.config:
        try:
            base = FinetuneConfig.from_dict(_config_section(args.config))
        except ConfigError as exc:
            if exc.path:
                raise
            raise ConfigError(
                exc.reason, path=str(args.config), field=f"finetune.{exc.field}" if exc.field else "finetune"
            ) from None
    config = base.replace(
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        precision=args.precision,
        device=args.device,
        lora=args.lora,
        lora_r=args.lora_r,
        merge_lora=args.merge_lora,
        assistant_only=args.assistant_only,
        gradient_checkpointing=args.gradient_checkpointing,
        val_fraction=args.val_fraction,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        seed=args.seed,
        tokenization=args.tokenization,
        packing=args.packing,
        attention=args.attention,
    )
    conversations = list(read_conversations(args.inputs))
    if not conversations:
        raise InputError("no conversations found", path=" ".join(map(str, args.inputs)))
    metrics = finetune(conversations, args.model, args.out, config, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun the first process reports
    metrics.pop("train_loss_history", None)
    print(json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    print(f"model -> {metrics['model_dir']}", file=sys.stderr)
    return 0
