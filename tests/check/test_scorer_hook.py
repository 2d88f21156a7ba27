"""`check_files(scorer=...)`: the caller's scorer scores the rows (this process loads no model),
its settings are what the sidecar records and checks, and the report, the split and the summary
are made from its scores as from the local model's."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import pytest

from datagen.check.files import check_files
from datagen.check.scoring import ScoreJob, ScoreSettings
from datagen.errors import InputError
from datagen.formats.moss import from_sft
from datagen.io import write_jsonl_atomic
from datagen.model.tokenize import TruncationStats
from datagen.record import Conversation
from tests.moss.conftest import sft_record

N = 8
UPSTREAM_300 = ScoreSettings(300, "upstream")


class RuleScorer:
    """Scores without a model: row `cN` gets loss N. Records what `check_files` asked of it."""

    def __init__(self, settings: ScoreSettings = UPSTREAM_300):
        self.settings = settings
        self.jobs: list[ScoreJob] = []
        self.scored: list[str] = []
        self.closed = 0

    def load(self, job: ScoreJob) -> ScoreSettings:
        self.jobs.append(job)
        return self.settings

    def score(self, rows: Iterable[Conversation], stats: TruncationStats) -> Iterator[Conversation]:
        for conv in rows:
            n = int(conv.id[1:])
            stats.dialogues += 1
            conv.scores.update(
                {
                    "moss_loss": float(n),
                    "moss_ppl": float(n + 1),
                    "moss_turn_losses": [float(n)],
                    "moss_tokens": 10 + n,
                    "moss_fits": True,
                    "moss_turns_scored": 1,
                }
            )
            self.scored.append(conv.id)
            yield conv

    def close(self) -> None:
        self.closed += 1


def write_rows(path, ids):
    convs = []
    for i in ids:
        conv = from_sft(sft_record(f"c{i}", [(f"Question {i}?", f"Answer {i}.")]))
        conv.id = f"c{i}"
        convs.append(conv)
    write_jsonl_atomic(path, convs)
    return path


@pytest.fixture
def model_dir(tmp_path):
    """A model folder with a config and no weights: loading it here would fail."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "moss", "n_positions": 512}))
    return folder


def test_the_given_scorer_scores_and_its_settings_are_recorded(tmp_path, model_dir):
    inp = write_rows(tmp_path / "in.jsonl", range(N))
    out = tmp_path / "out" / "scored.jsonl"
    scorer = RuleScorer()
    summary = check_files(
        [inp],
        out,
        model=str(model_dir),
        batch_size=3,
        max_length=300,
        percentile=75.0,
        progress=False,
        scorer=scorer,
    )
    assert scorer.jobs == [ScoreJob(str(model_dir), 300, 3, "auto")]
    assert scorer.scored == [f"c{i}" for i in range(N)] and scorer.closed == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["scores"]["moss_loss"]) for r in rows] == [(f"c{i}", float(i)) for i in range(N)]
    sidecar = json.loads(out.with_name("scored.jsonl.settings.json").read_text())
    assert sidecar == {"model": str(model_dir), "max_length": 300, "tokenization": "upstream"}
    assert summary["settings"] == sidecar
    assert summary["scored_now"] == N and summary["resumed"] == 0
    assert summary["truncation_this_run"]["dialogues"] == N
    # the cutoff is over the scorer's losses: the top quarter (c6, c7) is rejected
    rejected = [json.loads(line)["id"] for line in open(summary["rejected_path"])]
    kept = [json.loads(line)["id"] for line in open(summary["kept_path"])]
    assert sorted(rejected) == ["c6", "c7"] and kept == [f"c{i}" for i in range(6)]


def test_a_scorer_is_not_loaded_when_nothing_is_left_to_score(tmp_path, model_dir):
    inp = write_rows(tmp_path / "in.jsonl", range(N))
    out = tmp_path / "scored.jsonl"
    check_files([inp], out, model=str(model_dir), max_length=300, progress=False, scorer=RuleScorer())
    again = RuleScorer()
    summary = check_files([inp], out, model=str(model_dir), max_length=300, progress=False, scorer=again)
    assert again.jobs == [] and again.closed == 0
    assert summary["scored_now"] == 0 and summary["resumed"] == N


def test_a_scorer_with_other_settings_cannot_add_to_a_scored_file(tmp_path, model_dir):
    inp = write_rows(tmp_path / "in.jsonl", range(N))
    out = tmp_path / "scored.jsonl"
    check_files([inp], out, model=str(model_dir), max_length=300, progress=False, scorer=RuleScorer())
    write_rows(inp, range(N + 2))  # two new rows to score
    other = RuleScorer(ScoreSettings(300, "datagen"))
    with pytest.raises(InputError, match="tokenization 'upstream'"):
        check_files([inp], out, model=str(model_dir), max_length=300, progress=False, scorer=other)
    assert other.scored == [] and other.closed == 1  # refused before scoring, and closed
