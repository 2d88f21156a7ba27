"""Subcommands of the formats package (registered by `datagen.cli`): validate, convert, stats.

Examples:
    datagen validate data/                          # every problem as file:line: turn N: field: reason
    datagen convert data/ --to messages --out messages.jsonl
    datagen stats data/ --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

FORMAT_CHOICES = ("moss", "messages", "sharegpt", "datagen")

VALIDATE_EXAMPLES = """examples:
  datagen validate ../shared/moss-samples
  datagen validate train.jsonl --strict        # also fail on accepted deviations (e.g. `..., None`)
  datagen validate data/ --quiet               # summary line only
Exit status 1 when any conversation is invalid or any file unreadable."""

CONVERT_EXAMPLES = """examples:
  datagen convert moss_sft/ --to datagen --out conversations.jsonl
  datagen convert conversations.jsonl --to moss --out train.jsonl
  datagen convert train.jsonl --to messages --out - | head -1
  datagen convert sharegpt.json --to moss --out moss.jsonl --on-error warn
  datagen convert data/ --to messages --tool-arguments string --out openai.jsonl
Input formats are detected per record: datagen JSONL, MOSS SFT, OpenAI messages, ShareGPT.
MOSS records whose Commands or Results do not follow the grammar are converted too: MOSS output
keeps them byte for byte, exports answer each call with its own result (`datagen validate` lists
them; `datagen filter` rejects them). Exit status 1, and no output file, when nothing was
converted."""

STATS_EXAMPLES = """examples:
  datagen stats ../shared/moss-samples
  datagen stats outputs/run/conversations.jsonl --json"""


def cmd_validate(args: argparse.Namespace) -> int:
    """Check files against the MOSS 003 format; print one line per problem and a summary."""
    from datagen.formats.validate import validate_paths

    out = sys.stdout
    shown = 0

    def report(line: str) -> None:
        nonlocal shown
        shown += 1
        if not args.quiet and (args.max_problems is None or shown <= args.max_problems):
            out.write(line + "\n")

    summary = validate_paths(args.paths, strict=args.strict, format=args.format, report=report)
    if args.max_problems is not None and shown > args.max_problems and not args.quiet:
        out.write(f"... {shown - args.max_problems} more problems not shown\n")
    out.write(summary.format() + "\n")
    return 0 if summary.ok else 1


def _converted(args: argparse.Namespace, counts: dict[str, int]) -> Iterator[Any]:
    from datagen.errors import FormatError
    from datagen.formats.messages import to_messages
    from datagen.formats.moss import to_sft
    from datagen.formats.reader import iter_records, to_conversation
    from datagen.formats.sharegpt import to_sharegpt

    write = {
        "moss": to_sft,
        "messages": lambda c: to_messages(
            c, metadata=not args.no_metadata, tool_arguments=args.tool_arguments
        ),
        "sharegpt": lambda c: to_sharegpt(c, metadata=not args.no_metadata),
        "datagen": lambda c: c.to_dict(),
    }[args.to]
    for loc, value in iter_records(args.inputs):
        try:
            if isinstance(value, FormatError):
                raise value
            conv = to_conversation(value, path=loc.path, line=loc.line, format=args.from_format)
            row = write(conv)
            if any(t.problems for t in conv.turns):
                counts["malformed"] += 1
        except FormatError as exc:
            if args.on_error == "raise":
                raise
            counts["skipped"] += 1
            if args.on_error == "warn":
                print(f"skipped: {exc}", file=sys.stderr)
            continue
        counts["written"] += 1
        yield row
    if not counts["written"]:
        # raised inside the rows, so the atomic writer leaves no (empty) output file behind
        skipped = counts["skipped"]
        why = (
            f"no readable record ({skipped} unreadable; `datagen validate` says why)"
            if skipped
            else "the input holds no records"
        )
        raise FormatError(f"nothing to convert: {why}", path=", ".join(map(str, args.inputs)))


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert conversations between datagen JSONL, MOSS SFT, OpenAI messages and ShareGPT."""
    from datagen.io import dumps, write_jsonl_atomic

    counts = {"written": 0, "skipped": 0, "malformed": 0}
    rows = _converted(args, counts)
    if args.out == "-":
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        write_jsonl_atomic(args.out, rows)
    dest = "stdout" if args.out == "-" else args.out
    skipped = f" ({counts['skipped']} skipped)" if counts["skipped"] else ""
    print(f"converted {counts['written']} conversations to {args.to}{skipped} -> {dest}", file=sys.stderr)
    if counts["malformed"]:
        print(
            f"{counts['malformed']} of them have MOSS segments outside the grammar, kept verbatim "
            "(`datagen validate` lists them; `datagen filter` rejects them)",
            file=sys.stderr,
        )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts by category, language, plugin, turns and length."""
    from datagen.errors import FormatError
    from datagen.formats.reader import iter_records, to_conversation
    from datagen.formats.stats import DatasetStats

    st = DatasetStats()
    for loc, value in iter_records(args.paths):
        if isinstance(value, FormatError):
            st.unreadable += 1
            continue
        try:
            st.add(to_conversation(value, path=loc.path, line=loc.line, format=args.format))
        except FormatError:
            st.unreadable += 1
    if args.json:
        print(json.dumps(st.to_dict(), ensure_ascii=False))
    else:
        print(st.format_table())
    if st.unreadable:
        print(
            f"{st.unreadable} records could not be read; run `datagen validate` for details.", file=sys.stderr
        )
    return 0


def register(sub) -> None:
    """Add `validate`, `convert` and `stats` to the `datagen` parser."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "validate",
        help="check files against the MOSS 003 format",
        epilog=VALIDATE_EXAMPLES,
        description=cmd_validate.__doc__,
        formatter_class=fmt,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="also report deviations from the canonical rendering that released MOSS data has",
    )
    p.add_argument(
        "--format", choices=FORMAT_CHOICES, default=None, help="skip detection; read every record as this"
    )
    p.add_argument(
        "--max-problems", type=int, default=None, metavar="N", help="print at most N problem lines"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "convert",
        help="convert between MOSS SFT, OpenAI messages, ShareGPT and datagen JSONL",
        epilog=CONVERT_EXAMPLES,
        description=cmd_convert.__doc__,
        formatter_class=fmt,
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="files or folders in any known format")
    p.add_argument("--to", required=True, choices=FORMAT_CHOICES, help="output format")
    p.add_argument(
        "--out", required=True, metavar="OUT.jsonl", help="output JSONL file (written atomically), or -"
    )
    p.add_argument(
        "--from",
        dest="from_format",
        choices=FORMAT_CHOICES,
        default=None,
        help="skip detection; read every record as this",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "warn", "skip"),
        default="raise",
        help="stop at the first bad record (raise, default), skip it and name it on stderr (warn), or skip "
        "it quietly (skip; the summary still counts it); the same choices as `datagen filter`",
    )
    p.add_argument(
        "--no-metadata",
        action="store_true",
        help="messages/sharegpt: leave out the `datagen` keys (exact round trip needs them)",
    )
    p.add_argument(
        "--tool-arguments",
        choices=("object", "string"),
        default="object",
        help="messages: write tool_calls[].function.arguments as a JSON object (default; what Hugging "
        "Face chat templates such as Qwen2.5's and LLaMA-Factory's expect: they encode it "
        "themselves) or as a JSON string (the OpenAI API wire form)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "stats",
        help="counts by category, language, plugin, turns and length",
        epilog=STATS_EXAMPLES,
        description=cmd_stats.__doc__,
        formatter_class=fmt,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders in any known format")
    p.add_argument(
        "--format", choices=FORMAT_CHOICES, default=None, help="skip detection; read every record as this"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)
