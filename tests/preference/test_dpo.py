"""`datagen dpo`: pairs tokenised with fine-tuning's rules (shared prompt, Results bodies masked in
the completion), a few DPO steps on a tiny MOSS on CPU, and a saved folder plain transformers loads."""

from __future__ import annotations

import json

import pytest

from datagen.cli import main
from datagen.errors import ConfigError
from datagen.finetune.dpo import DpoConfig, collator, source_id, tokenize_pair
from datagen.formats.moss import to_sft
from datagen.model.tokenize import tokenize_record
from datagen.preference.export import conversations_of


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tokenizer(folder, tokenization):
    from datagen.model.loading import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(str(folder)), tokenization=tokenization)[0]


def test_config_checks_its_fields():
    assert DpoConfig().learning_rate == 5e-7 and DpoConfig(lora=True).learning_rate == 5e-6
    for key, value in [
        ("beta", 0),
        ("batch_size", 0),
        ("val_fraction", 1.0),
        ("precision", "int4"),
        ("lora", "yes"),
    ]:
        with pytest.raises(ConfigError) as err:
            DpoConfig.from_dict({key: value})
        assert err.value.field == key
    with pytest.raises(ConfigError, match="unknown key"):
        DpoConfig.from_dict({"betta": 0.1})
    assert (
        source_id({"id": "plugin-calc-1#0:a>b", "datagen": {"source_id": "plugin-calc-1"}}) == "plugin-calc-1"
    )
    assert source_id({"id": "hhh-zh1#1"}) == "hhh-zh1"


@pytest.mark.parametrize("tokenization", ["upstream", "datagen"])
def test_pairs_tokenise_like_finetune_with_results_masked(pairs_dir, tiny_model, tokenization):
    tok = _tokenizer(tiny_model, tokenization)
    rows = {r["id"]: r for r in _lines(pairs_dir / "pairs.jsonl")}
    cmd = rows["plugin-calc-1#0:original>contrastive:wrong_command"]
    pair = tokenize_pair(cmd, tok, max_length=2048)
    for side, conv in zip(("chosen", "rejected"), conversations_of(cmd), strict=True):
        full = tokenize_record(to_sft(conv), tok, max_length=2048)
        ids, mask = getattr(pair, f"{side}_ids"), getattr(pair, f"{side}_mask")
        assert pair.prompt_ids + ids == full.input_ids  # the same tokens as fine-tuning
        assert mask == [int(m) for m in full.loss_mask[len(pair.prompt_ids) :]]
        off = [t for t, m in zip(ids, mask, strict=True) if not m]
        assert off and "=>" in tok.decode(off)  # what the tool said is never trained on
    assert tok.decode(pair.chosen_ids).lstrip().startswith("<|Commands|>")
    moss = {r["id"]: r for r in _lines(pairs_dir / "pairs.moss.jsonl")}[cmd["id"]]
    assert tokenize_pair(moss, tok, max_length=2048) == pair  # the MOSS text form trains the same
    answer = tokenize_pair(rows["hhh-1#0:original>teacher@1"], tok, max_length=2048)
    assert tok.decode(answer.chosen_ids).lstrip().startswith("<|MOSS|>:") and all(answer.chosen_mask)
    assert tokenize_pair(cmd, tok, max_length=len(pair.prompt_ids) + 3) == "too_long"
    same = {**rows["hhh-1#0:original>teacher@1"]}
    same["rejected"] = same["chosen"]
    assert tokenize_pair(same, tok, max_length=2048) == "same_sides"

    batch = collator(pad_id=0)([pair.to_dict(), answer.to_dict()])
    cm = batch["completion_mask"]
    n = len(pair.prompt_ids)
    assert cm[0, :n].sum() == 0 and cm[0, n : n + len(pair.chosen_ids)].tolist() == pair.chosen_mask
    assert (
        cm[2, n : n + len(pair.rejected_ids)].tolist() == pair.rejected_mask
    )  # rejected rows follow the chosen


@pytest.mark.slow
def test_dpo_command_trains_and_saves_a_folder_transformers_loads(pairs_dir, tiny_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "dpo"
    rc = main(
        [
            "dpo",
            str(pairs_dir / "pairs.jsonl"),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--val-fraction",
            "0.5",
            "--lr",
            "1e-3",
            "--no-gradient-checkpointing",
            "--no-progress",
        ]
    )
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["steps"] == 2 and metrics["pairs_train"] > 0 and metrics["pairs_val"] > 0
    assert 0.0 <= metrics["pref_accuracy"] <= 1.0 and metrics["left_out"] == {}
    assert metrics == json.loads((out / "metrics.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.eos_token == "<eom>" and model.generation_config.eos_token_id == tok.convert_tokens_to_ids(
        "<eom>"
    )
    ids = tok("<|Human|>: hi<eoh>\n<|MOSS|>:", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


@pytest.mark.slow
def test_dpo_with_lora_merges_into_a_plain_folder(pairs_dir, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from datagen.finetune.dpo import dpo, read_pairs

    metrics = dpo(
        read_pairs([pairs_dir / "pairs.jsonl"]),
        tiny_model,
        tmp_path / "lora",
        DpoConfig(lora=True, lora_r=4, max_steps=1, val_fraction=0.0, gradient_checkpointing=False),
        progress=False,
    )
    assert metrics["steps"] == 1 and metrics["pref_accuracy"] is None and metrics["lora"]
    assert not (tmp_path / "lora" / "model" / "adapter_config.json").exists()
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "model").config.model_type == "codegen"


def test_bad_pair_files_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"id": "a", "prompt": [], "chosen": [], "rejected": []}\n[1, 2]\n', encoding="utf-8")
    assert main(["dpo", str(bad), "--model", "x", "--out", str(tmp_path / "o")]) == 1
    assert f"Error: {bad}:2: a pair must be a JSON object" in capsys.readouterr().err
