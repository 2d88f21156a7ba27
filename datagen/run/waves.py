"""`datagen run` with `targets`: waves of generate -> filter -> judge until every cell is full or
the budget would be exceeded by the next wave.

    targets: {writing/en/hhh: 20, math/en/plugin/calculator: 5}
    budget: {usd: 2.0}

The run directory holds `seeds.jsonl` (the seed selection, as in any run), `pool/` (prompts the
Self-Instruct loop added for the waves), `waves/wNNN/` (one ordinary run directory per wave: its
prompts, dialogues, filtered rows with the judge's scores, final.jsonl) and `quota.json` (the
targets and, per wave, the prompts it asked for by cell). Every wave uses the run's one
`journal.sqlite`.

Before each wave, `datagen.run.quota.plan_wave` sizes it from what every earlier wave measured
per cell (attempts, accepted rows, cost) and from the journal's spend. A wave's prompts are the
cell's seeds not used yet, then prompts of the pool, which grows (journaled, with a seed of its
own per wave) when it runs short. At the end, `final.jsonl` takes each cell's accepted rows in
wave order up to its target; the rest go to `reserve.jsonl`, which a raised target uses first. A
rerun replays every recorded wave from the journal (a finished wave is skipped) and plans from
there, so raising a target pays only for the new rows. A reviewer's decisions on the run's rows
(`review.jsonl`, from `datagen review RUN_DIR`) apply before rows are counted or capped
(`datagen.run.quota_review`): a rejected row's place goes to the reserve, then to a new wave.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.filters.judge_report import cell_key
from datagen.io import iter_conversations, write_json_atomic, write_jsonl_atomic
from datagen.run.quota import CellProgress, WavePlan, plan_wave
from datagen.run.quota_review import WaveReview
from datagen.stage import log

STATE_FILE = "quota.json"
STATUS_FILE = "quota.md"
WAVES_DIR = "waves"
POOL_DIR = "pool"


def prompt_cell(prompt: Any) -> str:
    """The cell a prompt's dialogue counts in."""
    return cell_key(prompt.category, prompt.language, prompt.plugins)


def row_prompt(conv: Any) -> str:
    """The prompt a dialogue was made from (`extra.generation.prompt_id`, else its id without the
    kind prefix)."""
    gen = conv.extra.get("generation") if isinstance(conv.extra, dict) else None
    if isinstance(gen, dict) and gen.get("prompt_id"):
        return str(gen["prompt_id"])
    return conv.id.split("-", 1)[1] if "-" in conv.id else conv.id


@dataclasses.dataclass(slots=True)
class Wave:
    """One recorded wave: its number, folder (relative to the run) and prompt ids by cell."""

    n: int
    prompts: dict[str, list[str]]

    @property
    def dir(self) -> str:
        return f"{WAVES_DIR}/w{self.n:03d}"


