"""`datagen finetune` under `torchrun --nproc_per_node 2` on CPU (gloo): the same loss curve as one
process at the same global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.finetune.conftest import qa_records

REPO = Path(__file__).resolve().parents[2]
#: Relative tolerance on each logged loss and gradient norm. Two processes sum their halves of the
#: gradient through gloo instead of one process summing the whole batch: fp32 rounding, measured
#: at ~1e-7 relative over these steps.
RTOL = 1e-5


def _curve(out: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_follow_the_loss_curve_of_one(tiny_moss, tmp_path, capsys):
    from datagen.cli import main
    from datagen.formats.moss import from_sft
    from datagen.io import write_jsonl_atomic

    inp = tmp_path / "in.jsonl"
    write_jsonl_atomic(inp, [from_sft(r) for r in qa_records(8)])  # 32 dialogues, 16 packed rows of 128
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(
        "finetune:\n  max_steps: 4\n  lr: 0.005\n  warmup_ratio: 0\n  val_fraction: 0\n  log_steps: 1\n"
        "  max_length: 128\n  gradient_checkpointing: false\n  eval_before: false\n  seed: 3\n"
    )
    common = [
        "finetune",
        str(inp),
        "--model",
        str(tiny_moss),
        "--config",
        str(cfg),
        "--device",
        "cpu",
        "--no-progress",
    ]

    # global batch 4 = 2 processes x 1 row x 2 accumulated micro-batches
    two = tmp_path / "two"
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "datagen",
            *common,
            "--out",
            str(two),
            "--batch-size",
            "1",
            "--grad-accum",
            "2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # global batch 4 = 1 process x 4 rows
    one = tmp_path / "one"
    assert main([*common, "--out", str(one), "--batch-size", "4"]) == 0
    capsys.readouterr()

    curve_two, curve_one = _curve(two), _curve(one)
    assert [s for s, _, _ in curve_two] == [1, 2, 3, 4] == [s for s, _, _ in curve_one]
    for (_, loss2, norm2), (_, loss1, norm1) in zip(curve_two, curve_one, strict=True):
        assert loss2 == pytest.approx(loss1, rel=RTOL) and norm2 == pytest.approx(norm1, rel=RTOL)
    assert curve_one[-1][1] < curve_one[0][1]  # it trained

    metrics = json.loads(done.stdout)  # one report: rank 1 prints nothing
    assert metrics["world_size"] == 2 and metrics["steps"] == 4 and metrics["packing"] is True
    assert done.stderr.count("model -> ") == 1
    assert json.loads((one / "metrics.json").read_text())["world_size"] == 1
    assert (two / "model" / "model.safetensors").is_file() and (two / "data" / "train.jsonl").is_file()
