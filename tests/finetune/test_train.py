"""`finetune` with packing (the default): trains a tiny MOSS, saves a folder plain transformers loads,
and evaluates exactly as padded batches do."""

from __future__ import annotations

import json

import pytest
import torch

from datagen.finetune.config import FinetuneConfig
from datagen.finetune.train import finetune
from tests.finetune.conftest import qa_records


def test_packed_finetune_trains_and_saves_a_plain_folder(tiny_moss, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ft"
    cfg = FinetuneConfig(
        lr=1e-2,
        max_steps=8,
        batch_size=2,
        max_length=128,
        val_fraction=0.0,
        log_steps=1,
        weight_decay=0.0,
        warmup_ratio=0.0,
        gradient_checkpointing=False,
    )
    metrics = finetune(None, tiny_moss, out, cfg, records=qa_records(4), progress=False)
    assert metrics["packing"] is True and metrics["attention"] == "sdpa" and metrics["world_size"] == 1
    assert (
        metrics["train_dialogues"] == 16 and metrics["train_examples"] == 8
    )  # two 45-55 token dialogues a row
    assert metrics["packing_efficiency"] == pytest.approx(metrics["train_tokens"] / (8 * 128), abs=1e-4)
    assert metrics["steps"] == 8 and metrics["train_loss_last"] < 0.8 * metrics["train_loss_first"]

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert type(model).__name__ == "CodeGenForCausalLM"
    assert "auto_map" not in json.loads((out / "model" / "config.json").read_text())  # no remote code
    ids = tok("<|Human|>: Say hello.<eoh>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_packed_and_padded_batches_give_the_same_validation_loss(tiny_moss, tmp_path):
    losses = {}
    for packing in (True, False):
        cfg = FinetuneConfig(
            max_steps=1,
            batch_size=4,
            max_length=256,
            val_fraction=0.5,
            packing=packing,
            attention="eager",
            gradient_checkpointing=False,
            cache=False,
        )
        metrics = finetune(
            None, tiny_moss, tmp_path / str(packing), cfg, records=qa_records(3), progress=False
        )
        assert metrics["packing"] is packing and metrics["attention"] == "eager"
        losses[packing] = (metrics["val_loss_before"], metrics["val_token_accuracy_before"])
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert losses[True][1] == losses[False][1]
