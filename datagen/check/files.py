"""`datagen check` and the pipeline's check stage: score files of conversations with a local model.

Scored rows are appended to the output as they finish (one flushed line each), so a killed run
loses at most one window of work; a rerun skips the ids already in the output. A last line without
its newline that does not parse is the torn tail of a killed writer: it is skipped with a warning
and its row is scored again; a whole row that only lost its newline counts as done. The settings a file was scored with (model, max length) are
recorded beside it and a rerun with other settings is refused rather than mixing two models' scores
in one file.

At the end the output is streamed twice, holding only ids and a few numbers per row (`ScoreColumns`):
once for the distribution report and the threshold's cutoff, once to split the rows into kept and
rejected files. Kept rows are copied byte for byte (plus a newline where the last row lost its own).

`max_length=None` (the default) is the model's own context; a value beyond what the model declares
is refused with one ConfigError line, before the model is loaded.

Input rows that are not well-formed MOSS 003 (a Commands or Results segment outside the grammar, a
call without its result, ...: `datagen.formats.validate.format_defect`) are not scored and never stop
the run: they go to the rejected file with that reason (`malformed_commands`, `missing_result`, ...),
counted in the funnel step, even when no threshold is set.

`max_rows=N` scores only the first N input rows, for a sample run. The rows past N are not dropped:
they go to the kept file unchanged (no scores) and are counted as `unscored` in the summary and the
funnel step. The threshold never judges them, and a percentile cutoff is over the scored rows only.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datagen.check.scoring import LocalScorer, ScoreJob, Scorer, check_settings, write_settings
from datagen.errors import ConfigError, FormatError, InputError
from datagen.io import AppendWriter, atomic_write, dumps, write_json_atomic
from datagen.model.score import (
    STEP_NAME,
    ScoreColumns,
    format_report,
    reject_reason,
    resolve_max_length,
    score_report,
    threshold_cutoff,
)
from datagen.model.tokenize import TruncationStats
from datagen.record import Conversation

log = logging.getLogger(__name__)


def iter_scored_rows(
    path: str | os.PathLike, *, warn: bool = True
) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """`(line number, raw line, row)` for each row of a JSONL file datagen wrote, streaming.

    A last line without its newline that does not parse is the torn tail of a killed writer: it is
    skipped (with a warning when `warn`). One that parses is a whole row whose newline was lost:
    `datagen.io.AppendWriter` keeps it (adding the newline), so it counts as done here too.
    A last line cut mid-character (not UTF-8) is a torn tail too. Any other line that is not a
    UTF-8 JSON object with an `id` is an InputError naming file and line.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n") and raw.strip():
                try:
                    json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if warn:
                        log.warning(
                            "%s:%d: the last line is cut off (left by a killed writer); ignoring it",
                            path,
                            lineno,
                        )
                    break
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg})", path=str(path), line=lineno) from None
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})",
                    path=str(path),
                    line=lineno,
                ) from None
            if not isinstance(row, dict) or "id" not in row:
                raise InputError(
                    "not a conversation row (a JSON object with an id)", path=str(path), line=lineno
                )
            yield lineno, raw, row


def scored_ids(path: str | os.PathLike) -> set[str]:
    """Ids of the rows already in an output file (a torn last line is not one), streaming."""
    path = Path(path)
    if not path.exists():
        return set()
    return {str(row["id"]) for _, _, row in iter_scored_rows(path)}


def _rejected_line(conv: Conversation, reason: str, evidence: Any) -> bytes:
    """A rejected-file line for an input row `check` did not score (see `format_defect`)."""
    row = conv.to_dict()
    row["tags"] = {**row.get("tags", {}), STEP_NAME: reason}
    row["rejected"] = {"step": STEP_NAME, "reason": reason, "evidence": evidence}
    return (dumps(row) + "\n").encode("utf-8")


def _declared_context(source: Any) -> int | None:
    """The context a model folder's config.json declares (None for GGUF and Hub ids: known once
    loaded)."""
    cfg = source.config or {}
    value = cfg.get("n_positions") or cfg.get("max_position_embeddings") or cfg.get("n_ctx")
    return int(value) if isinstance(value, int) and value > 0 else None


