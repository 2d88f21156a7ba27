"""Preference data end to end, offline: the fake teacher with scripted answers and a tiny local MOSS.

    .venv/bin/python bench/preference.py              # about a minute on 2 cores
    .venv/bin/python bench/preference.py --keep DIR   # leave the run's files in DIR

1. `datagen preference` on ten kept dialogues (six plain chat, four calculator turns, two of whose
   tools failed) from a run config: candidates from the original answer, the teacher at two
   temperatures and the tiny model's own samples, contrastive answers on the plugin turns, the
   scripted judge in both orders.
2. TRL loads the exported pairs.jsonl as it is: `datasets.load_dataset("json", ...)` into
   `trl.DPOTrainer`, whose own preparation (chat template, tools, tokenisation) keeps every pair.
3. `datagen dpo` trains the tiny model a few steps on the pairs; the saved folder is loaded with
   plain `transformers` (AutoModelForCausalLM, AutoTokenizer) and generates.

Prints one line: `pairs=N tool_pairs=T trl_loads=true dpo_steps=S pref_accuracy=A` (the accuracy on
pairs of held-out dialogues; a tiny random model moves little in a few steps). Exits 1 when a step
fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.cli import main  # noqa: E402
from datagen.io import write_jsonl_atomic  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.preference.conftest import calc_dialogue, hhh_dialogue  # noqa: E402
from tests.preference.scripted import Script  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFIG = """\
teacher:
  base_url: {url}
  model: fake-teacher
  api_key_env: DATAGEN_BENCH_TEACHER_KEY
  max_attempts: 2
  min_backoff: 0.01
  max_backoff: 0.05
  progress: false
preference:
  sources:
    - original
    - kind: teacher
      temperatures: [0.3, 1.0]
    - kind: local
      name: tiny
      model: {model}
      temperatures: [1.0]
      max_tokens: 24
      device: cpu
  contrastive: [failed_as_success, ignore_results, wrong_command]
  judge: {{min_margin: 1.0}}
"""


def run(work: Path) -> str:
    import torch

    torch.set_num_threads(1)
    from tests.moss.conftest import build_tiny_moss, corpus, sample_records

    model = work / "tiny-moss"
    build_tiny_moss(model, corpus(sample_records(sorted((SHARED / "moss-samples").rglob("*.json")))))
    convs = [hhh_dialogue(i) for i in range(1, 7)] + [
        calc_dialogue(1),
        calc_dialogue(2),
        calc_dialogue(3, fail=True),
        calc_dialogue(4, fail=True),
    ]
    write_jsonl_atomic(work / "final.jsonl", convs)
    fake = FakeOpenAI().start()
    try:
        fake.set_responder(Script())
        (work / "run.yaml").write_text(CONFIG.format(url=fake.base_url, model=model), encoding="utf-8")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(
                [
                    "preference",
                    str(work / "final.jsonl"),
                    "--out",
                    str(work / "preference"),
                    "--config",
                    str(work / "run.yaml"),
                    "--no-progress",
                ]
            )
    finally:
        fake.stop()
    if rc != 0:
        raise SystemExit(f"datagen preference exited {rc}")
    stats = json.loads((work / "preference" / "stats.json").read_text(encoding="utf-8"))
    pairs = work / "preference" / "pairs.jsonl"

    from tests.preference.trl_check import trl_trainer

    trainer = trl_trainer(pairs, model, work / "trl")
    trl_loads = trainer.train_dataset.num_rows == stats["pairs"] and trainer.train().global_step == 1
    del trainer

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(
            [
                "dpo",
                str(pairs),
                "--model",
                str(model),
                "--out",
                str(work / "dpo"),
                "--max-steps",
                "4",
                "--val-fraction",
                "0.3",
                "--lr",
                "1e-3",
                "--beta",
                "0.1",
                "--no-gradient-checkpointing",
                "--no-progress",
            ]
        )
    if rc != 0:
        raise SystemExit(f"datagen dpo exited {rc}")
    metrics = json.loads((work / "dpo" / "metrics.json").read_text(encoding="utf-8"))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    net = AutoModelForCausalLM.from_pretrained(work / "dpo" / "model")
    tok = AutoTokenizer.from_pretrained(work / "dpo" / "model")
    ids = tok("<|Human|>: What is 2+2?<eoh>\n<|MOSS|>:", return_tensors="pt").input_ids
    generated = net.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    print(
        f"candidates: {', '.join(f'{k[11:]} {v}' for k, v in sorted(stats.items()) if k.startswith('candidates_'))}; "
        f"judged {stats['judged']}, dropped {stats['funnel_step']['reasons']}; dpo pairs train "
        f"{metrics['pairs_train']} val {metrics['pairs_val']}, loss {metrics['train_loss_first']:.4f} -> "
        f"{metrics['train_loss_last']:.4f}; reloaded {type(net).__name__}, generates: {generated}",
        file=sys.stderr,
    )
    if not (trl_loads and generated):
        raise SystemExit("TRL did not take the export as it is, or the saved model does not generate")
    acc = metrics["pref_accuracy"]
    return (
        f"pairs={stats['pairs']} tool_pairs={stats['tool_pairs']} trl_loads={str(trl_loads).lower()} "
        f"dpo_steps={metrics['steps']} pref_accuracy={'nan' if acc is None else f'{acc:.3f}'}"
    )


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="write the run's files here and keep them")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(run(args.keep))
        return 0
    with tempfile.TemporaryDirectory(prefix="datagen-pref-bench-") as tmp:
        print(run(Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
