"""Subcommands of the generation stage (registered by `datagen.cli`): expand, generate (and seeds,
from `datagen.cli.seeds`).

Teacher options are shared by both commands and backed by environment variables
(`DATAGEN_TEACHER_BASE_URL`, `DATAGEN_TEACHER_MODEL`); a run config (`--config run.yaml`) gives
the defaults of every section, and flags win over it. The teacher journal defaults to
`<out>.journal.sqlite` beside the output: rerun the same command to resume. Both commands first
check that the teacher answers (`GET /models`) and stop with one `Error:` line when it does not.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

EXPAND_EXAMPLES = """examples:
  datagen expand seeds/starter.jsonl --out prompts.jsonl --target 50 \\
      --base-url http://127.0.0.1:8089/v1 --teacher-model qwen2.5-7b-instruct
  datagen expand seeds.jsonl --out prompts.jsonl --config run.yaml --set expand.batch_size=10
Kept prompts go to --out, rejected candidates (with reasons) to OUT.rejected.jsonl, counters to
OUT.stats.json. Rerun the same command to resume: finished requests come from the journal."""

GENERATE_EXAMPLES = """examples:
  datagen generate prompts.jsonl --kind hhh --out hhh.jsonl --turns 2-4 --teacher-model gpt-4o-mini \\
      --base-url https://api.openai.com/v1 --api-key-env OPENAI_API_KEY
  datagen generate prompts.jsonl --kind plugin --out plugin.jsonl --config run.yaml
  datagen generate prompts.jsonl --kind hhh --out hhh.jsonl --retry-failed
Dialogues are appended to --out as they finish; failures go to OUT.failed.jsonl with reasons.
Kill it any time and rerun the same command: finished dialogues are skipped and finished turns of
unfinished ones come from the journal, so nothing is paid twice."""


def add_teacher_options(p: argparse.ArgumentParser) -> None:
    """The teacher flags shared by expand and generate."""
    g = p.add_argument_group("teacher")
    g.add_argument(
        "--base-url",
        default=os.environ.get("DATAGEN_TEACHER_BASE_URL"),
        help="OpenAI-compatible endpoint ending in /v1 (env DATAGEN_TEACHER_BASE_URL)",
    )
    g.add_argument(
        "--teacher-model",
        default=os.environ.get("DATAGEN_TEACHER_MODEL"),
        help="teacher model name (env DATAGEN_TEACHER_MODEL)",
    )
    # `--model` names the local model in check and finetune; here it was the teacher. Kept hidden
    # for one release so old scripts still run, with a line saying what to write instead.
    g.add_argument("--model", dest="model_deprecated", default=None, help=argparse.SUPPRESS)
    g.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="name of the environment variable holding the API key (default OPENAI_API_KEY)",
    )
    g.add_argument(
        "--teacher-concurrency", type=int, default=None, metavar="N", help="requests in flight at most"
    )
    g.add_argument(
        "--journal",
        default=None,
        metavar="PATH",
        help="teacher journal (default OUT.journal.sqlite beside --out)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--config", default=None, metavar="RUN.yaml", help="a run config giving the defaults")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run config value, e.g. dialogues.hhh.options.temperature=0.9 (repeatable)",
    )
    p.add_argument(
        "--templates",
        default=None,
        metavar="DIR",
        help="folder of your own prompt templates (NAME.vN.md), over the shipped ones",
    )
    p.add_argument("--seed", type=int, default=None, help="run seed (example sampling, turn counts)")


def _run_config(args: argparse.Namespace):
    if args.config is None and not args.set:
        return None
    from datagen.run.config import apply_overrides, build_config, load_config

    if args.config is not None:
        return load_config(args.config, args.set)
    return build_config(apply_overrides({}, args.set))


def teacher_from_args(args: argparse.Namespace, run: Any):
    """The TeacherConfig: the run config's section (or defaults) with the flags applied."""
    import dataclasses

    from datagen.teacher.config import TeacherConfig

    base = run.teacher if run is not None and run.teacher is not None else TeacherConfig()
    changes: dict[str, Any] = {}
    if args.base_url:
        changes["base_url"] = args.base_url
    model = args.teacher_model
    if args.model_deprecated:
        import sys

        print(
            "warning: --model is deprecated here; write --teacher-model (--model names the local model in "
            "check and finetune)",
            file=sys.stderr,
        )
        model = args.model_deprecated
    if model:
        changes["model"] = model
    if args.api_key_env:
        changes["api_key_env"] = args.api_key_env
    if args.teacher_concurrency is not None:
        changes["concurrency"] = args.teacher_concurrency
    if args.no_progress:
        changes["progress"] = False
    return dataclasses.replace(base, **changes) if changes else base


