"""`datagen run` with a `preference:` section: after `final` the preference stage makes pairs from
the kept dialogues (a contrastive pair on the calculator turns among them), the dataset folder waits
on it and carries them as its `preference` config, the funnel (which counts dialogues) gets no row
for them but the card describes them, a rerun asks the teacher nothing, and a run without the
section again leaves the earlier stages alone and publishes no pairs.

The scripted teacher answers generation as in the other pipeline tests, with a quality mark the
scripted judge reads (tests/preference/scripted.py): `[good]` on the dialogues' own answers,
`[ok]` on the teacher's candidates (sampled hotter), `[bad]` on every contrastive answer.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

from datagen.cli import main
from datagen.publish.card import split_card
from tests.fakes.openai_server import last_user_text
from tests.generate.scripted_teacher import role_of, scripted_teacher
from tests.preference.scripted import AS_IF_SUCCEEDED, IGNORE_RESULTS, JUDGE, Script

SEEDS = [
    ("en1", "Write a short poem about the sea at night.", "en", "writing", []),
    ("en2", "How do I reverse a list in Python without using reversed()?", "en", "code", []),
    ("zh1", "写一段关于秋天的散文，两百字左右。", "zh", "writing", []),
    ("calc1", "What is 23*47+12?", "en", "tool", ["calculator"]),
    ("calc2", "What is 1/0?", "en", "tool", ["calculator"]),
]
CANDIDATE_T = 1.2  # the teacher source's temperature; generation answers at 0.7
CONTRASTIVE_T = 0.2
PREFERENCE = {
    "sources": ["original", {"kind": "teacher", "temperatures": [CANDIDATE_T]}],
    "contrastive_temperature": CONTRASTIVE_T,
    "judge": {"min_margin": 1.0},
}
STAGES = ("seeds", "expand", "dialogues.hhh", "dialogues.plugin", "filter", "final")
_PREFIX = re.compile(r"^((?:MOSS|<\|MOSS\|>): )")


class Teacher:
    """Generation as `scripted_teacher`, marked by temperature; judge and contrastive prompts as
    the preference tests' `Script`."""

    def __init__(self) -> None:
        self.script = Script()

    def __call__(self, request: dict[str, Any]) -> Any:
        system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
        user = last_user_text(request)
        if JUDGE in system or AS_IF_SUCCEEDED in user or IGNORE_RESULTS in user:
            return self.script(request)
        reply = scripted_teacher(request)
        if role_of(request) in ("assistant", "answer"):
            t = request.get("temperature")
            mark = "[bad]" if t == CONTRASTIVE_T else "[ok]" if t == CANDIDATE_T else "[good]"
            reply = _PREFIX.sub(rf"\1{mark} ", reply)
        return reply


