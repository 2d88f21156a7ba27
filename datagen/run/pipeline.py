"""`datagen run CONFIG`: seeds -> expansion -> HHH and plugin dialogues -> filters -> local check ->
dataset folder (-> Hub). `datagen status RUN_DIR` shows where a run is.

Every stage writes its JSONL under the run directory and records itself in `manifest.json`. A rerun
of the same command skips stages whose fingerprint matches, and the unfinished stage continues from
the teacher journal (`journal.sqlite`), so finished calls are never paid twice.

Layout of a run directory:

    manifest.json            config, fingerprints, versions, per-stage status, counts, times, cost
    seeds.jsonl              the seed prompts this run started from
    prompts/expanded.jsonl   machine prompts from the Self-Instruct loop (+ rejected.jsonl)
    dialogues/{hhh,plugin}.jsonl
    filtered/                kept.jsonl, rejected.jsonl, funnel.json, funnel.md
    checked/                 scored.jsonl, rejected.jsonl, report.json
    final.jsonl              the conversations that made it
    funnel.json, funnel.md, funnel.png
    dataset/                 the Hub-ready folder (parquet + card)
    journal.sqlite           every teacher call: cache, resume point, cost ledger
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.io import read_conversations, write_json_atomic, write_jsonl_atomic
from datagen.run.config import RunConfig, load_config
from datagen.run.manifest import Manifest
from datagen.versions import now, versions


def _log(msg: str) -> None:
    print(f"[datagen] {msg}", file=sys.stderr, flush=True)


class Run:
    """One run directory and the stages that fill it."""

    def __init__(self, config: RunConfig, run_dir: Path):
        self.config = config
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest.open(self.dir)
        self.journal = self.dir / "journal.sqlite"
        self.steps: list[dict[str, Any]] = []  # the whole-run funnel, in order
        self._fp: dict[str, str] = {}
        self._teacher_checked = False

    # ----------------------------------------------------------------- bookkeeping
    def fingerprint(self, stage: str, *sections: str, after: str | None = None, inputs: str = "") -> str:
        """A stage's fingerprint: its config sections, the fingerprint of the stage it reads, and
        `inputs` (an identity of files it reads that the config only names, e.g. the seed file)."""
        import hashlib

        base = self.config.fingerprint(*sections) if sections else self.config.fingerprint("seed")
        upstream = self._fp.get(after, "") if after else ""
        fp = hashlib.sha256(f"{stage}:{base}:{upstream}:{inputs}".encode()).hexdigest()[:16]
        self._fp[stage] = fp
        return fp

    def stage(self, name: str, fingerprint: str, outputs: list[Path], fn, *args: Any,
              fresh: list[Path] = ()) -> dict[str, Any]:
        """Run `fn` unless the manifest says this stage is done with this fingerprint and its outputs
        exist. Returns the stage's recorded info.

        `fresh` lists append-only outputs (files or folders) that belong to one fingerprint: when the
        stage runs for a new fingerprint (config or inputs changed) they are removed first, so rows
        made under the old settings never leak into the new run. An interrupted stage with the same
        fingerprint keeps them and resumes.

        A teacher stage that made nothing while its calls failed stops the run with the main cause
        and an example message, and is left `failed`, so the rerun asks those calls again. A done
        stage whose info counts `retry_next_run` (requests the server refused) is re-entered on the
        next run, to try those again."""
        prev = self.manifest.stages.get(name, {})
        retry = prev.get("retry_next_run", 0) if prev.get("fingerprint") == fingerprint else 0
        done = self.manifest.is_done(name, fingerprint) and all(p.exists() for p in outputs)
        if done and retry and not self._teacher_answers(name):
            retry = 0  # a teacher that is down now must not fail a finished run
        if done and not retry:
            _log(f"{name}: done earlier, skipped")
            return self.manifest.stages[name]
        if prev.get("fingerprint") == fingerprint and (prev.get("status") != "done" or retry):
            _log(f"{name}: asking again for the {retry} the server refused last time (finished calls come "
                 "from the journal)" if prev.get("status") == "done" else f"{name}: resuming")
        else:
            if prev and any(p.exists() for p in fresh):
                _log(f"{name}: settings or inputs changed, starting it afresh (teacher calls already "
                     "made still come from the journal)")
            for p in fresh:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            _log(f"{name}: running")
        self.manifest.start(name, fingerprint)
        t0 = time.monotonic()
        try:
            info = fn(*args) or {}
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
            self.manifest.finish(name, **_portable(info, self.dir))
            self.manifest.stages[name]["status"] = "incomplete"
            self.manifest.save()
            why = ", ".join(f"{n} {r}" for r, n in sorted(transient.items()))
            raise DatagenError(f"{name}: {sum(transient.values())} teacher calls failed ({why}); rerun the "
                               "same command to retry them (finished calls are not paid again)")
        self.manifest.finish(name, **_portable(info, self.dir))
        return self.manifest.stages[name]

    def _made_nothing(self, name: str, info: dict[str, Any]) -> None:
        """A teacher stage ended with no output: when its calls failed, stop the run naming the
        cause, and leave the stage `failed` so that a rerun asks again (finished calls are free)."""
        from datagen.generate.common import failure_cause

        cause = failure_cause(info, info.get("failure_examples"))
        if not cause and not info.get("not_started"):
            return  # nothing asked (no prompts for it, or targets of 0): nothing went wrong
        stopped = (f"; stopped there, {info['not_started']} not started" if info.get("not_started") else "")
        message = (f"{name}: nothing was made (failed: {cause}){stopped}. Fix the teacher or the config and "
                   "rerun the same command: the failed calls are asked again, finished ones come from the "
                   "journal")
        self.manifest.finish(name, **_portable(info, self.dir))
        self.manifest.fail(name, message)
        raise DatagenError(message)

    def _teacher_answers(self, name: str) -> bool:
        """Whether the teacher can be asked again for a done stage's refused calls (else say so)."""
        from datagen.errors import TeacherError

        try:
            self.ensure_teacher()
        except TeacherError as exc:
            _log(f"{name}: done earlier; not asking again for what the server refused, as {exc}")
            return False
        return True

    def ensure_teacher(self) -> None:
        """Check once per run that the teacher answers, before a stage that needs it."""
        if not self._teacher_checked:
            from datagen.teacher.preflight import check_teacher

            check_teacher(self.config.teacher)
            self._teacher_checked = True

    # ----------------------------------------------------------------- stages
    def run(self) -> dict[str, Any]:
        """Run (or resume) every stage. Holds a lock on the run directory meanwhile, so two
        processes never append to the same files or pay for the same calls."""
        lock = open(self.dir / ".lock", "w")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DatagenError(f"{self.dir} is in use by another datagen run; wait for it or pick "
                               "another --out") from None
        try:
            return self._run()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _run(self) -> dict[str, Any]:
        from datagen import __version__

        cfg = self.config
        self.manifest.data.update({
            "name": cfg.name,
            "fingerprint": cfg.fingerprint(),
            "config": cfg.raw,
            "config_file": cfg.source,
            "versions": versions(),
            "datagen": __version__,
        })
        self.manifest.data.setdefault("created", now())
        self.manifest.save()

        seeds_path = self.dir / "seeds.jsonl"
        fp = self.fingerprint("seeds", "seeds", "seed", inputs=_file_identity(self._seed_file()))
        info = self.stage("seeds", fp, [seeds_path], self._seeds, seeds_path)
        self.steps.append({"step": "seeds", "in": info.get("in", 0), "kept": info.get("count", 0),
                           "dropped": info.get("in", 0) - info.get("count", 0), "tagged": 0,
                           "reasons": info.get("reasons", {})})

        expanded = self.dir / "prompts" / "expanded.jsonl"
        fp = self.fingerprint("expand", "expand", "teacher", "seed", after="seeds")
        info = self.stage("expand", fp, [expanded], self._expand, seeds_path, expanded,
                          fresh=[expanded.parent])
        # The expansion row counts candidate prompts: rejected ones by reason, plus those beyond a
        # cell's target (surplus). Failed requests made no candidates; the manifest keeps them.
        reasons = _reasons(info, ("rejected_",))
        if info.get("surplus"):
            reasons["surplus"] = info["surplus"]
        self.steps.append({"step": "expand", "in": info.get("candidates", 0), "kept": info.get("count", 0),
                           "dropped": sum(reasons.values()), "tagged": 0, "reasons": reasons})

        dialogue_files: list[Path] = []
        for kind in ("hhh", "plugin"):
            dk = cfg.dialogues.get(kind)
            if dk is not None and not dk.enabled:
                continue
            out = self.dir / "dialogues" / f"{kind}.jsonl"
            fp = self.fingerprint(f"dialogues.{kind}", f"dialogues.{kind}", "teacher", "tools", "seed",
                                  after="expand")
            info = self.stage(f"dialogues.{kind}", fp, [out], self._dialogues, kind, seeds_path, expanded, out,
                              fresh=sorted(out.parent.glob(f"{kind}.*")))
            reasons = _reasons(info, ("failed_",))
            self.steps.append({"step": f"dialogues.{kind}", "in": info.get("prompts", 0),
                               "kept": info.get("count", 0), "dropped": sum(reasons.values()), "tagged": 0,
                               "reasons": reasons})
            dialogue_files.append(out)
        self._fp["dialogues"] = "".join(self._fp.get(f"dialogues.{k}", "") for k in ("hhh", "plugin"))

        filtered = self.dir / "filtered"
        # The dialogue files too: a rerun that finishes dialogues the server refused before adds rows
        # under the same settings, and the filters must see them.
        fp = self.fingerprint("filter", "filters", after="dialogues",
                              inputs="|".join(_file_identity(str(p)) for p in dialogue_files))
        info = self.stage("filter", fp, [filtered / "kept.jsonl", filtered / "funnel.json"],
                          self._filter, dialogue_files, filtered)
        filter_funnel = json.loads((filtered / "funnel.json").read_text(encoding="utf-8"))
        self.steps.extend(filter_funnel.get("steps", []))
        current = filtered / "kept.jsonl"

        if cfg.check.enabled:
            checked = self.dir / "checked"
            # Scores depend on the model, the context and the rows; the threshold only splits them.
            # A changed threshold re-splits the scores already made instead of scoring again.
            score_fp = self.fingerprint("check.scores", "check.model", "check.max_length", "check.max_rows",
                                        "check.tokenization", after="filter",
                                        inputs=_file_identity(cfg.check.model))
            fp = self.fingerprint("check", "check", after="check.scores")
            prev = self.manifest.stages.get("check", {})
            info = self.stage("check", fp, [checked / "kept.jsonl"], self._check, current, checked, score_fp,
                              fresh=[] if prev.get("score_fingerprint") == score_fp else [checked])
            self.steps.append(info.get("funnel_step") or {"step": "moss_check", "in": info.get("in", 0),
                                                          "kept": info.get("count", 0), "dropped": 0,
                                                          "tagged": 0, "reasons": {}})
            current = checked / "kept.jsonl"
            self._fp["final_input"] = self._fp["check"]
        else:
            self._fp["final_input"] = self._fp["filter"]

        review_file = self.dir / "review.jsonl"
        if review_file.exists():
            # People's decisions from `datagen review`, applied last: a reviewer's accept outranks
            # any threshold. review/ also holds the page's index, so it is never cleaned as stale.
            reviewed = self.dir / "review" / "kept.jsonl"
            fp = self.fingerprint("review", after="final_input", inputs=_file_identity(str(review_file)))
            info = self.stage("review", fp, [reviewed], self._review, current, reviewed)
            self.steps.append(info["funnel_step"])
            for flagged in info.get("flagged", []):
                _log(f"review: {flagged['id']}: {flagged['why']}; not applied")
            current = reviewed
            self._fp["final_input"] = self._fp["review"]

        final = self.dir / "final.jsonl"
        fp = self.fingerprint("final", after="final_input")
        self.stage("final", fp, [final, self.dir / "funnel.json", self.dir / "funnel.png"], self._final,
                   current, final)

        if cfg.dataset.enabled:
            folder = self.dir / "dataset"
            fp = self.fingerprint("dataset", "dataset", "publish", after="final")
            self.stage("dataset", fp, [folder / "README.md"], self._dataset, folder)
            if cfg.publish.repo_id:
                # Uploading is cheap to repeat and the Hub is the source of truth: always run it.
                self.manifest.stages.pop("publish", None)
                fp = self.fingerprint("publish", "publish", after="dataset")
                self.stage("publish", fp, [], self._publish, folder)

        self._record_cost()
        self.manifest.data["finished"] = now()
        self.manifest.save()
        return self.manifest.data

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
        self.manifest.data["teacher_calls"] = {"total": st.total, "ok": st.ok, "failed": st.failed,
                                               "prompt_tokens": st.prompt_tokens,
                                               "completion_tokens": st.completion_tokens}
        self.manifest.save()

    def _seed_file(self) -> Path:
        return Path(self.config.seeds.path)  # already resolved against the config file's folder

    def _seeds(self, out: Path) -> dict[str, Any]:
        from datagen.seeds.curate import sample_balanced
        from datagen.seeds.record import normalize_category, normalize_language, read_seeds

        sc = self.config.seeds
        path = self._seed_file()
        seeds = list(read_seeds(path))
        total = len(seeds)
        reasons: Counter[str] = Counter()
        kept = []
        categories = {normalize_category(c) for c in sc.categories}
        languages = {normalize_language(x) for x in sc.languages}
        for s in seeds:
            if languages and (not s.language or normalize_language(s.language) not in languages):
                reasons["language_not_selected"] += 1
            elif categories and normalize_category(s.category) not in categories:
                reasons["category_not_selected"] += 1
            else:
                kept.append(s)
        if sc.per_cell:
            sampled = sample_balanced(kept, per_cell=sc.per_cell, seed=self.config.seed)
            reasons["balanced_sample"] += len(kept) - len(sampled)
            kept = sampled
        n = write_jsonl_atomic(out, kept)
        return {"count": n, "in": total, "reasons": dict(reasons), "source": str(path)}

    def _expand(self, seeds_path: Path, out: Path) -> dict[str, Any]:
        from datagen.generate.expand import expand
        from datagen.seeds.record import read_seeds

        self.ensure_teacher()
        seeds = list(read_seeds(seeds_path))
        stats = expand(seeds, self.config.expand, self.config.teacher, out, self.journal,
                       run_seed=self.config.seed)
        info = stats if isinstance(stats, dict) else stats.info()
        info.setdefault("count", _count_lines(out))
        _log_teacher_stage("expand", info, f"{info.get('count', 0)} prompts kept of {info.get('candidates', 0)} "
                                          f"candidates, {info.get('requests', 0)} requests")
        return info

    def _dialogue_prompts(self, kind: str, seeds_path: Path, expanded: Path) -> list[Any]:
        from datagen.seeds.record import read_seeds

        dk = self.config.dialogues.get(kind)
        include_seeds = dk.include_seeds if dk else True
        prompts = list(read_seeds(seeds_path)) if include_seeds else []
        if expanded.exists():
            prompts += list(read_seeds(expanded))
        want_plugin = kind == "plugin"
        prompts = [p for p in prompts if bool(p.plugins) == want_plugin]
        if dk and dk.max_dialogues is not None:
            prompts = _interleave(prompts)[: dk.max_dialogues]
        return prompts

    def _dialogues(self, kind: str, seeds_path: Path, expanded: Path, out: Path) -> dict[str, Any]:
        from datagen.generate.dialogues import generate_dialogues

        self.ensure_teacher()
        prompts = self._dialogue_prompts(kind, seeds_path, expanded)
        dk = self.config.dialogues.get(kind)
        options = dict(dk.options) if dk else {}
        stats = generate_dialogues(prompts, kind=kind, options=options, teacher=self.config.teacher,
                                   out_path=out, journal_path=self.journal, tools_config=self.config.tools,
                                   run_seed=self.config.seed)
        info = stats if isinstance(stats, dict) else stats.info()
        info["prompts"] = len(prompts)
        info.setdefault("count", _count_lines(out))
        _log_teacher_stage(f"dialogues.{kind}", info, f"{info.get('made', 0)} made"
                           + (f", {info['skipped_done']} done earlier" if info.get("skipped_done") else ""))
        return info

    def _filter(self, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
        from datagen.filters.run import run_filters

        def rows():
            for p in inputs:
                if p.exists():
                    yield from read_conversations(p)

        report = run_filters(rows(), self.config.filters, out_dir)
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        return {"count": data.get("kept", 0), "in": data.get("input", 0)}

    def _check(self, inp: Path, out_dir: Path, score_fp: str) -> dict[str, Any]:
        from datagen.check.files import run_check

        cc = self.config.check
        return {"score_fingerprint": score_fp} | run_check(inp, out_dir, model=cc.model, batch_size=cc.batch_size, max_length=cc.max_length,
                         max_loss=cc.max_loss, percentile=cc.percentile, max_rows=cc.max_rows,
                         progress=bool(self.config.teacher.progress), tokenization=cc.tokenization)

    def _review(self, inp: Path, out: Path) -> dict[str, Any]:
        from datagen.review.apply import review_stage

        return review_stage(self.dir, inp, out)

    def _final(self, inp: Path, final: Path) -> dict[str, Any]:
        from datagen.funnel import funnel_table
        from datagen.run.plot import plot_run

        # One streaming pass: copy the rows, keep only what the report needs.
        by_kind: Counter[str] = Counter()
        losses: list[float] = []

        def rows():
            for conv in read_conversations(inp):
                by_kind[conv.kind] += 1
                if conv.scores.get("moss_loss") is not None:
                    losses.append(float(conv.scores["moss_loss"]))
                yield conv

        write_jsonl_atomic(final, rows())
        count = sum(by_kind.values())
        first_in = self.steps[0]["in"] if self.steps else count
        funnel = {"input": first_in, "kept": count, "steps": self.steps}
        write_json_atomic(self.dir / "funnel.json", funnel)
        (self.dir / "funnel.md").write_text(funnel_table(funnel) + "\n", encoding="utf-8")
        dropped: list[float] = []
        cutoff = None
        checked = self.dir / "checked"
        if self.config.check.enabled and (checked / "rejected.jsonl").exists():
            dropped = [float(c.scores["moss_loss"]) for c in read_conversations(checked / "rejected.jsonl")
                       if c.scores.get("moss_loss") is not None]
            report = json.loads((checked / "report.json").read_text(encoding="utf-8"))
            cutoff = report.get("cutoff")
        plot_run(funnel, losses, self.dir / "funnel.png", cutoff=cutoff, dropped_losses=dropped)
        return {"count": count, "by_kind": dict(by_kind)}

    def _dataset(self, folder: Path) -> dict[str, Any]:
        from datagen.publish.build import build_dataset_folder
        from datagen.publish.verify import check_dataset_folder

        if not _count_lines(self.dir / "final.jsonl"):
            raise DatagenError(f"{self.dir / 'final.jsonl'} is empty, so there is no dataset to build: "
                               f"{_lost_at(self.steps)}; see {self.dir / 'funnel.md'}")
        pc = self.config.publish
        built = build_dataset_folder(self.dir, folder, license=pc.license, pretty_name=pc.pretty_name,
                                     repo_id=pc.repo_id)
        problems = check_dataset_folder(folder)
        if problems:
            raise DatagenError(f"the dataset folder {folder} failed its checks: {problems[0]}"
                               + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
        return {"count": getattr(built, "rows", None) or _count_lines(self.dir / "final.jsonl")}

    def _publish(self, folder: Path) -> dict[str, Any]:
        from datagen.publish.hub import publish

        pc = self.config.publish
        url = publish(folder, pc.repo_id, private=pc.private,
                      commit_message=f"datagen run {self.config.name} ({self.manifest.data['fingerprint']})")
        return {"url": url}


def _portable(value: Any, run_dir: Path) -> Any:
    """Stage info with absolute paths made relative (to the run directory, else the working
    directory, else just the file name): the manifest travels with the published dataset and must
    not carry this machine's paths."""
    if isinstance(value, dict):
        return {k: _portable(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, run_dir) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        path = Path(value)
        for base in (run_dir.resolve(), Path.cwd()):
            try:
                return str(path.resolve().relative_to(base))
            except ValueError:
                continue
        return path.name
    return value


def _reasons(info: dict[str, Any], prefixes: tuple[str, ...] = ("rejected_", "failed_")) -> dict[str, int]:
    """Drop reasons from a stage's counters (`rejected_near_dup: 3` -> `near_dup: 3`)."""
    out: dict[str, int] = {}
    for key, value in info.items():
        for prefix in prefixes:
            if key.startswith(prefix) and isinstance(value, int) and value:
                out[key[len(prefix):]] = out.get(key[len(prefix):], 0) + value
    return out


def _log_teacher_stage(name: str, info: dict[str, Any], made: str) -> None:
    """One line per teacher stage: what it made, and what failed with an example of the main cause."""
    from datagen.generate.common import failure_cause

    if not info.get("calls"):
        return  # asked nothing (a target of 0, no prompt of this kind)
    cause = failure_cause(info, info.get("failure_examples"))
    line = f"{name}: {made}" + (f"; failed: {cause}" if cause else "")
    if info.get("retry_next_run"):
        line += f"; {info['retry_next_run']} refused by the server are tried again on the next run"
    _log(line)


def _lost_at(steps: list[dict[str, Any]]) -> str:
    """Where a run's rows ran out: the first funnel step that kept none of what it got, and why."""
    for step in steps:
        if step.get("in") and not step.get("kept"):
            reasons = sorted((step.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:3]
            why = ", ".join(f"{r} {n}" for r, n in reasons)
            return f"step {step.get('step')} kept none of its {step['in']} rows" + (f" ({why})" if why else "")
    return "no step had rows to keep (are there seed prompts for the enabled dialogue kinds?)"


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _interleave(prompts: list[Any]) -> list[Any]:
    """Round-robin over (category, language, plugins) so a cap keeps every kind of prompt."""
    groups: dict[tuple, deque[Any]] = {}
    for p in prompts:
        groups.setdefault((p.category, p.language, tuple(p.plugins)), deque()).append(p)
    out: list[Any] = []
    queues = deque(groups.values())
    while queues:
        q = queues.popleft()
        out.append(q.popleft())
        if q:
            queues.append(q)
    return out


def _file_identity(spec: str | None) -> str:
    """Size, modification time and (for small files) content hash of a file the config names, so a
    stage notices when the file changes under the same name. Non-paths (e.g. `smollm2`) are
    returned as they are."""
    import hashlib

    if not spec:
        return ""
    path = Path(spec)
    if not path.exists():
        return str(spec)
    if path.is_dir():
        parts = []
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    st = path.stat()
    if st.st_size <= 64 << 20:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{st.st_size}:{int(st.st_mtime)}"


# --------------------------------------------------------------------------- status

def run_status(run_dir: Path) -> str:
    """A readable summary of a run directory: each stage's status, counts, time and cost."""
    m = Manifest.open(run_dir)
    if not m.path.exists():
        raise DatagenError(f"{run_dir}: no manifest.json here (is it a run directory?)")
    lines = [f"run {m.data.get('name', '?')} ({m.data.get('fingerprint', '?')}) in {run_dir}"]
    for name, s in m.stages.items():
        extra = []
        if "count" in s:
            extra.append(f"{s['count']} rows")
        if s.get("cost"):
            extra.append(f"${float(s['cost']):.4f}")
        if "seconds" in s:
            extra.append(f"{s['seconds']}s")
        if s.get("error"):
            extra.append(f"error: {s['error']}")
        lines.append(f"  {name:<18} {s.get('status', '?'):<8} {', '.join(extra)}")
    journal = Path(run_dir) / "journal.sqlite"
    if journal.exists():
        try:
            from datagen.teacher.journal import Journal

            with Journal(journal) as j:
                st = j.stats()
            lines.append(f"  journal: {st}")
        except Exception as exc:  # status must always print something useful
            lines.append(f"  journal: unreadable ({exc})")
    if (Path(run_dir) / "funnel.md").exists():
        lines.append("")
        lines.append((Path(run_dir) / "funnel.md").read_text(encoding="utf-8").rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI

def cmd_run(args: argparse.Namespace) -> int:
    from datagen.procs import sigterm_as_interrupt

    config = load_config(args.config, args.set)
    if args.no_progress:  # display only: not part of any fingerprint
        config.teacher.progress = False
    out = Path(args.out) if args.out else Path("outputs") / config.name
    teacher = None
    # A SIGTERM stops the run like Ctrl-C, so the `finally` below stops the embedded teacher.
    with sigterm_as_interrupt():
        if args.serve_teacher:
            from datagen.teacher.local_server import start_local_teacher

            out.mkdir(parents=True, exist_ok=True)
            _log("starting the embedded teacher (llama-cpp-python, SmolLM2-135M-Instruct) on 127.0.0.1")
            teacher = start_local_teacher(args.teacher_model, port=args.teacher_port or _free_port(),
                                          log_path=out / "teacher-server.log")
            config.teacher.base_url = teacher.base_url
            # The served model's name goes into journal keys and fingerprints: another GGUF must not
            # reuse the answers of this one.
            config.teacher.model = teacher.model_alias
            config.raw.setdefault("teacher", {})["model"] = teacher.model_alias
        try:
            t0 = time.monotonic()
            data = Run(config, out).run()
        except DatagenError as exc:
            # Calls that failed to connect, or a teacher that stopped answering: if the embedded
            # server died, that is the news, not the failed calls.
            died = teacher.death() if teacher is not None else None
            if died is None:
                raise
            _log(str(exc))
            raise DatagenError(died) from exc
        finally:
            if teacher is not None:
                teacher.stop()
    stages = data.get("stages", {})
    kept = stages.get("final", {}).get("count", 0)
    print(f"done in {time.monotonic() - t0:.0f}s: {kept} conversations kept, cost ${data.get('cost', 0):.4f}")
    print(f"  dataset:  {out / 'final.jsonl'}" + (f"  and {out / 'dataset'}/" if (out / 'dataset').exists() else ""))
    print(f"  funnel:   {out / 'funnel.md'}  {out / 'funnel.png'}")
    if "publish" in stages and stages["publish"].get("url"):
        print(f"  on the Hub: {stages['publish']['url']}")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_status(args: argparse.Namespace) -> int:
    print(run_status(Path(args.run_dir)))
    return 0


def cmd_serve_teacher(args: argparse.Namespace) -> int:
    from datagen.procs import sigterm_as_interrupt
    from datagen.teacher.local_server import start_local_teacher

    with sigterm_as_interrupt():  # SIGTERM stops the server cleanly, as Ctrl-C does
        teacher = start_local_teacher(args.model, port=args.port, threads=args.threads,
                                      log_path=Path(args.log) if args.log else None)
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
    p = sub.add_parser("run", help="run every stage of a run config (rerun to resume)",
                       description="Run seeds -> expansion -> dialogues -> filters -> check -> dataset. "
                                   "Rerunning the same command resumes where it stopped. "
                                   "Example: datagen run configs/demo.yaml --out outputs/demo "
                                   "--set teacher.model=gpt-4o-mini")
    p.add_argument("config", help="YAML run config (see configs/example.yaml)")
    p.add_argument("--out", help="run directory (default outputs/NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set teacher.model=gpt-4o-mini (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and summaries only)")
    p.add_argument("--serve-teacher", action="store_true",
                   help="start the embedded local teacher for this run and stop it afterwards")
    p.add_argument("--teacher-model", default=None, help="GGUF for --serve-teacher (default: SmolLM2-135M)")
    p.add_argument("--teacher-port", type=int, default=None,
                   help="port for --serve-teacher (default: a free one)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="show where a run directory stands")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve-teacher", help="serve the embedded local teacher on 127.0.0.1 (OpenAI API)")
    p.add_argument("--model", default=None, help="a GGUF file (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log", default=None, help="write the server's log to this file (default: the terminal)")
    p.set_defaults(func=cmd_serve_teacher)
