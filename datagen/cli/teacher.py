"""Subcommands of the teacher stage (registered by `datagen.cli`): `datagen journal stats|failures|export`.

Examples:
    datagen journal stats runs/demo/journal.sqlite          # counts, tokens, cost per model
    datagen journal failures runs/demo/journal.sqlite       # the failure ledger grouped by error
    datagen journal export runs/demo/journal.sqlite --status ok > calls.jsonl   # replay record
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

JOURNAL_EXAMPLES = """examples:
  datagen journal stats runs/demo/journal.sqlite
  datagen journal failures runs/demo/journal.sqlite --json
  datagen journal export runs/demo/journal.sqlite --status failed > failed.jsonl
"""


def _open(path: str):
    from datagen.errors import InputError
    from datagen.teacher.journal import Journal

    p = Path(path)
    if not p.is_file():
        raise InputError("no such journal (runs keep it at RUN_DIR/journal.sqlite)", path=str(p))
    return Journal(p).open()


def cmd_stats(args: argparse.Namespace) -> int:
    """Print counts, tokens and cost of a journal."""
    journal = _open(args.path)
    try:
        st = journal.stats()
    finally:
        journal.close()
    if args.json:
        print(json.dumps(st.to_dict(), ensure_ascii=False))
        return 0
    print(f"calls      {st.total}  (ok {st.ok}, failed {st.failed})")
    print(f"HTTP tries {st.attempts}")
    print(f"tokens     {st.prompt_tokens} prompt + {st.completion_tokens} completion")
    print(f"cost       ${st.cost:.4f}")
    for model, m in sorted(st.by_model.items()):
        print(
            f"  {model}: ok {m.get('ok', 0)}, failed {m.get('failed', 0)}, "
            f"{m['prompt_tokens']} + {m['completion_tokens']} tokens, ${m['cost']:.4f}"
        )
    return 0


def cmd_failures(args: argparse.Namespace) -> int:
    """Print the failure ledger grouped by error."""
    from datagen.teacher.redact import redact_opt

    journal = _open(args.path)
    try:
        groups = journal.failures()
    finally:
        journal.close()
    for g in groups:  # journals written before details were redacted may quote a bearer token
        g.example = redact_opt(g.example)
    if args.json:
        print(
            json.dumps(
                [
                    {"error": g.error, "count": g.count, "attempts": g.attempts, "example": g.example}
                    for g in groups
                ],
                ensure_ascii=False,
            )
        )
        return 0
    if not groups:
        print("no failed calls")
        return 0
    for g in groups:
        print(f"{g.error:<20} x{g.count:<8} ({g.attempts} tries)  e.g. {g.example or ''}")
    print(
        "Rerun the same command to retry them (failed calls are never served from the journal).",
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write journal rows as JSONL (request, response, usage, error) to stdout."""
    from datagen.teacher.redact import redact_opt

    journal = _open(args.path)
    try:
        for e in journal.entries(args.status):
            print(
                json.dumps(
                    {
                        "key": e.key,
                        "status": e.status,
                        "model": e.model,
                        "request": e.request,
                        "response": e.response,
                        "finish_reason": e.finish_reason,
                        "prompt_tokens": e.prompt_tokens,
                        "completion_tokens": e.completion_tokens,
                        "cost": e.cost,
                        "attempts": e.attempts,
                        "error": e.error,
                        "detail": redact_opt(e.detail),
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                )
            )
    finally:
        journal.close()
    return 0


def register(sub) -> None:
    """Add `datagen journal ...` to the `datagen` parser."""
    p = sub.add_parser(
        "journal",
        help="inspect a teacher call journal (stats, failures, export)",
        description="Inspect a teacher call journal: what was paid, what failed and why.",
        epilog=JOURNAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="journal_command", metavar="VERB", required=True)
    s = verbs.add_parser("stats", help="counts, tokens and cost (per model)")
    s.add_argument("path", help="the journal (RUN_DIR/journal.sqlite)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_stats)
    f = verbs.add_parser("failures", help="the failure ledger grouped by error, with an example each")
    f.add_argument("path", help="the journal (RUN_DIR/journal.sqlite)")
    f.add_argument("--json", action="store_true", help="print a JSON list")
    f.set_defaults(func=cmd_failures)
    e = verbs.add_parser("export", help="rows as JSONL on stdout (the replay record)")
    e.add_argument("path", help="the journal (RUN_DIR/journal.sqlite)")
    e.add_argument("--status", choices=["ok", "failed"], default=None, help="only rows of this status")
    e.set_defaults(func=cmd_export)