class QuotaRun:
    """A run in waves (see the module docstring).

    Args:
        config: the RunConfig, with `quota` (targets, budget, policy).
        run_dir: the run directory.
        executor, engine_factory: as for `datagen.run.runner.Runner`.
    """

    def __init__(self, config: Any, run_dir: Path, *, executor: Any = None, engine_factory: Any = None):
        if config.quota is None:
            raise DatagenError("a run in waves needs `targets` in its config")
        self.config = config
        self.quota = config.quota
        self.dir = Path(run_dir)
        self.journal = self.dir / "journal.sqlite"
        self.executor, self.engine_factory = executor, engine_factory
        self.waves: list[Wave] = []
        self.review: WaveReview | None = None
        self._check()

    def _check(self) -> None:
        if self.quota.budget.usd is None:
            return
        for where, teacher, model in priced_models(self.config):
            if teacher.price_of(model, 1, 1) is None:
                # without a price its calls cost $0 in the ledger and the budget never stops a wave
                raise DatagenError(
                    f"budget.usd: {where} has no price for the model {model!r}, so its calls would "
                    "not count against the budget; add its prices, or limit budget.tokens instead"
                )
        for cell in self.quota.targets:
            kind = cell.split("/")[2]
            dk = self.config.dialogues.get(kind)
            if dk is not None and not dk.enabled:
                raise DatagenError(
                    f"targets: {cell} needs {kind} dialogues, which this config disables "
                    f"(dialogues.{kind}.enabled)"
                )

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        path = self.dir / STATE_FILE
        if not path.exists():
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        self.waves = [
            Wave(int(w["n"]), {c: list(ids) for c, ids in w["prompts"].items()}) for w in data["waves"]
        ]

    def _save(self, plan: WavePlan | None = None) -> None:
        q = self.quota
        data = {
            "targets": q.targets,
            "budget": dataclasses.asdict(q.budget),
            "policy": dataclasses.asdict(q.policy),
            "waves": [{"n": w.n, "dir": w.dir, "prompts": w.prompts} for w in self.waves],
        }
        if plan is not None:
            data["plan"] = {
                "wave": plan.wave,
                "stop": plan.stop,
                "attempts": plan.attempts,
                "projected_cost": round(plan.cost, 6),
            }
        write_json_atomic(self.dir / STATE_FILE, data)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        """Select the seeds, run (or replay) the waves, then write final.jsonl, reserve.jsonl,
        the funnel and the dataset folder; returns the manifest."""
        from datagen.publish.stage import DatasetStage, PublishStage
        from datagen.run.quota_final import QuotaFinalStage
        from datagen.run.runner import Runner
        from datagen.seeds.stage import SeedsStage

        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            Runner(self.config, self.dir, executor=self.executor, engine_factory=self.engine_factory).run(
                [SeedsStage(self.config)]
            )
            self._load()
            for wave in self.waves:  # finished ones are skipped stage by stage; a cut one resumes
                self._run_wave(wave)
            plan = self.plan()
            while plan.stop is None:
                picked = self._pick(plan, len(self.waves) + 1)
                if not any(picked.values()):
                    log(
                        "quota: no prompts are left for the cells that need rows (the expansion found no new "
                        "ones); stopping"
                    )
                    plan.stop = "no_prompts"
                    break
                wave = Wave(len(self.waves) + 1, {c: [p.id for p in ps] for c, ps in picked.items() if ps})
                self._write_prompts(wave, picked)
                self.waves.append(wave)
                self._save(plan)
                log(
                    f"quota: wave {wave.n}: {sum(map(len, wave.prompts.values()))} dialogues over "
                    f"{len(wave.prompts)} cells (projected ${plan.cost:.4f})"
                )
                self._run_wave(wave)
                plan = self.plan()
            self._save(plan)
            (self.dir / STATUS_FILE).write_text(status_text(self, plan), encoding="utf-8")
            log(f"quota: stopped ({plan.stop}) after {len(self.waves)} waves")
            stages = [
                SeedsStage(self.config),
                QuotaFinalStage(self.config, self),
            ]  # seeds: done, its funnel row
            if self.config.dataset.enabled:
                stages.append(DatasetStage(self.config))
                if self.config.publish.repo_id:
                    stages.append(PublishStage(self.config))
            return Runner(
                self.config, self.dir, executor=self.executor, engine_factory=self.engine_factory
            ).run(stages)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.dir / ".quota.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DatagenError(
                    f"{self.dir} is in use by another datagen run; wait for it or pick another --out"
                ) from None
            yield

    # ------------------------------------------------------------------ measuring and planning
    def progress(self) -> tuple[dict[str, CellProgress], float, int]:
        """Each cell's figures over the recorded waves, and the run's spend (usd, tokens) from the
        journal. Costs the rows do not carry (expansion, failed dialogues) are spread over the cells
        in proportion, so a cell's cost per attempt is what an attempt really costs the run. A
        wave's accepted rows are counted after a reviewer's decisions (`review.jsonl`): a rejected
        row is missing from its cell, a rescued one counts (`self.review` says what they did)."""
        progress = {c: CellProgress() for c in self.quota.targets}
        review = self.review = WaveReview(self.dir)
        for wave in self.waves:
            owner = {pid: cell for cell, ids in wave.prompts.items() for pid in ids}
            for cell, ids in wave.prompts.items():
                progress.setdefault(cell, CellProgress()).attempted += len(ids)
            wdir = self.dir / wave.dir
            for name in ("filtered/kept.jsonl", "filtered/rejected.jsonl"):
                for conv in _rows(wdir / name):
                    cell = owner.get(row_prompt(conv))
                    if cell is not None:
                        progress[cell].cost += conv.usage.cost
                        progress[cell].tokens += conv.usage.prompt_tokens + conv.usage.completion_tokens
            for conv in review.rows(wdir):
                cell = owner.get(row_prompt(conv))
                if cell is not None:
                    progress[cell].accepted += 1
        usd, tokens = journal_spend(self.journal)
        for attr, spent in (("cost", usd), ("tokens", tokens)):
            rowed = sum(getattr(p, attr) for p in progress.values())
            if rowed > 0 and spent > rowed:
                for p in progress.values():
                    setattr(p, attr, type(spent)(getattr(p, attr) * spent / rowed))
        return progress, usd, tokens

    def plan(self) -> WavePlan:
        """The next wave, from the recorded ones."""
        progress, usd, tokens = self.progress()
        q = self.quota
        cost_hint, tokens_hint = attempt_hint(self.config)
        return plan_wave(
            q.targets,
            progress,
            budget=q.budget,
            spent_usd=usd,
            spent_tokens=tokens,
            wave=len(self.waves) + 1,
            policy=q.policy,
            cost_hint=cost_hint,
            tokens_hint=tokens_hint,
        )

    # ------------------------------------------------------------------ prompts
    def _pool(self) -> dict[str, list[Any]]:
        from datagen.seeds.record import read_seeds

        by_cell: dict[str, list[Any]] = {}
        sources = [self.dir / "seeds.jsonl", *sorted((self.dir / POOL_DIR).glob("*.jsonl"))]
        for i, path in enumerate(sources):
            if not path.exists() or path.name.endswith(".rejected.jsonl"):
                continue
            for p in read_seeds(path):
                kind = "plugin" if p.plugins else "hhh"
                dk = self.config.dialogues.get(kind)
                if i == 0 and dk is not None and not dk.include_seeds:
                    continue  # seeds that must not become dialogues still lead the expansion
                by_cell.setdefault(prompt_cell(p), []).append(p)
        return by_cell

    def _pick(self, plan: WavePlan, n: int) -> dict[str, list[Any]]:
        used = {pid for w in self.waves for ids in w.prompts.values() for pid in ids}
        pool = self._pool()
        short = {
            c: k - len([p for p in pool.get(c, []) if p.id not in used]) for c, k in plan.attempts.items()
        }
        short = {c: k for c, k in short.items() if k > 0}
        if short:
            self._grow_pool(short, n)
            pool = self._pool()
        return {c: [p for p in pool.get(c, []) if p.id not in used][:k] for c, k in plan.attempts.items()}

    def _grow_pool(self, short: dict[str, int], n: int) -> None:
        """Ask the Self-Instruct loop for the prompts the cells lack (one file per wave: a rerun
        reads it instead of asking again)."""
        from datagen.generate.config import ExpandConfig
        from datagen.generate.expand import expand
        from datagen.seeds.record import read_seeds

        out = self.dir / POOL_DIR / f"expand.w{n:03d}.jsonl"
        if out.exists():
            return
        examples = [
            p
            for path in (self.dir / "seeds.jsonl", *sorted((self.dir / POOL_DIR).glob("expand.w*.jsonl")))
            if path.exists() and not path.name.endswith(".rejected.jsonl")
            for p in read_seeds(path)
            if prompt_cell(p) in short
        ]
        if not examples:
            return
        targets: dict[str, int] = {"default": 0}
        for cell, k in short.items():
            category, language = cell.split("/")[:2]
            key = (
                f"{'default' if category == '-' else category}/{language}"
                if language != "-"
                else (category if category != "-" else "default")
            )
            targets[key] = max(targets.get(key, 0), k)
        base = self.config.expand or ExpandConfig()
        cfg = dataclasses.replace(base, targets=targets, seed=self.config.seed * 1000 + n)
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"quota: asking the Self-Instruct loop for prompts in {len(short)} cells")
        stats = expand(
            examples, cfg, self.config.teacher, out, self.journal, engine_factory=self.engine_factory
        )
        if stats.retryable_failed:
            out.unlink(missing_ok=True)
            raise DatagenError(
                f"quota: {stats.retryable_failed} expansion requests failed for reasons a rerun "
                "can fix; rerun the same command (finished calls are not paid again)"
            )

    def _write_prompts(self, wave: Wave, picked: dict[str, list[Any]]) -> None:
        path = self.dir / wave.dir / "prompts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(path, [p.to_dict() for ps in picked.values() for p in ps])

    # ------------------------------------------------------------------ one wave
    def wave_config(self, wave: Wave) -> Any:
        """The run config of one wave: its prompts as the seeds, every one a dialogue, no further
        expansion inside the wave, no dataset folder; the rest as the run's."""
        from datagen.run.config import DatasetSection, DialogueKind, PublishSection, SeedsSection

        cfg = self.config
        prompts = str((self.dir / wave.dir / "prompts.jsonl").resolve())
        raw = json.loads(json.dumps(cfg.raw, default=str))
        for key in ("targets", "budget", "quota", "publish"):
            raw.pop(key, None)
        raw["seeds"] = {"path": prompts}
        raw["expand"] = {**(raw.get("expand") or {}), "targets": {"default": 0}}
        raw["dataset"] = {"enabled": False}
        dialogues = {}
        for kind in ("hhh", "plugin"):
            dk = cfg.dialogues.get(kind) or DialogueKind()
            dialogues[kind] = dataclasses.replace(dk, include_seeds=True, max_dialogues=None)
            section = raw.setdefault("dialogues", {}).get(kind)
            section = dict(section) if isinstance(section, dict) else {}
            section.pop("max_dialogues", None)
            section["include_seeds"] = True
            raw["dialogues"][kind] = section
        return dataclasses.replace(
            cfg,
            seeds=SeedsSection(path=prompts),
            expand=dataclasses.replace(cfg.expand, targets={"default": 0}),
            dialogues=dialogues,
            dataset=DatasetSection(enabled=False),
            publish=PublishSection(),
            quota=None,
            raw=raw,
        )

    def _run_wave(self, wave: Wave) -> None:
        from datagen.filters.judge import run_defaults
        from datagen.run.pipeline import stages_for
        from datagen.run.runner import Runner

        cfg = self.wave_config(wave)
        wdir = self.dir / wave.dir
        runner = Runner(cfg, wdir, executor=self.executor, engine_factory=self.engine_factory)
        runner.journal = self.journal  # one journal for the whole run: its cache, ledger and spend
        with run_defaults(cfg.teacher, str(self.journal), self.engine_factory, progress=cfg.teacher.progress):
            runner.run(stages_for(cfg, wdir))


