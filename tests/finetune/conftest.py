"""Fixtures for the fine-tuning tests: the tiny MOSS checkpoint and records of tests/moss, and a tiny
random CodeGen for kernel comparisons."""

from __future__ import annotations

import pytest
import torch

from tests.moss.conftest import moss_records, tiny_moss  # noqa: F401  (fixtures, re-exported)

QA = [
    ("Say hello.", "Hello!"),
    ("What is two plus two?", "Four!"),
    ("Name a colour.", "Blue!"),
    ("Count to three.", "One, two, three!"),
]


def qa_records(copies: int = 3) -> list[dict]:
    """Short one-turn dialogues (45-55 tokens with the tiny tokenizer), `copies` of each question."""
    from tests.moss.conftest import sft_record

    return [sft_record(f"{i}-{k}", [qa]) for k in range(copies) for i, qa in enumerate(QA)]


@pytest.fixture
def tiny_codegen():
    """A random 2-layer CodeGen in fp32 whose rotary embedding covers half of each head (as MOSS's
    does), in eval mode, without a KV cache."""
    from transformers import CodeGenConfig, CodeGenForCausalLM

    torch.manual_seed(0)
    config = CodeGenConfig(
        vocab_size=96,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        rotary_dim=8,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return CodeGenForCausalLM(config).eval()
