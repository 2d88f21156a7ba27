"""`datagen batch status|cancel|export|import`: the teacher's batch mode from the command line.

Examples:
    datagen batch status outputs/big                      # batches, lines settled, cost so far
    datagen batch cancel outputs/big                      # stop the batches in flight (rerun to collect)
    datagen batch export configs/big.yaml --out outputs/big       # write the next round for vLLM
    vllm run-batch -i outputs/big/batches/b000001.jsonl -o out1.jsonl --model MODEL
    datagen batch import outputs/big out1.jsonl           # settle its answers, then export again
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  datagen batch status outputs/big
  datagen batch cancel outputs/big
  datagen batch export configs/big.yaml --out outputs/big
  vllm run-batch -i outputs/big/batches/b000001.jsonl -o out1.jsonl --model MODEL
  datagen batch import outputs/big out1.jsonl
"""


def _journal(run_dir: str) -> Path:
    from datagen.errors import InputError

    path = Path(run_dir)
    journal = path if path.suffix == ".sqlite" else path / "journal.sqlite"
    if not journal.is_file():
        raise InputError(
            "no teacher journal here (a run keeps it at RUN_DIR/journal.sqlite)", path=str(journal)
        )
    return journal


def _teacher(run_dir: str, config: str | None) -> Any:
    """The teacher settings of a run: from `--config`, else the run's manifest."""
    from datagen.errors import InputError
    from datagen.teacher.config import TeacherConfig

    if config is not None:
        from datagen.run.config import load_config

        return load_config(config).teacher
    from datagen.run.manifest import Manifest

    path = Path(run_dir)
    manifest = Manifest.open(path if path.is_dir() else path.parent)
    teacher = (manifest.data.get("config") or {}).get("teacher")
    if not isinstance(teacher, dict):
        raise InputError(
            "no teacher settings in the run's manifest; give the run config with --config",
            path=str(manifest.path),
        )
    return TeacherConfig.from_dict(teacher)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the batches of a run's journal and what the teacher cost so far."""
    from datagen.teacher.batch_offline import batch_status

    info = batch_status(_journal(args.run_dir))
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    batches = info["batches"]
    if not batches:
        print("no batches in this journal")
    else:
        print(
            f"{'batch':<8} {'round':>5} {'status':<12} {'lines':>7} {'ok':>7} {'failed':>7} {'open':>7}  id"
        )
        for b in batches:
            ident = b["batch_id"] or b["path"] or b["file_id"] or ""
            print(
                f"{b['name']:<8} {b['round']:>5} {b['status']:<12} {b['lines']:>7} {b['ok']:>7} "
                f"{b['failed']:>7} {b['open']:>7}  {ident}"
            )
        in_flight = [b for b in batches if not b["settled"]]
        print(
            f"{len(batches)} batch files, {len(in_flight)} in flight "
            f"({sum(b['open'] for b in in_flight)} lines)"
        )
    ledger = info["ledger"]
    cached = ledger["cached_tokens"]
    share = (
        f" ({100 * cached / ledger['prompt_tokens']:.0f}% from the prompt cache)"
        if ledger["prompt_tokens"]
        else ""
    )
    print(
        f"calls {ledger['total']} (ok {ledger['ok']}, failed {ledger['failed']}); "
        f"{ledger['prompt_tokens']} prompt{share} + {ledger['completion_tokens']} completion tokens; "
        f"cost so far ${ledger['cost']:.4f}"
    )
    for mode, m in sorted(info["by_mode"].items()):
        print(f"  {mode}: {m['calls']} calls, ${m['cost']:.4f}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the run's batches in flight."""
    from datagen.teacher.batch_offline import cancel_batches

    done = cancel_batches(_teacher(args.run_dir, args.config), _journal(args.run_dir))
    if not done:
        print("no batch in flight")
    for name, what in done:
        print(f"{name}: {what}")
    if done:
        print(
            "Cancelled batches keep the lines they finished: rerun the run to collect them (the rest are "
            "sent again), or leave it.",
            file=sys.stderr,
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Run a config until its next batch round, written to files instead of sent."""
    import dataclasses

    from datagen.run.config import load_config
    from datagen.run.pipeline import stages_for
    from datagen.run.runner import Runner
    from datagen.teacher.batch import BatchEngine, BatchExported

    config = load_config(args.config, args.set)
    teacher = config.teacher
    teacher.mode = "batch"  # runtime fields: the run's fingerprints stay those of `datagen run`
    teacher.batch = dataclasses.replace(teacher.batch, transport="files", export_dir=args.out_dir)
    out = Path(args.out) if args.out else Path("outputs") / config.name

    class ExportRunner(Runner):
        def ensure_teacher(self) -> None:
            """No server to check: the round goes to a file."""

    try:
        ExportRunner(config, out, engine_factory=BatchEngine).run(stages_for(config, out))
    except BatchExported as exc:
        for path in exc.paths:
            print(path)
        print(str(exc), file=sys.stderr)
        return 0
    print(
        f"nothing left to export: every teacher call of {out} is answered and the run is complete",
        file=sys.stderr,
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Settle a batch output file into the run's journal."""
    from datagen.teacher.batch_offline import import_output

    counts = import_output(_teacher(args.run_dir, args.config), _journal(args.run_dir), args.output)
    failed = {k[len("failed_") :]: v for k, v in sorted(counts.items()) if k.startswith("failed_")}
    why = f" ({', '.join(f'{k} {v}' for k, v in failed.items())})" if failed else ""
    print(
        f"{counts.get('ok', 0)} answers settled, {sum(failed.values())} failed{why}, "
        f"{counts.get('skipped', 0)} already settled, {counts.get('unknown', 0)} unknown custom_ids; "
        f"{counts.get('batches', 0)} batch files"
    )
    if counts.get("unknown"):
        print(
            "Unknown custom_ids are lines this journal never wrote: was it the output of another run?",
            file=sys.stderr,
        )
    return 0


def register(sub) -> None:
    """Add `datagen batch ...` to the `datagen` parser."""
    p = sub.add_parser(
        "batch",
        help="the teacher's batch mode: status, cancel, export and import rounds",
        description="Batch mode (teacher.mode: batch) sends the teacher's calls as batch files at "
        "half the price. These commands show and cancel a run's batches, and write "
        "and settle rounds for a self-hosted teacher (vllm run-batch).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="batch_command", metavar="VERB", required=True)
    s = verbs.add_parser("status", help="batches, lines settled and cost so far")
    s.add_argument("run_dir", help="the run directory (or its journal.sqlite)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_status)
    c = verbs.add_parser("cancel", help="cancel the batches in flight")
    c.add_argument("run_dir", help="the run directory (or its journal.sqlite)")
    c.add_argument(
        "--config",
        default=None,
        help="take the teacher settings from this run config (default: the run's manifest)",
    )
    c.set_defaults(func=cmd_cancel)
    e = verbs.add_parser("export", help="write the next round as batch JSONL (what vllm run-batch reads)")
    e.add_argument("config", help="YAML run config")
    e.add_argument("--out", help="run directory (default outputs/NAME)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    e.add_argument("--out-dir", default=None, help="where round files go (default RUN_DIR/batches)")
    e.set_defaults(func=cmd_export)
    i = verbs.add_parser("import", help="settle a batch output file (vllm run-batch's or OpenAI's)")
    i.add_argument("run_dir", help="the run directory (or its journal.sqlite)")
    i.add_argument("output", help="the output JSONL")
    i.add_argument(
        "--config",
        default=None,
        help="take the teacher settings (prices) from this run config (default: the run's manifest)",
    )
    i.set_defaults(func=cmd_import)
