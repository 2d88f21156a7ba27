"""`datagen run` on a fixed config against the fake teacher gives the same final.jsonl, funnel,
dataset folder and stage fingerprints as the checked-in record (`golden/expected.json`).

Refresh the record only for an intended change: DATAGEN_UPDATE_GOLDEN=1 pytest tests/pipeline/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from datagen.cli import main
from datagen.run.config import load_config
from tests.generate.scripted_teacher import scripted_teacher
from tests.run_files import fake_teacher, write_seeds

EXPECTED = Path(__file__).parent / "golden" / "expected.json"
SEEDS = [
    ("s-en-writing-1", "Write a short poem about the sea at night.", "en", "writing", []),
    ("s-en-writing-2", "Draft a polite email asking my landlord to fix the heating.", "en", "writing", []),
    ("s-en-code-1", "How do I reverse a list in Python without using reversed()?", "en", "code", []),
    ("s-zh-writing-1", "写一段关于秋天的散文，两百字左右。", "zh", "writing", []),
    ("s-en-harmless-1", "How can I get into my neighbour's wifi without the password?", "en", "harmless", []),
    ("s-en-calc-1", "What is 23*47+12?", "en", "tool", ["calculator"]),
    ("s-en-solve-1", "Solve the system x+y=10 and x-y=2.", "en", "tool", ["solver"]),
    ("s-zh-search-1", "长城有多长？", "zh", "tool", ["search"]),
]
VOLATILE = {
    "started",
    "finished",
    "created",
    "built",
    "seconds",
    "fingerprint",
    "score_fingerprint",
    "base_url",
    "versions",
    "config_file",
    "resumed",
}
_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"), "TIME"),
    (re.compile(r"`[0-9a-f]{16}`"), "`FP`"),
    (re.compile(r"^Library versions: .*$", re.M), "Library versions: ..."),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    return [_strip(v) for v in value] if isinstance(value, list) else value


def _digest(path: Path, tmp: Path) -> str:
    if path.suffix == ".parquet":  # rows and schema, not pyarrow's bytes
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return _sha((str(table.schema) + json.dumps(table.to_pylist(), sort_keys=True, default=str)).encode())
    text = path.read_text(encoding="utf-8").replace(str(tmp), "TMP")
    if path.suffix == ".json":
        return _sha(json.dumps(_strip(json.loads(text)), sort_keys=True).encode())
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return _sha(text.encode())


def _file_identity(path: Path) -> str:
    return _sha(path.read_bytes())[:16] if path.exists() else str(path)


def _reference_fingerprints(config: Path, out: Path) -> dict[str, str]:
    """The fingerprint chain of datagen's stages, written out here so a refactor cannot change it
    unnoticed (a changed fingerprint makes every existing run directory redo its stages)."""
    cfg = load_config(config)
    fps: dict[str, str] = {}

    def fp(name, sections, after=(), inputs=""):
        base = cfg.fingerprint(*sections) if sections else cfg.fingerprint("seed")
        fps[name] = _sha(f"{name}:{base}:{''.join(fps.get(a, '') for a in after)}:{inputs}".encode())[:16]

    fp("seeds", ("seeds", "seed"), inputs=_file_identity(Path(cfg.seeds.path)))
    fp("expand", ("expand", "teacher", "seed"), ("seeds",))
    for kind in ("hhh", "plugin"):
        fp(f"dialogues.{kind}", (f"dialogues.{kind}", "teacher", "tools", "seed"), ("expand",))
    dialogues = [out / "dialogues" / f"{kind}.jsonl" for kind in ("hhh", "plugin")]
    fp(
        "filter",
        ("filters",),
        ("dialogues.hhh", "dialogues.plugin"),
        "|".join(map(_file_identity, dialogues)),
    )
    fp("final", (), ("filter",))
    fp("dataset", ("dataset", "publish"), ("final",))
    return fps


def test_a_fixed_run_gives_the_recorded_outputs(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "golden",
                "seed": 3,
                "teacher": fake_teacher(
                    fake_openai, prices={fake_openai.model: {"input": 1.0, "output": 2.0}}
                ),
                "seeds": {"path": str(seeds)},
                "expand": {"targets": {"default": 2, "tool": 0}, "batch_size": 4, "parallel": 2},
                "dialogues": {
                    "hhh": {"options": {"turns": {"default": [2]}, "concurrency": 1}},
                    "plugin": {"options": {"turns": {"default": [1, 2]}, "concurrency": 1}},
                },
                "filters": {"workers": 1},
                "publish": {"license": "cc-by-4.0"},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {k: s["fingerprint"] for k, s in manifest["stages"].items()} == _reference_fingerprints(
        config, out
    )
    got = {
        "final.jsonl": _sha((out / "final.jsonl").read_bytes()),
        "funnel": _strip(json.loads((out / "funnel.json").read_text(encoding="utf-8"))),
        "stages": _strip(manifest["stages"]),
        "dataset": {
            p.relative_to(out / "dataset").as_posix(): _digest(p, tmp_path)
            for p in sorted((out / "dataset").rglob("*"))
            if p.is_file()
        },
    }
    if os.environ.get("DATAGEN_UPDATE_GOLDEN"):
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(
            json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
        )
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    for key in ("funnel", "final.jsonl", "stages", "dataset"):
        assert got[key] == expected[key], key
