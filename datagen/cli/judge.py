"""`datagen judge IN --out DIR`: grade conversations with an LLM judge and versioned rubrics.

Examples:

    datagen judge filtered/kept.jsonl --out judged/ --base-url http://127.0.0.1:8089/v1 --teacher-model m
    datagen judge dialogues/ --out judged/ --config run.yaml           # the run's teacher and judge step
    datagen judge plugin.jsonl --out judged/ --rubric grounded --min-score 1 --config run.yaml
    datagen judge kept.jsonl --out judged/ --config run.yaml --second-model other-model --second-rate 0.2

Writes kept.jsonl and rejected.jsonl (rows under the thresholds, or whose judgment failed, with the
reason and evidence), funnel.json/md and judge.json/md: the score distribution overall and per cell,
the score/length correlation and the second judge's agreement. Every row keeps its scores, reasons,
the judge model and the rubric ids. Calls go to the journal (default OUT/journal.sqlite): rerun the
same command to resume without paying twice.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

EXAMPLES = __doc__.split("Examples:", 1)[1]


def register(sub) -> None:
    """Add `judge` to the `datagen` parser."""
    p = sub.add_parser(
        "judge",
        help="Grade conversations with an LLM judge (helpful, honest, harmless, meta instruction, grounded).",
        description="Grade each dialogue and each assistant turn with versioned rubrics; keep the rows at or "
        "above the thresholds.",
        epilog="examples:" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="files or folders (any format `datagen validate` reads)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--config",
        default=None,
        metavar="RUN.yaml",
        help="a run config: its teacher, and its judge step (filters.steps) as defaults",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a run config value"
    )
    g = p.add_argument_group("teacher")
    g.add_argument(
        "--base-url",
        default=os.environ.get("DATAGEN_TEACHER_BASE_URL"),
        help="OpenAI-compatible endpoint ending in /v1 (env DATAGEN_TEACHER_BASE_URL)",
    )
    g.add_argument(
        "--teacher-model",
        default=os.environ.get("DATAGEN_TEACHER_MODEL"),
        help="the endpoint's model (env DATAGEN_TEACHER_MODEL)",
    )
    g.add_argument("--api-key-env", default=None, metavar="VAR", help="variable holding the API key")
    g.add_argument(
        "--teacher-concurrency", type=int, default=None, metavar="N", help="requests in flight at most"
    )
    g.add_argument(
        "--journal", default=None, metavar="PATH", help="teacher journal (default OUT/journal.sqlite)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    j = p.add_argument_group("judge")
    j.add_argument(
        "--judge-model", default=None, metavar="M", help="the judge model (default: the teacher's)"
    )
    j.add_argument(
        "--rubric",
        action="append",
        default=None,
        metavar="ID",
        help="a rubric (hhh, grounded.v1, ...; repeatable; default hhh and grounded)",
    )
    j.add_argument("--rubrics", default=None, metavar="DIR", help="folder of your own rubric files")
    j.add_argument(
        "--min-score", type=int, default=None, metavar="N", help="lowest score kept (1-5; default 3)"
    )
    j.add_argument(
        "--second-model", default=None, metavar="M", help="a second judge, for the agreement figure"
    )
    j.add_argument(
        "--second-rate", type=float, default=None, metavar="F", help="share of rows it grades (default 1)"
    )
    j.add_argument("--policy", choices=("drop", "tag"), default=None, help="drop (default) or tag low rows")
    p.add_argument("--batch", type=int, default=500, metavar="N", help="rows judged per batch (default 500)")
    p.add_argument(
        "--on-error",
        choices=("raise", "warn", "skip"),
        default="raise",
        help="what to do with unreadable input records (default: raise)",
    )
    p.add_argument(
        "--report", choices=("table", "json", "quiet"), default="table", help="how to print the report"
    )
    p.set_defaults(func=cmd_judge, model_deprecated=None)


def _step_params(run: Any) -> dict[str, Any]:
    """The judge step's settings in a run config's filters, if it has one."""
    if run is None or run.filters is None:
        return {}
    for s in run.filters.steps:
        if s.step_type == "judge":
            params = dict(s.params)
            if s.policy is not None:
                params["policy"] = s.policy
            return params
    return {}


def build_judge(args: argparse.Namespace):
    """The JudgeFilter the flags and the run config describe."""
    from datagen.cli.generate import _run_config, teacher_from_args
    from datagen.errors import ConfigError
    from datagen.filters.judge import JudgeFilter

    run = _run_config(args)
    params = _step_params(run)
    teacher = teacher_from_args(args, run)
    if params.get("teacher") is None:
        params["teacher"] = teacher
    flags = {
        "model": args.judge_model,
        "rubrics": args.rubric,
        "rubrics_dir": args.rubrics,
        "min_score": args.min_score,
        "second_rate": args.second_rate,
        "policy": args.policy,
    }
    params.update({k: v for k, v in flags.items() if v is not None})
    if args.second_model:
        params["second"] = {**(params.get("second") or {}), "model": args.second_model}
    params["journal"] = args.journal or str(Path(args.out) / "journal.sqlite")
    try:
        step = JudgeFilter(**params)
    except TypeError as exc:
        raise ConfigError(f"judge step: {exc}", field="filters.steps.judge") from None
    step.progress = None if not args.no_progress else False
    return step


def cmd_judge(args: argparse.Namespace) -> int:
    """Run `datagen judge`."""
    import json

    from datagen.cli.generate import check_teacher
    from datagen.filters.judge_report import judge_report_from_dir, report_markdown, write_judge_report
    from datagen.formats.reader import read_conversations
    from datagen.funnel import KEPT_FILE, REJECTED_FILE, FunnelReport
    from datagen.io import atomic_write, dumps

    step = build_judge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_teacher(step.teacher)
    rows = iter(read_conversations(args.inputs, on_error=args.on_error))
    funnel = FunnelReport()
    with atomic_write(out / KEPT_FILE) as kept_fh, atomic_write(out / REJECTED_FILE) as rej_fh:
        while chunk := list(itertools.islice(rows, max(1, args.batch))):
            funnel.input += len(chunk)
            for conv, verdict in zip(chunk, step.decide_batch([(c, None) for c in chunk]), strict=True):
                kept, verdict = step.apply(conv, verdict)
                if kept is not None:
                    kept_fh.write(dumps(kept.to_dict()) + "\n")
                    funnel.kept += 1
                    continue
                row = conv.to_dict()
                row["rejected"] = {
                    "step": step.step_name,
                    "reason": verdict.reason,
                    "evidence": verdict.evidence,
                }
                rej_fh.write(dumps(row) + "\n")
    funnel.steps = [step.stats]
    funnel.write(out)
    report = judge_report_from_dir(out, step=step.step_name)
    report["calls"] = step.calls.to_dict()
    write_judge_report(report, out)
    if args.report == "json":
        print(json.dumps(report, ensure_ascii=False, indent=2))
    elif args.report == "table":
        print(report_markdown(report), end="")
        c = step.calls
        print(
            f"\n{c.calls} judge calls ({c.cached} from the journal, {c.reasked} asked again), "
            f"{c.prompt_tokens + c.completion_tokens:,} tokens, ${c.cost:.4f}. "
            f"Wrote {out}/kept.jsonl, rejected.jsonl, judge.json, judge.md",
            file=sys.stderr,
        )
    if step.calls.retryable_failed:
        print(
            f"{step.calls.retryable_failed} judge call(s) failed for reasons a rerun can fix "
            "(rate limits, server errors, timeouts): rerun the same command.",
            file=sys.stderr,
        )
        return 1
    return 0