def _config(path: Path, seeds: Path, fake: Any, *, preference: bool) -> Path:
    data: dict[str, Any] = {
        "name": "pairs",
        "seeds": {"path": str(seeds)},
        "teacher": {
            "base_url": fake.base_url,
            "model": fake.model,
            "progress": False,
            "concurrency": 4,
            "max_attempts": 2,
            "min_backoff": 0.01,
            "max_backoff": 0.05,
        },
        "expand": {"targets": {"default": 0}},
        "dialogues": {
            "hhh": {"options": {"turns": {"default": [2]}}},
            "plugin": {"options": {"turns": {"default": [1]}, "plugins": ["calculator"]}},
        },
        "tools": {"calculator": {}},
        "dataset": {"enabled": True, "validation_fraction": 0.0},
        "publish": {"license": "cc-by-4.0"},
    }
    if preference:
        data["preference"] = PREFERENCE
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One run with the section, made once; yields (fake teacher, its responder, tmp folder, run dir)."""
    from tests.fakes.openai_server import FakeOpenAI

    tmp = tmp_path_factory.mktemp("run-preference")
    seeds = tmp / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps(
                {"id": i, "text": t, "language": lang, "category": c, "plugins": p}, ensure_ascii=False
            )
            + "\n"
            for i, t, lang, c, p in SEEDS
        ),
        encoding="utf-8",
    )
    fake = FakeOpenAI().start()
    teacher = Teacher()
    fake.set_responder(teacher)
    try:
        config = _config(tmp / "run.yaml", seeds, fake, preference=True)
        run = tmp / "run"
        assert main(["run", str(config), "--out", str(run), "--no-progress"]) == 0
        yield fake, teacher, tmp, run
    finally:
        fake.stop()


def test_the_run_makes_pairs_and_the_dataset_carries_them(first_run):
    fake, teacher, _, run = first_run
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    stages = list(manifest["stages"])
    assert stages.index("final") < stages.index("preference") < stages.index("dataset")
    pref = manifest["stages"]["preference"]
    assert pref["status"] == "done" and manifest["stages"]["dataset"]["status"] == "done"
    assert "judge" in teacher.script.roles and "failed_as_success" in teacher.script.roles

    final = {c["id"]: c for c in _jsonl(run / "final.jsonl")}
    assert {"plugin-calc1", "plugin-calc2"} <= set(final) and len(final) >= 4
    pairs = _jsonl(run / "preference" / "pairs.jsonl")
    assert pairs and pref["count"] == pref["pairs"] == len(pairs)
    assert {p["datagen"]["source_id"] for p in pairs} <= set(final)
    kinds = {
        p["datagen"].get("contrastive") for p in pairs if p["datagen"]["source_id"].startswith("plugin-")
    }
    assert {"failed_as_success", "ignore_results"} <= kinds, kinds  # contrastive tool pairs
    hhh = [p for p in pairs if p["datagen"]["source_id"].startswith("hhh-")]
    assert hhh and all(
        "[good]" in p["chosen"][-1]["content"] and "[ok]" in p["rejected"][-1]["content"] for p in hhh
    )

    folder = str(run / "dataset")
    ds = datasets.load_dataset(folder, "preference")
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in pairs)
    assert any(r["contrastive"] == "failed_as_success" for r in rows)
    default = datasets.load_dataset(folder, split="train")  # no config name: the dialogues, not pairs
    assert default[0]["id"].startswith("hhh-") and "chosen" not in default.column_names

    funnel = json.loads((run / "funnel.json").read_text(encoding="utf-8"))
    assert "preference" not in [s["step"] for s in funnel["steps"]]  # pairs are not dialogues
    meta, body = split_card((run / "dataset" / "README.md").read_text(encoding="utf-8"))
    assert "preference" in [c["config_name"] for c in meta["configs"]]
    assert "## Preference pairs" in body and "`failed_as_success`" in body
    funnel_table = body.split("| step | in | kept |", 1)[1].split("\n\n", 1)[0]
    assert "| near_dedup |" in funnel_table and "| preference |" not in funnel_table


def test_a_rerun_asks_nothing_and_skips_every_stage(first_run, tmp_path, capsys):
    fake, _, tmp, first = first_run
    run = Path(shutil.copytree(first, tmp_path / "run", copy_function=shutil.copy2))
    paid = fake.requests
    capsys.readouterr()
    assert main(["run", str(tmp / "run.yaml"), "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert fake.requests == paid
    for stage in (*STAGES, "preference", "dataset"):
        assert f"{stage}: done earlier, skipped" in err, stage
    assert (run / "preference" / "pairs.jsonl").read_bytes() == (
        first / "preference" / "pairs.jsonl"
    ).read_bytes()


def test_without_the_section_the_earlier_stages_stay_and_no_pairs_are_published(first_run, tmp_path, capsys):
    fake, _, tmp, first = first_run
    run = Path(shutil.copytree(first, tmp_path / "run", copy_function=shutil.copy2))
    config = _config(tmp_path / "plain.yaml", tmp / "seeds.jsonl", fake, preference=False)
    paid = fake.requests
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert fake.requests == paid
    for stage in STAGES:
        assert f"{stage}: done earlier, skipped" in err, stage
    assert "preference: " not in err and "dataset: running" in err
    # The pairs of the earlier run stay on disk, but a run that no longer asks for them does not
    # publish them (they would go stale as soon as final.jsonl changes).
    assert (run / "preference" / "pairs.jsonl").exists()
    assert not (run / "dataset" / "data" / "preference").exists()
    meta, body = split_card((run / "dataset" / "README.md").read_text(encoding="utf-8"))
    assert [c["config_name"] for c in meta["configs"]] == ["hhh", "plugin"]
    assert "## Preference pairs" not in body
    with pytest.raises(ValueError):
        datasets.load_dataset(str(run / "dataset"), "preference")


def test_the_example_config_documents_every_preference_field(tmp_path, monkeypatch):
    """configs/example.yaml loads with its `preference:` section, which names every field of
    PreferenceConfig, SourceConfig and JudgeConfig (a new field needs a line there)."""
    import dataclasses

    from datagen.preference.config import JudgeConfig, PreferenceConfig, SourceConfig
    from datagen.run.config import load_config

    example = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"
    monkeypatch.chdir(tmp_path)
    cfg = load_config(example)
    assert cfg.preference is not None and [s.label for s in cfg.preference.sources] == ["original", "teacher"]
    assert cfg.preference == PreferenceConfig()  # the example shows the defaults
    text = example.read_text(encoding="utf-8")
    section = text.split("\npreference:", 1)[1].split("\ndataset:", 1)[0]
    for cls in (PreferenceConfig, SourceConfig, JudgeConfig):
        for f in dataclasses.fields(cls):
            if f.name != "where":
                assert re.search(rf"\b{f.name}:", section), f"{cls.__name__}.{f.name}"
