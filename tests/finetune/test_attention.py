"""The SDPA path for MOSS/CodeGen: the same logits as the eager reference (fp32, within 1e-5) with
padding, with packed sequences and through `load_model`, and the kernel really switches."""

from __future__ import annotations

import pytest
import torch

from datagen.errors import ConfigError
from datagen.model.attention import attention_of, check_attention, use_attention

TOL = 1e-5  # fp32: eager and SDPA differ only in summation order


def _logits(model, kernel, **inputs):
    assert use_attention(model, kernel) == kernel and attention_of(model) == kernel
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def test_sdpa_matches_eager_with_right_and_left_padding(tiny_codegen):
    torch.manual_seed(1)
    ids = torch.randint(1, 96, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 13:] = 0  # right padding, as `check` and unpacked `finetune` batch
    mask[2, :6] = 0  # left padding, as generation batches
    eager = _logits(tiny_codegen, "eager", input_ids=ids, attention_mask=mask)
    sdpa = _logits(tiny_codegen, "sdpa", input_ids=ids, attention_mask=mask)
    real = mask.bool()
    assert eager.abs().max() > 0.1  # a random model, not a constant
    torch.testing.assert_close(sdpa[real], eager[real], rtol=0, atol=TOL)
    # padding changes nothing for the real tokens (the mask is exact, positions included)
    alone = _logits(tiny_codegen, "sdpa", input_ids=ids[1:2, :13])
    torch.testing.assert_close(sdpa[1, :13], alone[0], rtol=0, atol=TOL)


def test_sdpa_matches_eager_on_packed_rows(tiny_codegen):
    torch.manual_seed(2)
    ids = torch.randint(1, 96, (2, 16))
    positions = torch.tensor([list(range(7)) + list(range(9)), list(range(16))])
    eager = _logits(tiny_codegen, "eager", input_ids=ids, position_ids=positions)
    sdpa = _logits(tiny_codegen, "sdpa", input_ids=ids, position_ids=positions)
    torch.testing.assert_close(sdpa, eager, rtol=0, atol=TOL)


def test_the_kernel_really_switches(tiny_codegen, monkeypatch):
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    ids = torch.randint(1, 96, (1, 8))
    _logits(tiny_codegen, "eager", input_ids=ids)
    assert calls == []
    _logits(tiny_codegen, "sdpa", input_ids=ids)
    assert len(calls) == 2  # once per layer
    assert use_attention(tiny_codegen, "auto") == "sdpa"


def test_load_model_runs_moss_on_the_asked_kernel(tiny_moss):
    from datagen.model.loading import load_model

    ids = torch.tensor([[5, 9, 2, 7, 3, 8, 1, 4]])
    out = {}
    for kernel in ("eager", "sdpa"):
        loaded = load_model(tiny_moss, device="cpu", attention=kernel)
        assert loaded.attention == kernel == attention_of(loaded.model)
        with torch.no_grad():
            out[kernel] = loaded.model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(out["sdpa"], out["eager"], rtol=0, atol=TOL)
    assert load_model(tiny_moss, device="cpu").attention == "sdpa"  # auto


def test_unknown_kernel_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        check_attention("flash")
    assert err.value.field == "attention"
