"""Reruns after a change: a changed config or seed file redoes the stages it affects (and only
those), without rows made under the old settings leaking into the new outputs; two runs never
share a run directory."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import yaml

from datagen.cli import main
from tests.generate.scripted_teacher import scripted_teacher


def _setup(tmp_path: Path, fake, seeds: list[tuple[str, str, str]]) -> tuple[Path, Path]:
    seed_file = tmp_path / "seeds.jsonl"
    seed_file.write_text(
        "".join(
            json.dumps(
                {"id": i, "text": t, "language": lang, "category": "writing", "plugins": []},
                ensure_ascii=False,
            )
            + "\n"
            for i, t, lang in seeds
        ),
        encoding="utf-8",
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "seeds": {"path": str(seed_file)},
                "teacher": {
                    "base_url": fake.base_url,
                    "model": fake.model,
                    "progress": False,
                    "concurrency": 4,
                },
                "expand": {"targets": {"default": 0}},
                "dialogues": {"hhh": {"options": {"turns": {"default": [2]}}}, "plugin": {"enabled": False}},
                "dataset": {"enabled": False},
            }
        ),
        encoding="utf-8",
    )
    return config, seed_file


def _final(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "final.jsonl").read_text(encoding="utf-8").splitlines()]


SEEDS = [
    ("en1", "Write a short story about a lighthouse keeper.", "en"),
    ("en2", "Write a limerick about a cat who loves jazz.", "en"),
    ("zh1", "写一首关于春天的小诗，要有花和雨。", "zh"),
    ("zh2", "帮我写一段介绍杭州西湖的文字，一百字左右。", "zh"),
]


def test_changed_settings_redo_the_stage_without_old_rows(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    config, _ = _setup(tmp_path, fake_openai, SEEDS)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert sorted(c["language"] for c in _final(out)) == ["en", "en", "zh", "zh"]
    assert all(len(c["turns"]) == 2 for c in _final(out))
    paid = fake_openai.requests

    # Fewer seeds and three turns: the old dialogues must not survive into the new outputs.
    assert (
        main(
            [
                "run",
                str(config),
                "--out",
                str(out),
                "--set",
                "seeds.languages=[en]",
                "--set",
                "dialogues.hhh.options.turns={default: [3]}",
            ]
        )
        == 0
    )
    final = _final(out)
    assert sorted(c["language"] for c in final) == ["en", "en"]
    assert all(len(c["turns"]) == 3 for c in final)
    # Calls whose messages did not change (at least each dialogue's first answer) came from the
    # journal: fewer than the 2 x 5 calls of two fresh 3-turn dialogues were paid.
    assert 0 < fake_openai.requests - paid < 2 * 5
    assert "starting it afresh" in capsys.readouterr().err


def test_an_edited_seed_file_is_noticed(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    config, seed_file = _setup(tmp_path, fake_openai, SEEDS[:2])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert len(_final(out)) == 2
    with open(seed_file, "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "id": "en3",
                    "text": "Write a haiku about autumn leaves falling.",
                    "language": "en",
                    "category": "writing",
                    "plugins": [],
                }
            )
            + "\n"
        )
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert sorted(c["id"] for c in _final(out)) == ["hhh-en1", "hhh-en2", "hhh-en3"]


def test_unchanged_rerun_pays_nothing_and_skips_every_stage(fake_openai, tmp_path, capsys):
    fake_openai.set_responder(scripted_teacher)
    config, _ = _setup(tmp_path, fake_openai, SEEDS[:2])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    paid = fake_openai.requests
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--set", "teacher.concurrency=16"]) == 0
    assert fake_openai.requests == paid
    err = capsys.readouterr().err
    assert "dialogues.hhh: done earlier, skipped" in err and "running" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher_calls"]["ok"] == paid  # the journal's ledger, not this session's counters


def test_two_runs_cannot_share_a_run_directory(fake_openai, tmp_path, capsys):
    config, _ = _setup(tmp_path, fake_openai, SEEDS[:1])
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["run", str(config), "--out", str(out)]) == 1
    assert "is in use by another datagen run" in capsys.readouterr().err
    assert fake_openai.requests == 0


@pytest.mark.parametrize("default", [None, "", "smollm2"])
def test_embedded_teacher_alias_names_the_model(tmp_path, default):
    import re
    import shutil

    from datagen.teacher.local_server import model_alias_for

    assert model_alias_for(default) == "smollm2-135m-instruct"
    # two different files with the same name (two quantisations, a re-download): two aliases, so
    # their answers never share journal keys; a copy of the same file keeps its alias
    name = "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    first, second, copy = tmp_path / "a" / name, tmp_path / "b" / name, tmp_path / "c" / name
    for path, body in ((first, b"GGUF" + b"\x01" * 5000), (second, b"GGUF" + b"\x02" * 5000)):
        path.parent.mkdir()
        path.write_bytes(body)
    copy.parent.mkdir()
    shutil.copy(first, copy)
    alias = model_alias_for(str(first))
    assert re.fullmatch(r"qwen2\.5-0\.5b-instruct-q4_k_m-[0-9a-f]{8}", alias)
    assert model_alias_for(str(second)) != alias and model_alias_for(str(copy)) == alias


def test_a_new_check_threshold_resplits_without_scoring_again(fake_openai, tmp_path, capsys):
    from datagen.formats.moss import build_meta_instruction
    from tests.moss.conftest import build_tiny_moss

    fake_openai.set_responder(scripted_teacher)
    model_dir = tmp_path / "tiny"
    build_tiny_moss(model_dir, [build_meta_instruction([], False)] + [t for _, t, _ in SEEDS] * 3)
    config, _ = _setup(tmp_path, fake_openai, SEEDS)
    out = tmp_path / "run"
    args = [
        "run",
        str(config),
        "--out",
        str(out),
        "--set",
        "check.enabled=true",
        "--set",
        f"check.model={model_dir}",
        "--set",
        "check.max_length=2048",
    ]
    assert main(args + ["--set", "check.percentile=90"]) == 0
    scored = (out / "checked" / "scored.jsonl").read_bytes()
    assert main(args + ["--set", "check.percentile=50"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["check"]["scored_now"] == 0  # nothing scored again
    assert (out / "checked" / "scored.jsonl").read_bytes() == scored
    assert manifest["stages"]["check"]["funnel_step"]["dropped"] == 2  # half of 4 above the median
    # A new model scores again from scratch.
    other = tmp_path / "tiny2"
    build_tiny_moss(other, [build_meta_instruction([], False)] + [t for _, t, _ in SEEDS] * 3, seed=1)
    assert (
        main(
            [
                "run",
                str(config),
                "--out",
                str(out),
                "--set",
                "check.enabled=true",
                "--set",
                f"check.model={other}",
                "--set",
                "check.max_length=2048",
                "--set",
                "check.percentile=50",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["check"]["scored_now"] == 4