def _rows(path: Path) -> Iterator[Any]:
    return iter_conversations(path) if path.exists() else iter(())


def priced_models(config: Any) -> Iterator[tuple[str, Any, str]]:
    """(where its prices are set, the TeacherConfig that prices it, model) for every model a run's
    waves call: the teacher's, and each judge step's judge and second judge (on the run's teacher
    unless the step gives its own `teacher:`)."""
    from datagen.teacher.config import TeacherConfig

    yield "teacher.prices", config.teacher, config.teacher.model
    steps = config.filters.enabled_steps() if config.filters is not None else []
    for step in (s for s in steps if s.step_type == "judge"):
        where, params = f"filters.steps.{step.name}", step.params
        own = params.get("teacher")
        primary = TeacherConfig.from_dict(own) if isinstance(own, dict) else config.teacher
        at = f"{where}.teacher.prices" if isinstance(own, dict) else "teacher.prices"
        yield at, primary, params.get("model") or primary.model
        second = params.get("second")
        if not isinstance(second, dict):
            continue
        if isinstance(second.get("teacher"), dict):
            other = TeacherConfig.from_dict(second["teacher"])
            yield f"{where}.second.teacher.prices", other, second.get("model") or other.model
        elif second.get("model"):
            yield at, primary, second["model"]


