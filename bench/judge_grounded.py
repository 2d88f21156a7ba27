"""The grounded rubric against the rule-based `tool_failure` step, over MOSS's plugin conversations.

    .venv/bin/python bench/judge_grounded.py [--samples ../shared/moss-samples] [--base-url URL --model M]

Reads every plugin conversation under `SAMPLES/conversation_with_plugins`, asks the judge (the
embedded teacher, started here, unless `--base-url` names another) to grade it with the
`grounded` rubric alone, and compares its keep/drop (grounded >= `--min-score` for the dialogue and
every graded turn) with the `tool_failure` step's. Prints one line:

    rows=N agreement=A kappa=K both_keep=a both_drop=b judge_only_drop=c rule_only_drop=d unparseable=u errors=e
        judge_model=M structured=S format=F refused_formats=R calls=C reasked=Q seconds=T

then one line per disagreement (id, the rule's reason, the judge's weakest score and reason).
`agreement` and `kappa` (Cohen's, keep/drop) are over the rows the judge graded. The journal goes
to a temporary folder unless `--journal` names one, so a second run with it pays nothing.
`--structured` is the judge's setting (default `auto`); `format` is the one the endpoint answered in
(the embedded llama-cpp-python server refuses `json_schema` and takes `json_object_schema`, its
grammar-constrained form). `--limit N` judges the first N conversations only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datagen.filters.base import Verdict  # noqa: E402
from datagen.filters.judge import JudgeFilter  # noqa: E402
from datagen.filters.quality import ToolFailureFilter  # noqa: E402
from datagen.formats.reader import read_conversations  # noqa: E402
from datagen.teacher.config import TeacherConfig  # noqa: E402


def kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two keep/drop raters."""
    n = len(pairs)
    if not n:
        return None
    po = sum(a == b for a, b in pairs) / n
    pa, pb = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default=str(REPO.parent / "shared" / "moss-samples"))
    ap.add_argument("--base-url", default=None, help="a judge endpoint (default: start the embedded teacher)")
    ap.add_argument("--model", default=None, help="the judge model at --base-url")
    ap.add_argument("--min-score", type=int, default=3)
    ap.add_argument("--journal", default=None)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument(
        "--structured",
        default="auto",
        choices=["auto", "json_schema", "json_object_schema", "json_object", "off"],
        help="how the judge asks for its JSON (the judge step's `structured`)",
    )
    ap.add_argument("--limit", type=int, default=None, help="judge only the first N conversations")
    args = ap.parse_args(argv)
    convs = [
        c for c in read_conversations([str(Path(args.samples) / "conversation_with_plugins")]) if c.plugins
    ][: args.limit]
    server = None
    if args.base_url is None:
        import socket

        from datagen.teacher.local_server import start_local_teacher

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_local_teacher(
            port=port, n_ctx=args.n_ctx, log_path=Path(tempfile.mkdtemp()) / "teacher.log"
        )
        base_url, model = server.base_url, server.model_alias
    else:
        base_url, model = args.base_url, args.model
    try:
        # two tries: a refused response_format (llama-cpp-python answers it with a 500) is not
        # worth the default back-off before the judge tries its next format
        teacher = TeacherConfig(
            base_url=base_url, model=model, concurrency=1, timeout=600.0, max_attempts=2, progress=False
        )
        journal = args.journal or str(Path(tempfile.mkdtemp()) / "judge.sqlite")
        judge = JudgeFilter(
            teacher=teacher.to_dict(),
            rubrics=["grounded"],
            min_score=args.min_score,
            journal=journal,
            structured=args.structured,
            max_tokens=600,
        )
        started = time.monotonic()
        verdicts = judge.decide_batch([(c, None) for c in convs])
        seconds = time.monotonic() - started
    finally:
        if server is not None:
            server.stop()
    rule = ToolFailureFilter()
    pairs: list[tuple[bool, bool]] = []
    counts = {"both_keep": 0, "both_drop": 0, "judge_only_drop": 0, "rule_only_drop": 0}
    lines = []
    unparseable = errors = 0
    for conv, v in zip(convs, verdicts, strict=True):
        r = Verdict.of(rule.filter(conv))
        if v.reason == "judge_unparseable":
            unparseable += 1
            lines.append(f"  {conv.id}: unparseable: {(v.evidence or {}).get('detail', '')[:200]!r}")
            continue
        if v.reason in ("judge_error", "judge_unavailable"):
            errors += 1
            continue
        if "judge.rubrics" not in (v.updates or {}).get("tags", {}):
            continue  # no turn made a call: the rubric does not apply
        pairs.append((v.keep, r.keep))
        key = (
            "both_keep"
            if v.keep and r.keep
            else "both_drop"
            if not v.keep and not r.keep
            else "judge_only_drop"
            if r.keep
            else "rule_only_drop"
        )
        counts[key] += 1
        if v.keep != r.keep:
            ev = v.evidence or {}
            marks = v.updates["tags"]["judge.rubrics"]["grounded.v1"]
            lines.append(
                f"  {conv.id}: rule={r.reason or 'keep'} judge={v.reason or 'keep'} "
                f"score={ev.get('score', marks['dialogue']['grounded']['score'])} "
                f"reason={ev.get('reason', marks['dialogue']['grounded']['reason'])!r}"
            )
    n = len(pairs)
    agree = sum(a == b for a, b in pairs) / n if n else 0.0
    k = kappa(pairs)
    fmt = args.structured
    if fmt == "auto":
        fmt = ",".join(sorted(set(judge.formats.settled.values()))) or "-"
    print(
        f"rows={n} agreement={agree:.3f} kappa={'-' if k is None else f'{k:.3f}'} "
        + " ".join(f"{k_}={v_}" for k_, v_ in counts.items())
        + f" unparseable={unparseable} errors={errors} judge_model={model} structured={args.structured}"
        + f" format={fmt}"
        + f" refused_formats={judge.calls.refused_formats} calls={judge.calls.calls}"
        + f" reasked={judge.calls.reasked} seconds={seconds:.0f}"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
