"""Tiny MOSS checkpoints built on the spot: a 2-layer CodeGen saved in MOSS's folder layout, with a
byte-level BPE tokenizer trained on the sample dialogues and the end tags at deliberately scrambled
ids, so the tests run on a CPU in seconds and catch id shifts a real checkpoint would suffer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

END_TAGS = ("<eoh>", "<eot>", "<eoc>", "<eor>", "<eom>")
SHORT_META = "You are an AI assistant whose name is MOSS.\n"

# The test machine's cores are shared: one intra-op thread avoids oversubscription stalls that make
# tiny-model training 10x slower.
torch.set_num_threads(1)


def sample_records(moss_samples: list[Path]) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in moss_samples]


def build_tiny_moss(
    folder: Path,
    texts: list[str],
    *,
    vocab_size: int = 1200,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    n_positions: int = 2048,
    seed: int = 0,
) -> dict:
    """Write a MOSS-layout folder (config.json with model_type moss, vocab.json, merges.txt,
    added_tokens.json, remote-code tokenizer_config.json, pytorch_model.bin). Returns the added ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CodeGenConfig, CodeGenForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    n = len(vocab)
    vocab["<|endoftext|>"] = n  # like MOSS: the last id of the base vocabulary
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    # Insertion order differs from id order and there is a gap: registering these in file order
    # would hand out n+1, n+2, ... and silently break the checkpoint.
    added = {
        "<eoh>": n + 5,
        "<eot>": n + 2,
        "<eoc>": n + 4,
        "<eor>": n + 1,
        "<eom>": n + 3,
        "<|extra_0|>": n + 7,
    }
    (folder / "added_tokens.json").write_text(json.dumps(added))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "MossTokenizer",
                "add_bos_token": False,
                "auto_map": {"AutoTokenizer": ["tokenization_moss.MossTokenizer", None]},
            }
        )
    )
    vocab_rows = ((n + 8 + 63) // 64) * 64  # padded, like MOSS's 107008
    cfg = dict(
        vocab_size=vocab_rows,
        n_positions=n_positions,
        n_ctx=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=n_embd // n_head,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        use_cache=True,
        bos_token_id=n,
        eos_token_id=added["<eom>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = CodeGenForCausalLM(CodeGenConfig(**cfg))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    for i in range(n_layer):  # upstream checkpoints carry this buffer
        state[f"transformer.h.{i}.attn.causal_mask"] = torch.tril(torch.ones(8, 8, dtype=torch.bool))[
            None, None
        ]
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(
        json.dumps(
            {
                **cfg,
                "model_type": "moss",
                "architectures": ["MossForCausalLM"],
                "torch_dtype": "float32",
                "auto_map": {
                    "AutoConfig": "configuration_moss.MossConfig",
                    "AutoModelForCausalLM": "modeling_moss.MossForCausalLM",
                },
                "tokenizer_class": "GPT2Tokenizer",
                "transformers_version": "4.25.1",
            }
        )
    )
    return added


def sft_record(cid: str, turns: list[tuple[str, str]], *, meta: str = SHORT_META) -> dict:
    """A plain-chat SFT record with the `None` thoughts/commands/results triple on every turn."""
    chat = {}
    for i, (human, answer) in enumerate(turns, start=1):
        chat[f"turn_{i}"] = {
            "Human": f"<|Human|>: {human}<eoh>\n",
            "Inner Thoughts": "<|Inner Thoughts|>: None<eot>\n",
            "Commands": "<|Commands|>: None<eoc>\n",
            "Tool Responses": "<|Results|>: None<eor>\n",
            "MOSS": f"<|MOSS|>: {answer}<eom>\n",
        }
    return {"conversation_id": cid, "meta_instruction": meta, "num_turns": len(turns), "chat": chat}


def corpus(records: list[dict]) -> list[str]:
    texts = []
    for r in records:
        texts.append(r["meta_instruction"])
        for turn in r["chat"].values():
            texts.extend(turn.values())
    return texts


@pytest.fixture(scope="session")
def moss_records(moss_samples) -> list[dict]:
    return sample_records(moss_samples)


@pytest.fixture(scope="session")
def tiny_moss(tmp_path_factory, moss_records) -> Path:
    """A tiny MOSS-layout checkpoint (read-only: tests that write must copy it)."""
    folder = tmp_path_factory.mktemp("tiny-moss")
    build_tiny_moss(folder, corpus(moss_records))
    return folder
