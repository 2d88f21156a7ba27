"""`datagen preference` and `datagen dpo` (registered by `datagen.cli`). torch, transformers and trl
are imported inside the commands, so `datagen --help` stays fast."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

PREFERENCE_EXAMPLES = """examples:
  datagen preference outputs/mine/final.jsonl --out outputs/mine/preference --config run.yaml
  datagen preference final.jsonl --out pref/ --base-url http://127.0.0.1:8089/v1 --model smollm2

--config reads the `teacher:`, `tools:` and `preference:` sections of a run config (see
configs/example.yaml); flags win over the teacher section. OUT receives candidates.jsonl,
judgements.jsonl, pairs.jsonl (TRL's conversational preference format), pairs.moss.jsonl (MOSS
text) and stats.json. Every call goes through the teacher journal (default OUT/journal.sqlite;
give the run's with --journal): rerun the same command to resume without paying twice."""

DPO_EXAMPLES = """examples:
  datagen dpo outputs/mine/preference/pairs.jsonl --model ~/models/moss-moon-003-sft --out runs/dpo --lora
  datagen dpo pairs.jsonl outputs/mine/review/pairs.jsonl --model ./tiny --out runs/dpo --max-steps 50

PAIRS are preference files datagen wrote (pairs.jsonl, pairs.moss.jsonl, review/pairs.jsonl). DIR
receives model/ (a standard Hugging Face folder, EOS <eom>), metrics.json (with the held-out
preference accuracy), config.json and train_log.jsonl. --config reads the `dpo:` section of a YAML
file (or the whole file when it has none); flags win over it."""


def register(sub: Any) -> None:
    """Add `preference` and `dpo` to the `datagen` parser."""
    p = sub.add_parser(
        "preference",
        help="preference pairs from kept dialogues: candidates, a pairwise judge",
        description="Candidate answers for each assistant turn (teacher samples, a second model, "
        "the local model's own, contrastive answers on plugin turns), judged pairwise "
        "in both orders; the pairs that stand are exported for TRL and as MOSS text.",
        epilog=PREFERENCE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="files or folders of kept conversations (any known format)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--config", type=Path, default=None, help="run config with `teacher:` and `preference:` sections"
    )
    p.add_argument("--journal", type=Path, default=None, help="teacher journal (default OUT/journal.sqlite)")
    p.add_argument("--base-url", default=None, help="teacher endpoint (wins over the config)")
    p.add_argument("--model", default=None, help="teacher model (wins over the config)")
    p.add_argument("--api-key-env", default=None, help="variable holding the teacher's API key")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preference)

    d = sub.add_parser(
        "dpo",
        help="preference-train a local MOSS or causal LM on pairs (TRL's DPOTrainer)",
        description="DPO on datagen's preference pairs with fine-tuning's tokenisation and masks; "
        "saves a standard Hugging Face folder and the held-out preference accuracy.",
        epilog=DPO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("pairs", nargs="+", metavar="PAIRS", help="preference pair files (JSONL)")
    d.add_argument("--model", required=True, help="model folder, .gguf file, `smollm2`, or a Hub id")
    d.add_argument("--out", required=True, type=Path, help="output folder")
    d.add_argument("--config", type=Path, default=None, help="YAML with a `dpo:` section")
    d.add_argument("--beta", type=float, default=None, help="DPO beta (default 0.1)")
    d.add_argument("--loss-type", default=None, help="TRL loss type (default sigmoid)")
    d.add_argument(
        "--min-margin", type=float, default=None, help="train only on pairs with at least this margin"
    )
    d.add_argument("--max-steps", type=int, default=None, help="optimizer steps (wins over --epochs)")
    d.add_argument("--epochs", type=float, default=None, help="passes over the training pairs (default 1)")
    d.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default 5e-7; 5e-6 with --lora)"
    )
    d.add_argument("--batch-size", type=int, default=None, help="pairs per micro-batch (default 2)")
    d.add_argument(
        "--grad-accum", type=int, default=None, help="micro-batches per optimizer step (default 1)"
    )
    d.add_argument("--max-length", type=int, default=None, help="context in tokens (default: the model's)")
    d.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=None)
    d.add_argument("--device", default=None, help="cpu or cuda (default: a GPU when there is one)")
    d.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters (peft)")
    d.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 16)")
    d.add_argument(
        "--no-merge-lora",
        dest="merge_lora",
        action="store_false",
        default=None,
        help="save the adapter instead of merging it into the model",
    )
    d.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        default=None,
        help="keep activations (faster, more memory)",
    )
    d.add_argument(
        "--val-fraction", type=float, default=None, help="share of dialogues held out (default 0.05)"
    )
    d.add_argument("--seed", type=int, default=None)
    d.add_argument(
        "--tokenization",
        choices=["auto", "upstream", "datagen"],
        default=None,
        help="token stream: upstream, datagen, or auto (upstream for MOSS checkpoints; default)",
    )
    d.add_argument("--no-progress", action="store_true", help="no per-step lines on stderr")
    d.set_defaults(func=cmd_dpo)


