"""Fine-tuning a tiny MOSS: config validation, SFT splits, loss going down, a loadable folder that
generates up to <eom>, LoRA, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from datagen.errors import ConfigError
from datagen.finetune.config import FinetuneConfig
from datagen.finetune.data import PadCollator, split_records
from datagen.finetune.train import finetune
from datagen.model.tokenize import tokenize_record
from datagen.splits import split_for
from tests.moss.conftest import SHORT_META, sft_record

QA = [
    ("Say hello.", "Hello!"),
    ("What is two plus two?", "Four!"),
    ("Name a colour.", "Blue!"),
    ("Count to three.", "One, two, three!"),
]


def _records(copies: int = 3) -> list[dict]:
    return [sft_record(f"{i}-{k}", [qa]) for k in range(copies) for i, qa in enumerate(QA)]


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError) as err:
        FinetuneConfig.from_dict({"lr": 1e-5, "learning_rate": 1e-5})
    assert err.value.field == "learning_rate" and "unknown key" in str(err.value)
    for key, value in [
        ("batch_size", 0),
        ("lr", -1.0),
        ("warmup_ratio", 1.5),
        ("precision", "int8"),
        ("max_steps", 2.5),
        ("grad_accum", True),
        ("attention", "flash"),
        ("packing", "yes"),
    ]:
        with pytest.raises(ConfigError) as err:
            FinetuneConfig.from_dict({key: value})
        assert err.value.field == key
    cfg = FinetuneConfig.from_dict({"lora": True, "epochs": 1})
    assert cfg.learning_rate == 2e-4 and FinetuneConfig().learning_rate == 1e-5
    assert cfg.replace(lr=None, epochs=3.0).epochs == 3.0 and cfg.replace(lr=None).lr is None


def _ids(records):
    return {r["conversation_id"] for r in records}


def test_split_is_the_published_datasets_split():
    records = [sft_record(f"c{i}", [(f"q{i}", f"a{i}")]) for i in range(200)]
    expected = {f"c{i}" for i in range(200) if split_for(f"c{i}", 0.1) == "validation"}
    assert 0 < len(expected) < 200
    train, val = split_records(records, val_fraction=0.1)
    assert _ids(val) == expected and _ids(train) == _ids(records) - expected
    _, val_reversed = split_records(list(reversed(records)), val_fraction=0.1)
    assert _ids(val_reversed) == expected  # by id, not by position or content
    # datagen's conversation ids (what publish hashes) win over the SFT records' own
    ids = [f"hhh-{i}" for i in range(200)]
    _, val_by_id = split_records(records, val_fraction=0.1, ids=ids)
    assert _ids(val_by_id) == {f"c{i}" for i in range(200) if split_for(ids[i], 0.1) == "validation"}
    assert split_records(records, val_fraction=0.0) == (records, [])


def test_val_max_evaluates_a_few_and_never_trains_on_the_rest():
    records = [sft_record(f"c{i}", [(f"q{i}", f"a{i}")]) for i in range(200)]
    held_out = {f"c{i}" for i in range(200) if split_for(f"c{i}", 0.2) == "validation"}
    train, val = split_records(records, val_fraction=0.2, val_max=3)
    assert len(val) == 3 and _ids(val) <= held_out
    assert not _ids(train) & held_out and len(train) == 200 - len(held_out)


def test_finetune_holds_out_by_datagen_id(tiny_moss, tmp_path):
    from datagen.formats.moss import from_sft

    convs = []
    for i, r in enumerate(_records(2)):
        conv = from_sft(r)
        conv.id, conv.extra["conversation_id"] = f"hhh-{i}", i  # to_sft writes the source's id, 0..7
        convs.append(conv)
    cfg = FinetuneConfig(max_steps=1, val_fraction=0.5, gradient_checkpointing=False, eval_before=False)
    finetune(convs, tiny_moss, tmp_path / "ft", cfg, progress=False)
    val = [json.loads(line) for line in (tmp_path / "ft" / "data" / "val.jsonl").read_text().splitlines()]
    assert {r["conversation_id"] for r in val} == {
        i for i, c in enumerate(convs) if split_for(c.id, 0.5) == "validation"
    }


def test_collator_pads_right_and_masks_padding():
    batch = PadCollator(pad_id=9)(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_finetune_drives_loss_down_and_saves_a_loadable_model(tiny_moss, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    added = json.loads((tiny_moss / "added_tokens.json").read_text())
    out = tmp_path / "ft"
    cfg = FinetuneConfig(
        lr=1e-2,
        max_steps=100,
        batch_size=4,
        val_fraction=0.2,
        log_steps=10,
        warmup_ratio=0.1,
        weight_decay=0.0,
        gradient_checkpointing=False,
    )
    metrics = finetune(None, tiny_moss, out, cfg, records=_records(), progress=False)

    # The split on disk is in MOSS SFT schema and tokenises like the input.
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (out / "data" / "val.jsonl").read_text().splitlines()]
    assert len(train) + len(val) == 12
    assert _ids(val) == {
        r["conversation_id"] for r in _records() if split_for(r["conversation_id"], 0.2) == "validation"
    }
    assert val  # this test needs a validation loss
    assert set(train[0]) >= {"conversation_id", "meta_instruction", "num_turns", "chat"}
    assert list(train[0]["chat"]["turn_1"]) == [
        "Human",
        "Inner Thoughts",
        "Commands",
        "Tool Responses",
        "MOSS",
    ]

    assert metrics["steps"] == 100
    assert metrics["train_loss_last"] < 0.3 * metrics["train_loss_first"]
    assert metrics["val_loss"] < metrics["val_loss_before"]
    assert 0 <= metrics["val_token_accuracy_before"] < metrics["val_token_accuracy"] <= 1
    assert metrics["truncation"]["train"]["turns_dropped"] == 0

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert type(model).__name__ == "CodeGenForCausalLM"
    assert tok.eos_token == "<eom>" and tok.eos_token_id == added["<eom>"]
    assert model.generation_config.eos_token_id == added["<eom>"]
    for content, idx in added.items():
        assert tok.convert_tokens_to_ids(content) == idx
    # a question every copy of which was trained on (none held out for validation)
    question, answer = next(qa for i, qa in enumerate(QA) if not _ids(val) & {f"{i}-{k}" for k in range(3)})
    prompt = (
        SHORT_META + f"<|Human|>: {question}<eoh>\n<|Inner Thoughts|>: None<eot>\n<|Commands|>: None<eoc>\n"
        "<|Results|>: None<eor>\n<|MOSS|>:"
    )
    enc = tok(prompt, return_tensors="pt")
    gen = model.generate(**enc, max_new_tokens=20, do_sample=False)[0, enc["input_ids"].shape[1] :]
    assert gen[-1].item() == added["<eom>"] and len(gen) < 20  # stopped at <eom>
    assert tok.decode(gen) == f" {answer}<eom>"

    # A rerun reuses the token cache.
    again = finetune(
        None,
        tiny_moss,
        tmp_path / "ft",
        FinetuneConfig(
            max_steps=1,
            val_fraction=0.2,
            lr=1e-2,
            weight_decay=0.0,
            gradient_checkpointing=False,
            eval_before=False,
        ),
        records=_records(),
        progress=False,
    )
    assert again["token_cache_hit"] == {"train": True, "val": True}


def test_assistant_only_is_what_gets_trained(tiny_moss, tmp_path):
    cfg = FinetuneConfig(max_steps=1, val_fraction=0.0, assistant_only=True, gradient_checkpointing=False)
    finetune(None, tiny_moss, tmp_path / "ft", cfg, records=_records(1), progress=False)
    import numpy as np

    from datagen.model.loading import load_tokenizer

    tok, _ = load_tokenizer(tiny_moss)
    with np.load(tmp_path / "ft" / "cache" / "train" / "tokens.npz") as z:
        mask = z["mask"][z["offsets"][0] : z["offsets"][1]]
    record = json.loads((tmp_path / "ft" / "data" / "train.jsonl").read_text().splitlines()[0])
    expected = tokenize_record(record, tok, max_length=2048, assistant_only=True)
    assert mask.tolist() == expected.loss_mask
    human = next(s for s in expected.segments if s.key == "Human")
    assert not mask[human.start : human.end].any()


def test_lora_trains_and_merges_into_a_plain_folder(tiny_moss, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    cfg = FinetuneConfig(
        lora=True,
        lora_r=4,
        lr=5e-3,
        max_steps=15,
        batch_size=4,
        val_fraction=0.2,
        gradient_checkpointing=True,
        log_steps=5,
    )
    metrics = finetune(None, tiny_moss, out, cfg, records=_records(), progress=False)
    assert metrics["lora"] and metrics["train_loss_last"] < metrics["train_loss_first"]
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    base = torch.load(tiny_moss / "pytorch_model.bin", weights_only=True)
    qkv = merged.transformer.h[0].attn.qkv_proj.weight
    assert not torch.allclose(qkv, base["transformer.h.0.attn.qkv_proj.weight"])  # adapters were merged
    assert torch.equal(merged.lm_head.weight, base["lm_head.weight"])  # frozen outside the adapters
    assert not (out / "model" / "adapter_config.json").exists()


def test_cli_reads_the_config_section_and_flags_win(tiny_moss, tmp_path, capsys):
    from datagen.cli import main
    from datagen.formats.moss import from_sft
    from datagen.io import write_jsonl_atomic

    inp = tmp_path / "in.jsonl"
    write_jsonl_atomic(inp, [from_sft(r) for r in _records(1)])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "finetune:\n  max_steps: 50\n  lr: 0.005\n  val_fraction: 0.4\n  gradient_checkpointing: false\n"
    )
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                str(inp),
                "--model",
                str(tiny_moss),
                "--out",
                str(out),
                "--config",
                str(cfg),
                "--max-steps",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["steps"] == 2
    assert metrics["val_dialogues"] == sum(
        split_for(r["conversation_id"], 0.4) == "validation" for r in _records(1)
    )
    assert json.loads((out / "config.json").read_text())["lr"] == 0.005
    assert (out / "model" / "config.json").is_file()

    # --no-packing and --attention reach the run
    assert (
        main(
            [
                "finetune",
                str(inp),
                "--model",
                str(tiny_moss),
                "--out",
                str(tmp_path / "padded"),
                "--config",
                str(cfg),
                "--max-steps",
                "1",
                "--no-packing",
                "--attention",
                "eager",
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert (
        metrics["packing"] is False
        and metrics["packing_efficiency"] is None
        and metrics["attention"] == "eager"
    )
    assert metrics["train_examples"] == metrics["train_dialogues"]

    cfg.write_text("finetune:\n  learning_rate: 0.1\n")
    assert (
        main(["finetune", str(inp), "--model", str(tiny_moss), "--out", str(out), "--config", str(cfg)]) == 1
    )
    err = capsys.readouterr().err
    assert "finetune.learning_rate" in err and "unknown key" in err and str(cfg) in err