def _estimate_rows(inputs: Sequence[str | os.PathLike]) -> int | None:
    """Rows in the inputs, for the progress bar: the newlines of plain JSONL files, counted without
    parsing; None when an input is another kind of file (the bar then counts without a total)."""
    from datagen.formats.reader import iter_files

    try:
        files = list(iter_files(inputs))
    except FormatError:
        return None
    total = 0
    for f in files:
        if not f.name.lower().endswith((".jsonl", ".ndjson")):
            return None
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def check_files(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_loss: float | None = None,
    percentile: float | None = None,
    require_fit: bool = False,
    max_rows: int | None = None,
    report_path: str | os.PathLike | None = None,
    kept_path: str | os.PathLike | None = None,
    rejected_path: str | os.PathLike | None = None,
    progress: bool = True,
    tokenization: str = "auto",
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Score the conversations in `inputs` into `out` (resumable by row id), then report.

    Args:
        inputs: files or folders in any format `datagen validate` reads.
        out: the scored rows (JSONL, datagen's record with `scores.moss_*`).
        model: folder, `.gguf` file, alias (`smollm2`) or Hub id.
        max_length: the context in tokens; None is the model's own. A value beyond the model's
            context is a ConfigError (raised before loading the model when its config declares it).
        max_loss, percentile, require_fit: the `moss_check` threshold (see `apply_check_threshold`);
            with one of them, kept and rejected rows go to `kept_path` / `rejected_path`.
        max_rows: score only the first N input rows; the rest pass through to the kept file unscored
            (counted as `unscored`) whenever a kept file is written.
        report_path: the distribution report as JSON (default: beside `out`, `*.report.json`).
        tokenization: `upstream`, `datagen` or `auto` (see `datagen.model.loading.load_model`).
        scorer: what scores the rows (default: `LocalScorer`, the model in this process); loaded
            only when a row is left to score, and closed before the report.

    Returns a summary: `in`, `scored_now`, `resumed`, `count` (rows kept), `unscored`, `report`,
    `funnel_step`.
    """
    from datagen.formats.reader import read_conversations
    from datagen.formats.validate import format_defect
    from datagen.model.loading import MODEL_ALIASES, resolve_model

    def read_any(paths: Sequence[str | os.PathLike]) -> Iterator[Conversation]:
        # an input may be a stage output still being appended to: its torn tail is not a row yet
        return read_conversations(paths, torn_tail="skip")

    out = Path(out)
    report_path = Path(report_path) if report_path else out.with_name(f"{out.stem}.report.json")
    thresholded = max_loss is not None or percentile is not None or require_fit
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 0):
        raise ConfigError(f"must be a whole number, 0 or more, got {max_rows!r}", field="max_rows")
    threshold_cutoff([], percentile=percentile)  # a bad percentile fails now, not after scoring
    source = resolve_model(model)
    # An alias (`smollm2`) names the model wherever it is installed; recording the resolved path
    # would tie the output to this machine's site-packages.
    model_id = str(model) if str(model) in MODEL_ALIASES else source.display
    declared = _declared_context(source)
    if max_length is not None:
        resolve_max_length(max_length, declared)  # a bad value fails before the model is loaded
    done = scored_ids(out)
    if done:
        check_settings(out, model_id, max_length or declared)
    total = _estimate_rows(inputs)
    if total is not None and max_rows is not None:
        total = min(total, max_rows)

    duplicates = 0
    malformed: list[tuple[Conversation, str, Any]] = []  # (row, reason, evidence): few, kept to write later

    def todo() -> Iterator[Conversation]:
        nonlocal duplicates
        seen: set[str] = set()
        for i, conv in enumerate(read_any(inputs)):
            if max_rows is not None and i >= max_rows:
                return
            if conv.id in seen:
                duplicates += 1  # resuming is by id, so a repeated id cannot be scored twice
                continue
            seen.add(conv.id)
            found = format_defect(conv)
            if found is not None:
                malformed.append((conv, *found))
            elif conv.id not in done:
                yield conv

    stats = TruncationStats()
    scored_now = 0
    settings: dict[str, Any] = {"model": model_id, "max_length": max_length}
    rows_todo = todo()
    first = next(rows_todo, None)
    if first is not None:  # load the model only when there is something to score
        scorer = scorer if scorer is not None else LocalScorer()
        bar = None
        try:
            loaded = scorer.load(ScoreJob(str(model), max_length, batch_size, tokenization, device, dtype))
            settings["max_length"] = loaded.max_length
            settings["tokenization"] = loaded.tokenization
            if done:
                check_settings(out, model_id, loaded.max_length, loaded.tokenization)
            write_settings(out, settings)
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=total,
                    initial=min(len(done), total) if total is not None else len(done),
                    desc="check",
                    unit="dlg",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            with AppendWriter(out) as writer:
                for conv in scorer.score(itertools.chain([first], rows_todo), stats):
                    writer.write(conv)
                    scored_now += 1
                    if bar is not None:
                        bar.update(1)
        finally:
            scorer.close()
            if bar is not None:
                bar.close()

    if duplicates:
        print(
            f"warning: {duplicates} input rows repeat an id already seen in this input and were skipped "
            "(give rows unique ids)",
            file=sys.stderr,
        )
    bad_ids = {conv.id for conv, _, _ in malformed}
    malformed_reasons: Counter[str] = Counter(reason for _, reason, _ in malformed)

    # Pass 1 over the output: ids and the numbers the report and the cutoff need.
    columns = ScoreColumns()
    ids: set[str] = set()
    repeated: set[int] = set()  # line numbers of a second row with an id already seen
    stale: set[int] = set()  # line numbers of rows now rejected as malformed
    if out.exists():
        for lineno, _, row in iter_scored_rows(out, warn=False):
            rid = str(row["id"])
            if rid in bad_ids:  # scored by a datagen that did not reject malformed rows
                stale.add(lineno)
                continue
            if rid in ids:
                repeated.add(lineno)
                continue
            scores = row.get("scores")
            if not isinstance(scores, dict) or "moss_loss" not in scores:
                raise InputError(
                    "row has no scores.moss_loss (not written by `datagen check`?)",
                    path=str(out),
                    line=lineno,
                )
            ids.add(rid)
            columns.add(scores)
    if repeated:
        log.warning(
            "%s: %d rows repeat an id scored earlier in the file; the first of each is used",
            out,
            len(repeated),
        )
    report = score_report(columns)
    scored = len(columns)
    summary: dict[str, Any] = {
        "in": scored + len(malformed),
        "scored_now": scored_now,
        "resumed": len(done),
        "count": scored,
        "report": report,
        "duplicate_ids": duplicates,
        "truncation_this_run": stats.to_dict(),
        "settings": settings,
    }
    if max_rows is not None:
        summary["max_rows"] = max_rows

    step: dict[str, Any] = {
        "step": STEP_NAME,
        "in": scored + len(malformed),
        "kept": scored,
        "dropped": len(malformed),
        "tagged": 0,
        "reasons": dict(sorted(malformed_reasons.items())),
    }
    if not (thresholded or kept_path is not None) and malformed:
        rejected_path = Path(rejected_path) if rejected_path else out.with_name(f"{out.stem}.rejected.jsonl")
        with atomic_write(rejected_path, "wb") as rejected_fh:
            for conv, reason, evidence in malformed:
                rejected_fh.write(_rejected_line(conv, reason, evidence))
        summary["rejected_path"] = str(rejected_path)
    if thresholded or kept_path is not None:
        cutoff, reason_name = (
            threshold_cutoff(columns.finite_losses(), max_loss=max_loss, percentile=percentile)
            if thresholded
            else (None, None)
        )
        kept_path = Path(kept_path) if kept_path else out.with_name(f"{out.stem}.kept.jsonl")
        rejected_path = Path(rejected_path) if rejected_path else out.with_name(f"{out.stem}.rejected.jsonl")
        reasons: Counter[str] = Counter(malformed_reasons)
        kept = unscored = 0
        # Pass 2: split the output; pass 3 (with max_rows): the input rows that were not scored.
        with atomic_write(kept_path, "wb") as kept_fh, atomic_write(rejected_path, "wb") as rejected_fh:
            for conv, reason, evidence in malformed:
                rejected_fh.write(_rejected_line(conv, reason, evidence))
            if out.exists():
                for lineno, raw, row in iter_scored_rows(out, warn=False):
                    if lineno in repeated or lineno in stale:
                        continue
                    found = (
                        reject_reason(
                            row["scores"],
                            cutoff=cutoff,
                            reason_name=reason_name,
                            percentile=percentile,
                            require_fit=require_fit,
                        )
                        if thresholded
                        else None
                    )
                    if found is None:
                        # A whole last row that lost its newline: rows appended after it (the
                        # max_rows pass-through) must not run on into the same line.
                        kept_fh.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        kept += 1
                        continue
                    reason, evidence = found
                    row["tags"] = {**(row.get("tags") or {}), STEP_NAME: reason}
                    row["rejected"] = {"step": STEP_NAME, "reason": reason, "evidence": evidence}
                    rejected_fh.write((dumps(row) + "\n").encode("utf-8"))
                    reasons[reason] += 1
            if max_rows is not None:
                passed: set[str] = set()
                for conv in read_any(inputs):
                    if conv.id in ids or conv.id in passed or conv.id in bad_ids:
                        continue
                    passed.add(conv.id)
                    found = format_defect(conv)  # rows past max_rows are not passed on malformed either
                    if found is not None:
                        rejected_fh.write(_rejected_line(conv, *found))
                        reasons[found[0]] += 1
                        malformed_reasons[found[0]] += 1
                        continue
                    kept_fh.write((dumps(conv.to_dict()) + "\n").encode("utf-8"))
                    unscored += 1
        dropped = sum(reasons.values())
        n_in = kept + unscored + dropped
        step = {
            "step": STEP_NAME,
            "in": n_in,
            "kept": kept + unscored,
            "dropped": dropped,
            "tagged": 0,
            "reasons": dict(sorted(reasons.items())),
        }
        if max_rows is not None:
            step["unscored"] = unscored
            summary["unscored"] = unscored
        summary.update(
            {
                "in": n_in,
                "count": kept + unscored,
                "kept_path": str(kept_path),
                "rejected_path": str(rejected_path),
            }
        )
        if thresholded:
            summary["cutoff"] = cutoff
    summary["funnel_step"] = step
    if malformed_reasons:
        summary["malformed"] = dict(sorted(malformed_reasons.items()))
        why = ", ".join(f"{r}: {n}" for r, n in sorted(malformed_reasons.items()))
        print(
            f"warning: {sum(malformed_reasons.values())} input rows are not well-formed MOSS 003 and were "
            f"rejected unscored ({why}); `datagen validate` shows their problems",
            file=sys.stderr,
        )
    summary["threshold"] = {"max_loss": max_loss, "percentile": percentile, "require_fit": require_fit}
    write_json_atomic(report_path, summary, newline=False)
    summary["report_path"] = str(report_path)
    return summary


def run_check(
    inp: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | None,
    batch_size: int = 4,
    max_length: int | None = None,
    max_loss: float | None = None,
    percentile: float | None = None,
    max_rows: int | None = None,
    device: str | None = None,
    progress: bool = True,
    tokenization: str = "auto",
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """The pipeline's check stage: `out_dir/scored.jsonl`, `kept.jsonl`, `rejected.jsonl`,
    `report.json`. Returns `count` (kept), `in` and the `funnel_step`.

    `max_length=None` is the model's context (`check.max_length` left unset); a larger value than
    the model's is a ConfigError on `check.max_length`. With `max_rows`, the rows past it go to
    `kept.jsonl` unscored (see the module docstring). `scorer`: as for `check_files`."""
    if not model:
        raise ConfigError(
            "the check stage needs a model (a folder, a .gguf file or smollm2)", field="check.model"
        )
    out_dir = Path(out_dir)
    try:
        return check_files(
            [inp],
            out_dir / "scored.jsonl",
            model=model,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            max_loss=max_loss,
            percentile=percentile,
            max_rows=max_rows,
            report_path=out_dir / "report.json",
            kept_path=out_dir / "kept.jsonl",
            rejected_path=out_dir / "rejected.jsonl",
            progress=progress,
            tokenization=tokenization,
            scorer=scorer,
        )
    except ConfigError as exc:
        if exc.path is not None or not exc.field or "." in exc.field:
            raise
        raise ConfigError(exc.reason, field=f"check.{exc.field}") from None


__all__ = ["check_files", "run_check", "scored_ids", "format_report"]
