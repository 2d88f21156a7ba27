"""`datagen preference` from a run config, and its errors naming the file, line and key."""

from __future__ import annotations

import json

from datagen.cli import main
from datagen.io import write_jsonl_atomic
from tests.preference.conftest import calc_dialogue, hhh_dialogue
from tests.preference.scripted import Script

CONFIG = """\
teacher:
  base_url: {url}
  model: fake-teacher
  api_key_env: DATAGEN_TEST_TEACHER_KEY
  max_attempts: 2
  min_backoff: 0.01
  max_backoff: 0.05
  progress: false
tools:
  calculator: {{}}
  solver: {{}}
preference:
  sources:
    - original
    - kind: {kind}
      temperatures: [0.3, 1.0]
  judge:
    min_margin: 2
"""


def _setup(tmp_path, fake, kind="teacher"):
    fake.set_responder(Script())
    (tmp_path / "run.yaml").write_text(CONFIG.format(url=fake.base_url, kind=kind), encoding="utf-8")
    write_jsonl_atomic(tmp_path / "final.jsonl", [hhh_dialogue(1), calc_dialogue(1)])
    return [
        "preference",
        str(tmp_path / "final.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(tmp_path / "run.yaml"),
        "--no-progress",
    ]


def test_preference_command_runs_a_config_and_resumes_from_its_journal(fake_openai, tmp_path, capsys):
    args = _setup(tmp_path, fake_openai)
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert f"pairs -> {tmp_path / 'out' / 'pairs.jsonl'}" in out
    assert "preference: " in err and " pairs (" in err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["pairs"] > 0 and stats["config"]["judge"]["min_margin"] == 2
    assert (tmp_path / "out" / "journal.sqlite").exists()
    paid = fake_openai.requests
    assert main(args) == 0 and fake_openai.requests == paid
    assert f"{paid} calls ({paid} from the journal)" in capsys.readouterr().err


def test_config_errors_name_file_line_and_key(fake_openai, tmp_path, capsys):
    args = _setup(tmp_path, fake_openai, kind="oracle")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"Error: {tmp_path / 'run.yaml'}:15: preference.sources[1].kind: must be one of" in err
    (tmp_path / "run.yaml").write_text(
        CONFIG.format(url=fake_openai.base_url, kind="teacher").replace("  model: fake", "  modle: fake"),
        encoding="utf-8",
    )
    assert main(args) == 1
    assert f"Error: {tmp_path / 'run.yaml'}:3: teacher.modle: unknown key" in capsys.readouterr().err
    assert fake_openai.requests == 0