def check_teacher(teacher: Any) -> None:
    """Stop with one clear line when the teacher is down or refuses the key, before any request
    (as `datagen run` does): `datagen.teacher.preflight.check_teacher`."""
    from datagen.teacher.preflight import check_teacher as preflight

    preflight(teacher)


def _read_seeds(path: str) -> list[Any]:
    from datagen.generate.common import read_prompts

    if not Path(path).exists():
        from datagen.errors import InputError

        raise InputError("file not found", path=path)
    return read_prompts(path)


def cmd_expand(args: argparse.Namespace) -> int:
    """Grow seed prompts into machine prompts with the Self-Instruct loop."""
    from datagen.generate.config import ExpandConfig
    from datagen.generate.expand import expand, print_summary

    run = _run_config(args)
    config = run.expand if run is not None and run.expand is not None else ExpandConfig()
    changes: dict[str, Any] = {}
    if args.target is not None:
        changes["targets"] = (
            {**config.targets, "default": args.target} if args.keep_targets else {"default": args.target}
        )
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.templates is not None:
        changes["templates_dir"] = args.templates
    seed = args.seed if args.seed is not None else (run.seed if run is not None else None)
    if seed is not None:
        changes["seed"] = seed
    if changes:
        config = ExpandConfig.from_dict({**config.to_dict(), **changes})
    seeds = _read_seeds(args.seeds)
    teacher = teacher_from_args(args, run)
    check_teacher(teacher)
    stats = expand(
        seeds, config, teacher, args.out, args.journal, progress=False if args.no_progress else None
    )
    print_summary(stats)
    _fail_if_incomplete("expand", stats, "requests")
    from datagen.generate.common import failure_cause

    if not stats.counts.get("count") and failure_cause(stats.counts):
        from datagen.errors import DatagenError

        raise DatagenError(
            f"expand: no prompt was kept: {stats.counts.get('requests', 0)} requests, "
            f"failures: {failure_cause(stats.counts, stats.examples)}. Fix the teacher or the "
            "settings and rerun the same command (finished requests are not paid again)"
        )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate HHH or plugin dialogues from prompts."""
    from datagen.generate.config import DialogueConfig
    from datagen.generate.dialogues import generate_dialogues, print_summary

    run = _run_config(args)
    options: dict[str, Any] = {}
    tools_config = None
    if run is not None:
        dk = run.dialogues.get(args.kind)
        options = dict(dk.options) if dk is not None else {}
        tools_config = run.tools or None
        options.setdefault("seed", run.seed)
    if args.turns is not None:
        options["turns"] = args.turns
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.templates is not None:
        options["templates_dir"] = args.templates
    if args.plugins is not None:
        options["plugins"] = [p.strip() for p in args.plugins.split(",") if p.strip()]
    if args.seed is not None:
        options["seed"] = args.seed
    config = DialogueConfig.from_dict(
        options, kind=args.kind, where=f"dialogues.{args.kind}.options", path=args.config
    )
    prompts = _read_seeds(args.prompts)
    if args.limit is not None:
        prompts = prompts[: args.limit]
    teacher = teacher_from_args(args, run)
    check_teacher(teacher)
    stats = generate_dialogues(
        prompts,
        args.kind,
        config,
        teacher,
        args.out,
        args.journal,
        tools_config=tools_config,
        retry_failed=args.retry_failed,
        progress=False if args.no_progress else None,
    )
    print_summary(stats)
    _fail_if_failures_remain(stats, args.out)
    return 0


def _fail_if_incomplete(command: str, stats: Any, what: str) -> None:
    # Like `datagen run`: failures a rerun can fix make the command fail, so a script chaining
    # stages never goes on with an incomplete output.
    if stats.retryable_failed:
        from datagen.errors import DatagenError

        raise DatagenError(
            f"{command}: {stats.retryable_failed} {what} failed for reasons a retry can fix; "
            f"rerun the same command to finish them (finished calls are not paid again)"
        )


def _fail_if_failures_remain(stats: Any, out: str) -> None:
    # Exit 0 means every prompt has its dialogue: a script chaining stages must not go on with
    # "0 made; 2 failed". The message names the main cause with an example, and what a rerun does.
    from datagen.errors import DatagenError
    from datagen.generate.common import failure_cause, sidecar

    counts = stats.counts
    cause = failure_cause(counts, stats.examples)
    ledger = sidecar(out, "failed.jsonl")
    if not counts.get("made") and not counts.get("skipped_done") and (cause or counts.get("not_started")):
        stopped = (
            (
                f"; stopped after the first {sum(v for k, v in counts.items() if k.startswith('failed_'))}, "
                f"{counts['not_started']} not started"
            )
            if counts.get("not_started")
            else ""
        )
        raise DatagenError(
            f"generate: no dialogue was made: every one failed ({cause}){stopped}. Fix the "
            f"teacher or the settings and rerun the same command: the failed dialogues are "
            f"tried again, finished calls come from the journal (details: {ledger})"
        )
    _fail_if_incomplete("generate", stats, "dialogues")
    remaining = sum(v for k, v in counts.items() if k.startswith("failed_")) + counts.get(
        "skipped_failed_before", 0
    )
    if remaining:
        before = (
            f"{counts['skipped_failed_before']} failed for good on an earlier run"
            if counts.get("skipped_failed_before")
            else ""
        )
        why = "; ".join(x for x in (cause, before) if x)
        raise DatagenError(
            f"generate: {remaining} dialogues have none ({why}), listed in {ledger}. Rerun the "
            "same command to try again those the server refused, or add --retry-failed to try "
            "every one again"
        )


def register(sub) -> None:
    """Add this stage's subcommands to the `datagen` parser."""
    from datagen.cli.seeds import register_seeds

    register_seeds(sub)

    e = sub.add_parser(
        "expand",
        help="grow seed prompts into many machine prompts (Self-Instruct)",
        description=cmd_expand.__doc__,
        epilog=EXPAND_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("seeds", help="seed prompts (JSONL)")
    e.add_argument("--out", required=True, help="where the kept prompts go (JSONL)")
    e.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="N",
        help="machine prompts wanted per (category, language) cell",
    )
    e.add_argument(
        "--keep-targets",
        action="store_true",
        help="with --target: keep the config's per-category targets, set only the default",
    )
    e.add_argument("--batch-size", type=int, default=None, metavar="N", help="prompts asked per request")
    add_teacher_options(e)
    e.set_defaults(func=cmd_expand)

    g = sub.add_parser(
        "generate",
        help="generate HHH or plugin dialogues from prompts",
        description=cmd_generate.__doc__,
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("prompts", help="prompts (seeds or expanded, JSONL)")
    g.add_argument("--kind", choices=["hhh", "plugin"], required=True)
    g.add_argument("--out", required=True, help="dialogues JSONL (appended; finished ids are skipped)")
    g.add_argument(
        "--turns",
        default=None,
        metavar="SPEC",
        help="turns per dialogue for every category: 4, 2-4 or 3,4,5 (default: per category, "
        "hhh 5-6 helpful and 2-4 harmless/honest, plugin 1-3)",
    )
    g.add_argument("--concurrency", type=int, default=None, metavar="N", help="dialogues in progress at once")
    g.add_argument(
        "--plugins",
        default=None,
        metavar="LIST",
        help="plugins for prompts naming none, e.g. calculator,search (plugin dialogues)",
    )
    g.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N prompts")
    g.add_argument(
        "--retry-failed", action="store_true", help="also retry dialogues that failed for good before"
    )
    add_teacher_options(g)
    g.set_defaults(func=cmd_generate)
