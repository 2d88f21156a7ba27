"""`datagen run CONFIG`, `datagen status RUN_DIR` and `datagen serve-teacher`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from datagen.errors import DatagenError
from datagen.stage import log


def cmd_run(args: argparse.Namespace) -> int:
    from datagen.procs import sigterm_as_interrupt
    from datagen.run.config import load_config
    from datagen.run.pipeline import run_pipeline

    executor = _executor(args)
    overrides = [*args.set, *([f"teacher.mode={args.mode}"] if args.mode else [])]
    config = load_config(args.config, overrides)
    gguf = _gguf(args, "--teacher-model")
    if args.no_progress:  # display only: not part of any fingerprint
        config.teacher.progress = False
    out = Path(args.out) if args.out else Path("outputs") / config.name
    teacher = None
    # A SIGTERM stops the run like Ctrl-C, so the `finally` below stops the embedded teacher.
    with sigterm_as_interrupt():
        if args.serve_teacher:
            from datagen.teacher.local_server import start_local_teacher

            out.mkdir(parents=True, exist_ok=True)
            log("starting the embedded teacher (llama-cpp-python, SmolLM2-135M-Instruct) on 127.0.0.1")
            teacher = start_local_teacher(
                gguf, port=args.teacher_port or _free_port(), log_path=out / "teacher-server.log"
            )
            config.teacher.base_url = teacher.base_url
            # The served model's name goes into journal keys and fingerprints: another GGUF must not
            # reuse the answers of this one.
            config.teacher.model = teacher.model_alias
            config.raw.setdefault("teacher", {})["model"] = teacher.model_alias
        try:
            t0 = time.monotonic()
            if config.quota is not None:  # targets/budget: accepted rows per cell, bought in waves
                from datagen.run.waves import QuotaRun

                data = QuotaRun(config, out, executor=executor).run()
            else:
                data = run_pipeline(config, out, executor=executor)
        except DatagenError as exc:
            # Calls that failed to connect, or a teacher that stopped answering: if the embedded
            # server died, that is the news, not the failed calls.
            died = teacher.death() if teacher is not None else None
            if died is None:
                raise
            log(str(exc))
            raise DatagenError(died) from exc
        finally:
            if teacher is not None:
                teacher.stop()
    stages = data.get("stages", {})
    kept = stages.get("final", {}).get("count", 0)
    print(f"done in {time.monotonic() - t0:.0f}s: {kept} conversations kept, cost ${data.get('cost', 0):.4f}")
    print(
        f"  dataset:  {out / 'final.jsonl'}"
        + (f"  and {out / 'dataset'}/" if (out / "dataset").exists() else "")
    )
    print(f"  funnel:   {out / 'funnel.md'}  {out / 'funnel.png'}")
    if "publish" in stages and stages["publish"].get("url"):
        print(f"  on the Hub: {stages['publish']['url']}")
    return 0


def _executor(args: argparse.Namespace):
    """None (this process) or the Ray executor; without the `ray` extra, one Error line naming it."""
    if args.executor == "local":
        if args.address:
            raise DatagenError("--address names a Ray cluster: use it with --executor ray")
        return None
    from datagen.run.executors.ray import RayExecutor

    return RayExecutor(args.address)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_status(args: argparse.Namespace) -> int:
    from datagen.run.status import run_status

    print(run_status(Path(args.run_dir)))
    return 0


def _gguf(args: argparse.Namespace, old_flag: str) -> str | None:
    """--teacher-gguf, or its old spelling with a line saying what to write instead (`--model` is
    the local model in check and finetune; `--teacher-model` the teacher's name in expand/generate)."""
    if args.gguf_deprecated:
        print(f"warning: {old_flag} is deprecated here; write --teacher-gguf", file=sys.stderr)
        return args.gguf_deprecated
    return args.teacher_gguf


def cmd_serve_teacher(args: argparse.Namespace) -> int:
    from datagen.procs import sigterm_as_interrupt
    from datagen.teacher.local_server import start_local_teacher

    with sigterm_as_interrupt():  # SIGTERM stops the server cleanly, as Ctrl-C does
        teacher = start_local_teacher(
            _gguf(args, "--model"),
            port=args.port,
            threads=args.threads,
            log_path=Path(args.log) if args.log else None,
        )
        print(f"serving {teacher.model_alias} at {teacher.base_url} (Ctrl-C stops it)", flush=True)
        try:
            teacher.process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            teacher.stop()
        raise DatagenError(teacher.death("while serving"))


def register(sub) -> None:
    """Add `datagen run`, `datagen status` and `datagen serve-teacher`."""
    p = sub.add_parser(
        "run",
        help="run every stage of a run config (rerun to resume)",
        description="Run seeds -> expansion -> dialogues -> filters -> check -> dataset. "
        "Rerunning the same command resumes where it stopped. "
        "Example: datagen run configs/demo.yaml --out outputs/demo "
        "--set teacher.model=gpt-4o-mini",
    )
    p.add_argument("config", help="YAML run config (see configs/example.yaml)")
    p.add_argument("--out", help="run directory (default outputs/NAME)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set teacher.model=gpt-4o-mini (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and summaries only)")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where stages run: this process (default) or a Ray cluster (needs the ray extra)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="the Ray cluster for --executor ray (auto, HOST:PORT; default: start one here)",
    )
    p.add_argument(
        "--serve-teacher",
        action="store_true",
        help="start the embedded local teacher for this run and stop it afterwards",
    )
    p.add_argument(
        "--mode",
        choices=("online", "batch"),
        default=None,
        help="how teacher calls are made (teacher.mode): one request each, or the Batch API at half price",
    )
    p.add_argument(
        "--teacher-gguf",
        default=None,
        metavar="FILE",
        help="GGUF for --serve-teacher (default: SmolLM2-135M)",
    )
    p.add_argument("--teacher-model", dest="gguf_deprecated", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--teacher-port", type=int, default=None, help="port for --serve-teacher (default: a free one)"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="show where a run directory stands")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve-teacher", help="serve the embedded local teacher on 127.0.0.1 (OpenAI API)")
    p.add_argument(
        "--teacher-gguf",
        default=None,
        metavar="FILE",
        help="a GGUF file (default: the packaged SmolLM2-135M-Instruct)",
    )
    p.add_argument("--model", dest="gguf_deprecated", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log", default=None, help="write the server's log to this file (default: the terminal)")
    p.set_defaults(func=cmd_serve_teacher)
