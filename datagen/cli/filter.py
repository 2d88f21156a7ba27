"""`datagen filter IN --out DIR`: run the filter funnel over conversations in any readable format.

Examples:

    datagen filter dialogues.jsonl --out filtered/
    datagen filter data/ --out filtered/ --config filters.yaml --workers 2
    datagen filter moss_sft/ --out filtered/ --disable safety --policy boilerplate=drop
    datagen filter prompts.jsonl --out filtered/ --near-dedup rouge --languages zh,en
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = __doc__.split("Examples:", 1)[1]


def register(sub) -> None:
    """Add this stage's subcommands to the `datagen` parser."""
    p = sub.add_parser(
        "filter",
        help="Filter conversations: quality, tool failures, length, language, safety, dedup.",
        description="Filter conversations through the configured steps and write kept.jsonl, "
        "rejected.jsonl (with step, reason, evidence), funnel.json and funnel.md.",
        epilog="examples:" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="files or folders (any format `datagen validate` reads)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON filter config (or a run config's `filters:`)")
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: all cores; 1: in-process)"
    )
    p.add_argument(
        "--disable", action="append", default=[], metavar="STEP", help="switch a step off (repeatable)"
    )
    p.add_argument("--only", metavar="STEP,...", help="run only these steps (in configured order)")
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="STEP=POLICY",
        help="drop, tag or redact for a step (repeatable)",
    )
    p.add_argument("--languages", metavar="CODES", help="allowed languages, e.g. zh,en (`any`: no limit)")
    p.add_argument("--near-dedup", choices=("minhash", "rouge"), help="near-duplicate method for prompts")
    p.add_argument("--threshold", type=float, help="near-duplicate threshold (Jaccard, or ROUGE-L for rouge)")
    p.add_argument(
        "--on-error",
        choices=("raise", "warn", "skip"),
        default="raise",
        help="what to do with unreadable input records (default: raise)",
    )
    p.add_argument(
        "--report",
        choices=("table", "json", "quiet"),
        default="table",
        help="how to print the funnel (`--format` elsewhere names an input format)",
    )
    p.set_defaults(func=cmd_filter)


def _apply_overrides(config, args) -> None:
    from datagen.errors import ConfigError

    names = {s.name for s in config.steps}

    def need(name: str, flag: str) -> None:
        if name not in names:
            raise ConfigError(
                f"unknown step {name!r} (steps: {', '.join(s.name for s in config.steps)})", field=flag
            )

    for name in args.disable:
        need(name, "--disable")
        config.step(name).enabled = False
    if args.only:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        for n in only:
            need(n, "--only")
        for s in config.steps:
            s.enabled = s.name in only
    for item in args.policy:
        name, _, pol = item.partition("=")
        need(name, "--policy")
        config.step(name).policy = pol
    if args.languages and "language" in names:
        langs = (
            None if args.languages == "any" else [x.strip() for x in args.languages.split(",") if x.strip()]
        )
        config.step("language").params["languages"] = langs
    if (args.near_dedup or args.threshold is not None) and "near_dedup" in names:
        params = config.step("near_dedup").params
        if args.near_dedup:
            params["method"] = args.near_dedup
        if args.threshold is not None:
            params["threshold"] = args.threshold
    config.build_steps()  # fail now on a bad policy or parameter


def cmd_filter(args) -> int:
    """Run `datagen filter`."""
    import json

    from datagen.filters.config import FilterConfig
    from datagen.filters.run import run_filters
    from datagen.formats.reader import read_conversations

    config = FilterConfig.from_file(args.config) if args.config else FilterConfig.default()
    _apply_overrides(config, args)
    rows = read_conversations(args.inputs, on_error=args.on_error)
    progress = None
    if args.report != "quiet" and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" rows", file=sys.stderr)

        def progress(done: int) -> None:
            bar.update(done - bar.n)

    report = run_filters(rows, config, args.out, workers=args.workers, progress=progress)
    if args.report == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    elif args.report == "table":
        print(report.to_markdown(), end="")
        print(f"\nWrote {args.out}/kept.jsonl, rejected.jsonl, funnel.json, funnel.md", file=sys.stderr)
    return 0
