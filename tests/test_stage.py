"""The Stage contract (`datagen.stage`), the runner around it (`datagen.run.runner`) and the
executors: counters that add across shards, funnel rows that keep their shape, and a runner that
skips, cleans, resumes and stops the way `datagen run` always has, whatever executor runs a stage."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from datagen.errors import DatagenError
from datagen.run.executors import LocalExecutor, read_shard_stats, write_shard_stats
from datagen.run.runner import Runner
from datagen.stage import Filter, Stage, StageContext, StageStats, Verdict, stage_fingerprint

# ----------------------------------------------------------------------------------- StageStats


def test_shards_add_and_keep_zero_counts():
    a = StageStats(
        "seeds",
        10,
        7,
        3,
        reasons=Counter({"language_not_selected": 3, "balanced_sample": 0}),
        counts=Counter(requests=2),
        calls=2,
        cost=0.5,
    )
    b = StageStats(
        "seeds", 4, 4, 0, reasons=Counter({"balanced_sample": 0}), calls=1, cached_calls=1, cost=0.25
    )
    total = sum([a, b])
    assert (total.in_, total.kept, total.dropped, total.calls, total.cached_calls) == (14, 11, 3, 3, 1)
    assert total.cost == pytest.approx(0.75)
    # Counter.__add__ would drop the zero: today's funnel shows `balanced_sample: 0`.
    assert dict(total.reasons) == {"language_not_selected": 3, "balanced_sample": 0}
    assert total.funnel_row()["reasons"] == {"language_not_selected": 3, "balanced_sample": 0}
    with pytest.raises(ValueError, match="cannot add stats of 'expand' to 'seeds'"):
        a + StageStats("expand")


def test_a_shard_file_round_trips_and_sums():
    st = StageStats(
        "dialogues.hhh",
        5,
        3,
        2,
        reasons=Counter(length=2),
        counts=Counter(made=3, failed_length=2),
        examples={"length": "cut at 512 tokens"},
        retryable_failed=1,
        seconds=1.5,
    )
    back = StageStats.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st
    assert sum([back, back]).counts == Counter(made=6, failed_length=4)


@pytest.mark.parametrize(
    "row",
    [
        # a stage row: reasons in insertion order, zero counts kept
        {
            "step": "seeds",
            "in": 13,
            "kept": 8,
            "dropped": 5,
            "tagged": 0,
            "reasons": {"language_not_selected": 5, "category_not_selected": 0, "balanced_sample": 0},
        },
        # a filter row: redacted and seconds, reasons largest first
        {
            "step": "quality",
            "in": 20,
            "kept": 17,
            "dropped": 3,
            "tagged": 1,
            "redacted": 0,
            "reasons": {"too_short": 2, "boilerplate": 1},
            "seconds": 0.012,
        },
        # the check row with `unscored`, and the review row with its own counters after the reasons
        {
            "step": "moss_check",
            "in": 9,
            "kept": 8,
            "dropped": 1,
            "tagged": 0,
            "reasons": {"loss_above": 1},
            "unscored": 3,
        },
        {
            "step": "review",
            "in": 8,
            "kept": 8,
            "dropped": 1,
            "tagged": 1,
            "reasons": {"reviewer": 1},
            "accepted": 1,
            "rescued": 1,
            "edited": 1,
            "flagged": 0,
        },
    ],
)
def test_funnel_rows_round_trip_byte_for_byte(row):
    st = StageStats.from_funnel_row(row)
    assert json.dumps(st.funnel_row()) == json.dumps(row)


def test_info_is_the_shape_stats_files_and_the_manifest_hold():
    st = StageStats("expand", counts=Counter(count=2, candidates=3, rejected_near_dup=1))
    st.fail("length", "the reply was cut")
    st.add_result(SimpleNamespace(cached=False, cost=0.1, prompt_tokens=5, completion_tokens=7))
    assert list(st.info()) == [
        "stage",
        "candidates",
        "count",
        "failed_length",
        "rejected_near_dup",
        "retryable_failed",
        "retry_next_run",
        "failure_examples",
        "calls",
        "cached_calls",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "paid_cost",
    ]
    assert st.by_prefix("rejected_") == {"near_dup": 1}
    assert st.info()["failure_examples"] == {"length": "the reply was cut"}


def test_a_filter_is_a_predicate_with_drop_reasons():
    class Short(Filter):
        name = "short"

        def filter(self, row):
            return True if len(row) > 2 else (False, "too_short", len(row))

    rejected = []
    step = Short()
    kept = list(
        step(["a", "abc", "", "abcd"], on_reject=lambda row, v: rejected.append((row, v.reason, v.evidence)))
    )
    assert kept == ["abc", "abcd"]
    assert rejected == [("a", "too_short", 1), ("", "too_short", 0)]
    row = step.stats.funnel_row()
    assert (row["in"], row["kept"], row["dropped"], row["reasons"]) == (4, 2, 2, {"too_short": 2})
    assert Verdict.of(True).keep and Verdict.of((False, "x")).reason == "x"


def test_a_shard_writes_its_own_file():
    ctx = StageContext(run_dir=Path("run"), config=None, stats=StageStats("x"))
    assert ctx.shard_path(Path("d/hhh.jsonl")) == Path("d/hhh.jsonl")
    assert dataclasses.replace(ctx, rank=3, world_size=4).shard_path(Path("d/hhh.jsonl")) == Path(
        "d/hhh.00003.jsonl"
    )


# ----------------------------------------------------------------------------------- the runner


@dataclasses.dataclass
class FakeConfig:
    """Just what the runner reads of a RunConfig."""

    sections: dict
    name: str = "fake"
    source: str = "fake.yaml"
    teacher: SimpleNamespace = dataclasses.field(default_factory=lambda: SimpleNamespace(progress=False))

    @property
    def raw(self):
        return self.sections

    def fingerprint(self, *names):
        picked = {n: self.sections.get(n) for n in names} if names else self.sections
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


class Numbers(Stage):
    """Writes `count` numbers, one per line, appending (so stale rows would leak without `fresh`)."""

    name = "numbers"
    sections = ("numbers",)

    def outputs(self, ctx):
        return {"main": ctx.run_dir / "numbers" / "out.jsonl"}

    def fresh(self, ctx, previous):
        return [self.outputs(ctx)["main"].parent]

    def run(self, rows, ctx):
        out = self.outputs(ctx)["main"]
        out.parent.mkdir(exist_ok=True)
        n = self.run_config.sections["numbers"]["count"]
        with open(out, "a", encoding="utf-8") as fh:
            for i in range(ctx.rank, n, ctx.world_size):
                fh.write(f"{i}\n")
                ctx.stats.in_ += 1
                ctx.stats.kept += 1
                yield i
        ctx.info.update(
            {"count": n, "in": n, "retryable_failed": self.run_config.sections["numbers"].get("fail", 0)}
        )

    def funnel(self, info, ctx):
        return [StageStats(self.name, info["in"], info["count"])]


class Evens(Stage):
    """Keeps the even numbers of the stage before it."""

    name = "evens"
    after = ("numbers",)

    def outputs(self, ctx):
        return {"main": ctx.run_dir / "evens.jsonl"}

    def read(self, ctx):
        return [int(x) for x in ctx.output("numbers").read_text().split()]

    def run(self, rows, ctx):
        rows = list(rows)
        kept = [x for x in rows if x % 2 == 0]
        self.outputs(ctx)["main"].write_text("".join(f"{x}\n" for x in kept))
        ctx.info.update({"count": len(kept), "in": len(rows)})
        yield from kept

    def funnel(self, info, ctx):
        return [
            StageStats(
                self.name,
                info["in"],
                info["count"],
                info["in"] - info["count"],
                reasons=Counter(odd=info["in"] - info["count"]),
            )
        ]


def _run(tmp_path, count=4, fail=0, executor=None):
    cfg = FakeConfig({"numbers": {"count": count, "fail": fail}})
    runner = Runner(cfg, tmp_path / "run", executor=executor)
    data = runner.run([Numbers(cfg), Evens(cfg)])
    return runner, data


def test_a_rerun_skips_done_stages_and_keeps_the_funnel(tmp_path, capsys):
    runner, data = _run(tmp_path)
    err = capsys.readouterr().err
    assert "numbers: running" in err and "evens: running" in err
    assert data["stages"]["evens"]["count"] == 2 and data["cost"] == 0.0 and "finished" in data
    # The chain: evens' fingerprint covers the one of the stage it reads.
    numbers_fp = data["stages"]["numbers"]["fingerprint"]
    assert data["stages"]["evens"]["fingerprint"] == stage_fingerprint(
        "evens", runner.config.fingerprint("seed"), numbers_fp
    )
    first = runner.funnel.to_dict()

    again, data2 = _run(tmp_path)
    err = capsys.readouterr().err
    assert (
        "numbers: done earlier, skipped" in err
        and "evens: done earlier, skipped" in err
        and "running" not in err
    )
    assert again.results["evens"].skipped
    assert (
        again.funnel.to_dict()
        == first
        == {
            "input": 4,
            "kept": 2,
            "steps": [
                {"step": "numbers", "in": 4, "kept": 4, "dropped": 0, "tagged": 0, "reasons": {}},
                {"step": "evens", "in": 4, "kept": 2, "dropped": 2, "tagged": 0, "reasons": {"odd": 2}},
            ],
        }
    )


def test_a_changed_section_starts_the_stage_afresh(tmp_path, capsys):
    _run(tmp_path, count=4)
    capsys.readouterr()
    _, data = _run(tmp_path, count=6)
    err = capsys.readouterr().err
    assert "numbers: settings or inputs changed, starting it afresh" in err
    # The appended file holds only the new run's rows: the old ones were removed first.
    assert (tmp_path / "run" / "numbers" / "out.jsonl").read_text().split() == [str(i) for i in range(6)]
    assert data["stages"]["evens"]["count"] == 3


def test_retryable_failures_leave_the_stage_incomplete(tmp_path, capsys):
    with pytest.raises(
        DatagenError, match=r"numbers: 2 teacher calls failed \(2 retryable\); rerun the same"
    ):
        _run(tmp_path, fail=2)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["numbers"]["status"] == "incomplete" and "evens" not in manifest["stages"]
    capsys.readouterr()
    with pytest.raises(DatagenError):  # the same command re-enters it, keeping what it made
        _run(tmp_path, fail=2)
    assert "numbers: resuming" in capsys.readouterr().err
    _run(tmp_path, fail=0)  # the same settings but one: a new fingerprint, so it runs afresh
    assert "numbers: settings or inputs changed" in capsys.readouterr().err


def test_the_lock_keeps_a_second_run_out(tmp_path):
    import fcntl

    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DatagenError, match="is in use by another datagen run"):
            _run(tmp_path)


class TwoShards:
    """An executor that runs a shardable stage as two ranks, as a Ray executor would: each rank
    writes its own files and counters, the driver sums and merges them. The stage is not touched."""

    name = "two-shards"

    def __init__(self):
        self.seen: list[tuple[str, int, int]] = []

    def run(self, stage, ctx):
        if not stage.shardable:
            return LocalExecutor().run(stage, ctx)
        for rank in range(2):
            shard = dataclasses.replace(ctx, rank=rank, world_size=2, stats=StageStats(stage.name), info={})
            self.seen.append((stage.name, shard.rank, shard.world_size))
            for _ in stage.run(stage.read(shard), shard):
                pass
            write_shard_stats(shard, stage.name)
        ctx.stats = read_shard_stats(ctx.run_dir, stage.name, 2)
        stage.merge_shards(ctx, 2)
        stage.record(ctx)
        return ctx.info


class ShardedNumbers(Numbers):
    """`Numbers` as a stage that writes its shard's file and says what it made from its counters."""

    shardable = True

    def outputs(self, ctx):
        return {"main": ctx.run_dir / "numbers" / "out.jsonl"}

    def run(self, rows, ctx):
        out = ctx.shard_path(self.outputs(ctx)["main"])
        out.parent.mkdir(exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            for i in range(ctx.rank, self.run_config.sections["numbers"]["count"], ctx.world_size):
                fh.write(f"{i}\n")
                ctx.stats.in_ += 1
                ctx.stats.kept += 1
                yield i
        self.record(ctx)

    def record(self, ctx):
        ctx.info.update({"count": ctx.stats.kept, "in": ctx.stats.in_})


def test_another_executor_runs_the_same_stages(tmp_path):
    cfg = FakeConfig({"numbers": {"count": 5}})
    executor = TwoShards()
    runner = Runner(cfg, tmp_path / "run", executor=executor)
    runner.run([ShardedNumbers(cfg), Evens(cfg)])
    assert executor.seen == [("numbers", 0, 2), ("numbers", 1, 2)]
    run = tmp_path / "run"
    assert (run / "numbers" / "out.00001.jsonl").read_text().split() == ["1", "3"]
    # The shards merged in rank order; the counters summed from each rank's file.
    assert (run / "numbers" / "out.jsonl").read_text().split() == ["0", "2", "4", "1", "3"]
    assert runner.results["numbers"].info["count"] == 5 and runner.results["evens"].info["count"] == 3
    assert json.loads((run / "stats" / "numbers" / "00000.json").read_text())["kept"] == 3


def test_a_batch_engine_stands_in_for_the_teacher_engine(fake_openai, tmp_path):
    """`engine_factory` is called as `TeacherEngine` would be (a batch-API engine plugs in there)."""
    from datagen.generate.config import ExpandConfig
    from datagen.generate.expand import expand
    from datagen.teacher.engine import TeacherEngine
    from tests.fakes.openai_fixtures import make_teacher_config_for
    from tests.generate.scripted_teacher import scripted_teacher

    fake_openai.set_responder(scripted_teacher)
    calls = []

    def factory(teacher, **kwargs):
        calls.append((teacher.model, sorted(kwargs)))
        return TeacherEngine(teacher, **kwargs)

    seeds = [
        {
            "id": "en-1",
            "text": "What are good habits for learning a new language?",
            "language": "en",
            "category": "advice",
        }
    ]
    stats = expand(
        seeds,
        ExpandConfig(targets={"default": 2}, batch_size=4),
        make_teacher_config_for(fake_openai),
        tmp_path / "p.jsonl",
        tmp_path / "j.sqlite",
        engine_factory=factory,
    )
    assert calls == [(fake_openai.model, ["desc", "journal_path", "progress"])]
    assert stats.counts["count"] == 2