def _located(exc: Any, path: Path, doc: Any, prefix: str = "") -> Any:
    """A ConfigError from a section, with the file and the key's line."""
    from datagen.errors import ConfigError

    if exc.path:
        return exc
    key = f"{prefix}{exc.field}" if exc.field else prefix.rstrip(".") or None
    line = doc.line_of(re.sub(r"\[(\d+)\]", r".\1", key)) if key else None
    return ConfigError(exc.reason, path=str(path), line=line, field=key)


def load_preference_settings(path: Path | None) -> tuple[Any, Any]:
    """(PreferenceConfig, TeacherConfig) from a run config file (defaults without one). Relative
    paths in it (templates_dir, local models) resolve against its folder."""
    from datagen.errors import ConfigError
    from datagen.preference.config import PreferenceConfig
    from datagen.teacher.config import TeacherConfig
    from datagen.yamlfile import read_yaml, resolve_path

    if path is None:
        return PreferenceConfig(), TeacherConfig()
    doc = read_yaml(path)
    data = doc.data or {}
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping", path=str(path))
    section = data.get("preference") or {}
    if isinstance(section, dict):
        section = dict(section)
        if isinstance(section.get("templates_dir"), str):
            section["templates_dir"] = resolve_path(section["templates_dir"], path.parent)
        if isinstance(section.get("sources"), list):
            section["sources"] = [
                {**s, "model": resolve_path(s["model"], path.parent)}
                if isinstance(s, dict)
                and s.get("kind") == "local"
                and isinstance(s.get("model"), str)
                and (path.parent / s["model"]).exists()
                else s
                for s in section["sources"]
            ]
        if section.get("tools") is None and isinstance(data.get("tools"), dict):
            section["tools"] = data["tools"]
    try:
        config = PreferenceConfig.from_dict(section)
    except ConfigError as exc:
        raise _located(exc, path, doc) from None
    try:
        teacher = TeacherConfig.from_dict(data.get("teacher"))
    except ConfigError as exc:
        raise _located(exc, path, doc) from None
    return config, teacher


def cmd_preference(args: argparse.Namespace) -> int:
    """Run `datagen preference`."""
    import dataclasses

    from datagen.errors import InputError
    from datagen.formats.reader import read_conversations
    from datagen.preference import make_preference

    config, teacher = load_preference_settings(args.config)
    overrides = {
        k: v
        for k, v in (("base_url", args.base_url), ("model", args.model), ("api_key_env", args.api_key_env))
        if v
    }
    if overrides:
        teacher = dataclasses.replace(teacher, **overrides)
    conversations = list(read_conversations(args.inputs))
    if not conversations:
        raise InputError("no conversations found", path=" ".join(map(str, args.inputs)))
    stats = make_preference(
        conversations, config, teacher, args.out, journal_path=args.journal, progress=not args.no_progress
    )
    print(stats.summary(), file=sys.stderr)
    print(f"pairs -> {args.out / 'pairs.jsonl'} (MOSS text: {args.out / 'pairs.moss.jsonl'})")
    return 1 if stats.retryable_failed else 0


def cmd_dpo(args: argparse.Namespace) -> int:
    """Run `datagen dpo`."""
    from datagen.errors import ConfigError
    from datagen.finetune.dpo import DpoConfig, dpo, read_pairs

    base = DpoConfig()
    if args.config:
        from datagen.yamlfile import read_yaml

        doc = read_yaml(args.config)
        data = doc.data or {}
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", path=str(args.config))
        section = data.get(
            "dpo", data if "dpo" not in data and not {"teacher", "preference"} & set(data) else {}
        )
        try:
            base = DpoConfig.from_dict(section)
        except ConfigError as exc:
            raise _located(exc, args.config, doc, "dpo." if "dpo" in data else "") from None
    config = base.replace(
        beta=args.beta,
        loss_type=args.loss_type,
        min_margin=args.min_margin,
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        precision=args.precision,
        device=args.device,
        lora=args.lora,
        lora_r=args.lora_r,
        merge_lora=args.merge_lora,
        gradient_checkpointing=args.gradient_checkpointing,
        val_fraction=args.val_fraction,
        seed=args.seed,
        tokenization=args.tokenization,
    )
    metrics = dpo(read_pairs(args.pairs), args.model, args.out, config, progress=not args.no_progress)
    print(json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    print(f"model -> {metrics['model_dir']}", file=sys.stderr)
    return 0