def journal_spend(journal: Path) -> tuple[float, int]:
    """USD and tokens every call in the journal cost (all runs, paid retries included)."""
    if not journal.exists():
        return 0.0, 0
    from datagen.teacher.journal import Journal

    with Journal(journal) as j:
        st = j.stats()
    return float(st.cost), int(st.prompt_tokens + st.completion_tokens)


def attempt_hint(config: Any) -> tuple[float | None, float | None]:
    """A pessimistic cost and token count of one dialogue, for the pilot wave before anything is
    measured: the longest turn count of the config's kinds, each turn's calls (user, assistant;
    plan, answer for plugins) at their max_tokens plus a 1,000-token prompt, and four judge calls
    (two rubrics, each asked again once) of 2,000 + 1,500 tokens."""
    from datagen.generate.config import DialogueConfig, TurnDistribution

    worst = 0.0
    for kind in ("hhh", "plugin"):
        dk = config.dialogues.get(kind)
        options = dict(dk.options) if dk is not None else {}
        dc = DialogueConfig.from_dict(options, kind=kind)
        specs = dc.turns.values() if isinstance(dc.turns, dict) else [dc.turns]
        turns = max(max(TurnDistribution.parse(t).values) for t in specs)
        per_turn = (
            dc.user_max_tokens
            + dc.max_tokens
            + (dc.plan_max_tokens if kind == "plugin" else 0)
            + 1000 * (3 if kind == "plugin" else 2)
        )
        worst = max(worst, turns * per_turn + 4 * (2000 + 1500))
    teacher = config.teacher
    usd = teacher.price_of(teacher.model, int(worst * 0.8), int(worst * 0.2)) if teacher.prices else None
    return usd, worst


