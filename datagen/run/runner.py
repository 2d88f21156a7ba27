"""The runner: what every stage of `datagen run` shares, whatever executor runs it.

`Runner(config, run_dir).run(stages)` holds a lock on the run directory, writes the manifest's
header, then for each stage: chains its fingerprint to the stages it reads, skips it when the
manifest says it is done with this fingerprint and its outputs exist, removes stale outputs when its
fingerprint changed, has the executor run it, records it (failures a rerun can fix leave it
`incomplete` and stop the run), and adds its rows to the run's one funnel. At the end it records
the run's cost from the teacher journal.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.funnel import FunnelReport
from datagen.paths import portable
from datagen.run.executors import Executor, LocalExecutor
from datagen.run.manifest import Manifest
from datagen.stage import Stage, StageContext, StageResult, StageStats, log
from datagen.versions import now, versions


class Runner:
    """One run directory and the stages that fill it.

    Args:
        config: the RunConfig (`datagen.run.config`).
        run_dir: the run directory (created).
        executor: where stages run (default `LocalExecutor`: this process).
        engine_factory: handed to the teacher stages instead of `TeacherEngine` (a batch-API engine).
    """

    def __init__(
        self,
        config: Any,
        run_dir: Path,
        *,
        executor: Executor | None = None,
        engine_factory: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest.open(self.dir)
        self.journal = self.dir / "journal.sqlite"
        self.executor: Executor = executor or LocalExecutor()
        self.engine_factory = engine_factory
        self.funnel = FunnelReport()  # the whole-run funnel, in order
        self.results: dict[str, StageResult] = {}
        self._fp: dict[str, str] = {}
        self._teacher_checked = False

    # ----------------------------------------------------------------- the run
    def run(self, stages: list[Stage]) -> dict[str, Any]:
        """Run (or resume) every stage. Holds a lock on the run directory meanwhile, so two
        processes never append to the same files or pay for the same calls."""
        lock = open(self.dir / ".lock", "w")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DatagenError(
                f"{self.dir} is in use by another datagen run; wait for it or pick another --out"
            ) from None
        try:
            self._header()
            for stage in stages:
                self.run_stage(stage)
            self._record_cost()
            self.manifest.data["finished"] = now()
            self.manifest.save()
            return self.manifest.data
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _header(self) -> None:
        from datagen import __version__

        cfg = self.config
        self.manifest.data.update(
            {
                "name": cfg.name,
                "fingerprint": cfg.fingerprint(),
                "config": cfg.raw,
                "config_file": cfg.source,
                "versions": versions(),
                "datagen": __version__,
            }
        )
        self.manifest.data.setdefault("created", now())
        self.manifest.save()

    def context(self, stage: Stage) -> StageContext:
        """The context a stage runs with (rank 0 of 1; an executor that shards derives its own)."""
        return StageContext(
            run_dir=self.dir,
            config=self.config,
            stats=StageStats(stage.name),
            journal=self.journal,
            upstream=self.results,
            funnel=self.funnel,
            run_fingerprint=self.manifest.data.get("fingerprint", ""),
            progress=bool(self.config.teacher.progress),
            log=log,
            ensure_teacher=self.ensure_teacher,
            engine_factory=self.engine_factory,
        )

    def run_stage(self, stage: Stage) -> StageResult:
        """Run `stage` unless the manifest says it is done with this fingerprint and its outputs
        exist; either way, add its funnel rows and return what later stages read of it.

        `stage.fresh` lists append-only outputs (files or folders) that belong to one fingerprint:
        when the stage runs for a new fingerprint (config or inputs changed) they are removed first,
        so rows made under the old settings never leak into the new run. An interrupted stage with
        the same fingerprint keeps them and resumes.

        A teacher stage that made nothing while its calls failed stops the run with the main cause
        and an example message, and is left `failed`, so the rerun asks those calls again. A done
        stage whose info counts `retry_next_run` (requests the server refused) is re-entered on the
        next run, to try those again."""
        name = stage.name
        ctx = self.context(stage)
        fingerprint = stage.fingerprint("".join(self._fp.get(a, "") for a in stage.after), ctx)
        self._fp[name] = fingerprint
        if stage.always_run:  # e.g. uploading: cheap to repeat, and the Hub is the source of truth
            self.manifest.stages.pop(name, None)
        outputs = stage.outputs(ctx)
        must = [outputs[k] for k in (outputs if stage.done_when is None else stage.done_when)]
        prev = self.manifest.stages.get(name, {})
        retry = prev.get("retry_next_run", 0) if prev.get("fingerprint") == fingerprint else 0
        done = self.manifest.is_done(name, fingerprint) and all(p.exists() for p in must)
        if done and retry and not self._teacher_answers(name):
            retry = 0  # a teacher that is down now must not fail a finished run
        if done and not retry:
            log(f"{name}: done earlier, skipped")
            return self._finished(stage, ctx, fingerprint, outputs, skipped=True)
        fresh = stage.fresh(ctx, prev)
        if prev.get("fingerprint") == fingerprint and (prev.get("status") != "done" or retry):
            log(
                f"{name}: asking again for the {retry} the server refused last time (finished calls come "
                "from the journal)"
                if prev.get("status") == "done"
                else f"{name}: resuming"
            )
        else:
            if prev and any(p.exists() for p in fresh):
                log(
                    f"{name}: settings or inputs changed, starting it afresh (teacher calls already "
                    "made still come from the journal)"
                )
            for p in fresh:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            log(f"{name}: running")
        self.manifest.start(name, fingerprint)
        t0 = time.monotonic()
        try:
            if stage.needs_teacher:
                self.ensure_teacher()
            info = self.executor.run(stage, ctx) or {}
        except BaseException as exc:
            self.manifest.fail(name, f"{type(exc).__name__}: {exc}")
            raise
        info["seconds"] = round(time.monotonic() - t0, 2)
        if "calls" in info and not info.get("count"):
            self._made_nothing(name, info)
        from datagen.teacher.failures import RETRYABLE

        transient = {r: info.get(f"failed_{r}", 0) for r in RETRYABLE if info.get(f"failed_{r}", 0)}
        if "retryable_failed" in info:  # the stage says which of its failures a rerun would retry
            n = info["retryable_failed"]
            transient = {} if not n else transient if sum(transient.values()) == n else {"retryable": n}
        if transient:
            # Some teacher calls failed for reasons a retry can fix: the stage is not done, and a
            # rerun re-enters it (finished calls come from the journal, unpaid).
            self.manifest.finish(name, **self._portable(info))
            self.manifest.stages[name]["status"] = "incomplete"
            self.manifest.save()
            why = ", ".join(f"{n} {r}" for r, n in sorted(transient.items()))
            raise DatagenError(
                f"{name}: {sum(transient.values())} teacher calls failed ({why}); rerun the "
                "same command to retry them (finished calls are not paid again)"
            )
        self.manifest.finish(name, **self._portable(info))
        return self._finished(stage, ctx, fingerprint, outputs, skipped=False)

    def _finished(
        self, stage: Stage, ctx: StageContext, fingerprint: str, outputs: dict[str, Path], *, skipped: bool
    ) -> StageResult:
        # The same path for a stage run now and one skipped: its funnel rows come from what the
        # manifest recorded.
        info = self.manifest.stages[stage.name]
        rows = stage.funnel(info, ctx)
        for row in rows:
            self.funnel.add_step(row)
        stage.report(info, ctx)
        result = StageResult(stage.name, fingerprint, info, outputs, rows, skipped=skipped)
        self.results[stage.name] = result
        return result

    def _portable(self, info: dict[str, Any]) -> dict[str, Any]:
        """Stage info with absolute paths made relative (to the run directory, else the working
        directory, else just the file name): the manifest travels with the published dataset and
        must not carry this machine's paths."""
        return portable(info, bases=(self.dir, os.getcwd()))

    def _made_nothing(self, name: str, info: dict[str, Any]) -> None:
        """A teacher stage ended with no output: when its calls failed, stop the run naming the
        cause, and leave the stage `failed` so that a rerun asks again (finished calls are free)."""
        from datagen.generate.common import failure_cause

        cause = failure_cause(info, info.get("failure_examples"))
        if not cause and not info.get("not_started"):
            return  # nothing asked (no prompts for it, or targets of 0): nothing went wrong
        stopped = f"; stopped there, {info['not_started']} not started" if info.get("not_started") else ""
        message = (
            f"{name}: nothing was made (failed: {cause}){stopped}. Fix the teacher or the config and "
            "rerun the same command: the failed calls are asked again, finished ones come from the "
            "journal"
        )
        self.manifest.finish(name, **self._portable(info))
        self.manifest.fail(name, message)
        raise DatagenError(message)

    # ----------------------------------------------------------------- the teacher
    def _teacher_answers(self, name: str) -> bool:
        """Whether the teacher can be asked again for a done stage's refused calls (else say so)."""
        from datagen.errors import TeacherError

        try:
            self.ensure_teacher()
        except TeacherError as exc:
            log(f"{name}: done earlier; not asking again for what the server refused, as {exc}")
            return False
        return True

    def ensure_teacher(self) -> None:
        """Check once per run that the teacher answers, before a stage that needs it."""
        if not self._teacher_checked:
            from datagen.teacher.preflight import check_teacher

            check_teacher(self.config.teacher)
            self._teacher_checked = True

    def _record_cost(self) -> None:
        """The run's tokens and cost from the journal: every call ever paid for, in this session or
        in one that was killed, which stage counters cannot see."""
        if not self.journal.exists():
            self.manifest.data["cost"] = 0.0
            return
        from datagen.teacher.journal import Journal

        with Journal(self.journal) as j:
            st = j.stats()
        self.manifest.data["cost"] = round(st.cost, 6)
        self.manifest.data["teacher_calls"] = {
            "total": st.total,
            "ok": st.ok,
            "failed": st.failed,
            "prompt_tokens": st.prompt_tokens,
            "completion_tokens": st.completion_tokens,
        }
        self.manifest.save()
