"""`datagen review RUN_DIR [--port P]`: serve the review page of a run on 127.0.0.1.

`python -m datagen.review RUN_DIR` is the same command.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import socket
import sys
from pathlib import Path

from datagen.errors import DatagenError, MissingDependencyError

EXAMPLES = """
  datagen review outputs/demo                      # http://127.0.0.1:8765/
  datagen review outputs/demo --port 0             # any free port (printed)
  datagen review outputs/demo --reviewer ana       # the name each decision records
  datagen review outputs/demo --host 0.0.0.0 --allow-remote   # on purpose: anyone on the network can decide

Decisions go to RUN_DIR/review.jsonl; the next `datagen run` applies them as its `review` step."""


def register(sub) -> None:
    """Add `datagen review`."""
    p = sub.add_parser(
        "review",
        help="look at a run's rows in a local web page and accept, reject or edit them",
        description="Serve a review page for a run directory: the funnel, every kept, rejected "
        "and failed row with filters and search, dialogues with their tool results "
        "and teacher calls. Decisions are appended to RUN_DIR/review.jsonl.",
        epilog="examples:" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (`datagen run --out`)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; another needs --allow-remote)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host: anyone who reaches it can read the run and record decisions",
    )
    p.add_argument(
        "--reviewer", default=None, help="the name recorded with each decision (default: your login)"
    )
    p.set_defaults(func=cmd_review)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # from here on, connections wait for the server instead of being refused
    except OSError as exc:
        sock.close()
        raise DatagenError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port (0 picks a free one)"
        ) from None
    return sock


def _reviewer(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def cmd_review(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        raise DatagenError(
            f"--host {args.host} would let anyone on the network read this run and record "
            "decisions; add --allow-remote if that is what you want"
        )
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise DatagenError(f"{run_dir}: no such run directory")
    if not os.access(run_dir, os.W_OK):
        raise DatagenError(
            f"{run_dir}: not writable; the review index (review/) and the decisions "
            "(review.jsonl) live in the run directory, so review a copy of it"
        )
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise MissingDependencyError("starlette, uvicorn and jinja2", "review") from None
    from datagen.review.app import LOCAL_HOSTS, ReviewConfig, create_app
    from datagen.review.index import run_sources

    if not run_sources(run_dir):
        raise DatagenError(
            f"{run_dir}: no rows to review yet (no final.jsonl, filtered/ or dialogues/*.failed.jsonl)"
        )
    sock = _bind(args.host, args.port)
    print(f"[datagen] review: indexing {run_dir} (once per run)", file=sys.stderr, flush=True)
    allowed = ["*"] if args.allow_remote else LOCAL_HOSTS
    app = create_app(ReviewConfig(run_dir=run_dir, reviewer=_reviewer(args.reviewer), allowed_hosts=allowed))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"reviewing {run_dir} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m datagen.review`: the `review` command on its own (parsed and reported like
    `datagen review`)."""
    from datagen.cli import Parser
    from datagen.teacher.redact import redact

    parser = Parser(prog="datagen")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["review", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except DatagenError as exc:
        if os.environ.get("DATAGEN_DEBUG"):
            raise
        print(f"Error: {redact(str(exc))}", file=sys.stderr)
        return 1