def status_text(run: QuotaRun, plan: WavePlan) -> str:
    """The quota part of `datagen status`: each cell, and the budget."""
    usd, tokens = journal_spend(run.journal)
    b = run.quota.budget
    spent = [
        f"${usd:.4f}" + (f" of ${b.usd:.4f}" if b.usd is not None else ""),
        f"{tokens:,} tokens" + (f" of {b.tokens:,}" if b.tokens is not None else ""),
    ]
    lines = [
        f"Quota: {len(run.waves)} waves; spent {', '.join(spent)}; "
        + (
            f"stopped: {plan.stop}"
            if plan.stop
            else f"next wave {plan.wave}: {plan.total} dialogues, projected ${plan.cost:.4f}"
        ),
        "",
        plan.table(),
    ]
    reviewed = run.review.summary() if run.review is not None else None
    if reviewed:
        lines.append(reviewed)
    return "\n".join(lines)


def quota_status(run_dir: Path) -> str | None:
    """`datagen status` for a run in waves, from its `quota.json` and files (None for another run)."""
    from types import SimpleNamespace

    from datagen.run.quota import Budget, QuotaPolicy, QuotaSection

    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    quota = QuotaSection(
        dict(data["targets"]), Budget(**data.get("budget") or {}), QuotaPolicy(**data.get("policy") or {})
    )
    run = QuotaRun.__new__(QuotaRun)
    run.config, run.quota, run.dir = SimpleNamespace(quota=quota), quota, Path(run_dir)
    run.journal, run.executor, run.engine_factory = run.dir / "journal.sqlite", None, None
    run._load()
    progress, usd, tokens = run.progress()
    plan = plan_wave(
        quota.targets,
        progress,
        budget=quota.budget,
        spent_usd=usd,
        spent_tokens=tokens,
        wave=len(run.waves) + 1,
        policy=quota.policy,
    )
    return status_text(run, plan)
