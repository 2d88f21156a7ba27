"""The attention kernel of a loaded model: `eager` or `sdpa` (torch's fused scaled dot-product attention).

MOSS is a CodeGen model. CodeGen's eager attention computes the QK product and the softmax in fp32
whatever the model's dtype: on an H100 that was about 60% of a fine-tuning step's GPU time.
transformers >= 5.25 runs CodeGen through its attention interface, so `attn_implementation="sdpa"`
works as for any model; earlier 5.x releases refuse it. There `use_attention` swaps each
`CodeGenAttention` for a subclass whose `_attn` calls `torch.nn.functional.scaled_dot_product_attention`
on the same rotated queries and keys, with the same additive mask (causal, padding and packed
sequence boundaries alike), so outputs match eager within float rounding.

`auto` is `sdpa` when the model can run it, else `eager`.
"""

from __future__ import annotations

import logging
from typing import Any

from datagen.errors import ConfigError

logger = logging.getLogger(__name__)

#: The values of `--attention` (and `finetune.attention`).
ATTENTIONS = ("auto", "eager", "sdpa")


def check_attention(name: str) -> str:
    """`name` if it is one of ATTENTIONS, else ConfigError."""
    if name not in ATTENTIONS:
        raise ConfigError(f"must be {', '.join(ATTENTIONS)}, got {name!r}", field="attention")
    return name


def _legacy_codegen(model: Any) -> bool:
    """True for a CodeGen model from a transformers release whose attention has its own `_attn`
    (no attention interface, no SDPA)."""
    from transformers.models.codegen import modeling_codegen

    return isinstance(model, modeling_codegen.CodeGenPreTrainedModel) and hasattr(
        modeling_codegen.CodeGenAttention, "_attn"
    )


def load_kwarg(attention: str, *, codegen: bool) -> str | None:
    """The `attn_implementation` to pass to `from_pretrained` for `--attention`: None lets
    transformers pick (its default is sdpa wherever the model supports it). For CodeGen on a
    release without SDPA, load eagerly and let `use_attention` swap the kernel in."""
    check_attention(attention)
    if attention == "auto":
        return None
    if codegen and attention == "sdpa":
        from transformers.models.codegen import modeling_codegen

        if hasattr(modeling_codegen.CodeGenAttention, "_attn"):
            return None
    return attention


def use_attention(model: Any, attention: str) -> str:
    """Switch a loaded model to `attention` (`auto`, `eager`, `sdpa`); return the kernel now in use.

    Raises ConfigError when `sdpa` is asked of a model that has no SDPA path."""
    check_attention(attention)
    if _legacy_codegen(model):
        want = "eager" if attention == "eager" else "sdpa"
        _swap_codegen_attention(model, sdpa=want == "sdpa")
        return want
    current = getattr(model.config, "_attn_implementation", None) or "eager"
    if attention == "auto" or attention == current:
        return current
    try:
        model.set_attn_implementation(attention)
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            f"{type(model).__name__} cannot run {attention} attention ({exc})", field="attention"
        ) from None
    now = getattr(model.config, "_attn_implementation", None)
    if now != attention:
        raise ConfigError(
            f"{type(model).__name__} cannot run {attention} attention (it stays {now})", field="attention"
        )
    return attention


def attention_of(model: Any) -> str:
    """The attention kernel a model runs (`sdpa` for a legacy CodeGen that `use_attention` switched)."""
    from transformers.models.codegen import modeling_codegen

    if _legacy_codegen(model):
        swapped = any(isinstance(m, _sdpa_class(modeling_codegen.CodeGenAttention)) for m in model.modules())
        return "sdpa" if swapped else "eager"
    return getattr(model.config, "_attn_implementation", None) or "eager"


# --------------------------------------------------------------------------- transformers < 5.25

_SDPA_CLASSES: dict[type, type] = {}


def _sdpa_class(base: type) -> type:
    """A subclass of the legacy `CodeGenAttention` whose `_attn` is torch's SDPA."""
    if base in _SDPA_CLASSES:
        return _SDPA_CLASSES[base]
    import torch
    import torch.nn.functional as F

    class CodeGenSdpaAttention(base):  # type: ignore[misc, valid-type]
        def _attn(self, query, key, value, attention_mask=None):  # noqa: ANN001, ANN202
            # Eager adds the mask before dividing by sqrt(d) and SDPA after: the same wherever the
            # mask is 0 (attend) or the dtype's minimum (masked). Clamp so fp16 never sees -inf:
            # a row with nothing to attend (left padding) stays uniform, as in eager, not NaN.
            query, key = query.to(value.dtype), key.to(value.dtype)
            mask = attention_mask
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.clamp(min=torch.finfo(value.dtype).min).to(value.dtype)
            causal = mask is None and query.shape[-2] == key.shape[-2] > 1
            dropout = self.attn_dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=causal,
                scale=1.0 / float(self.scale_attn),
            )
            return out, None

    _SDPA_CLASSES[base] = CodeGenSdpaAttention
    return CodeGenSdpaAttention


def _swap_codegen_attention(model: Any, *, sdpa: bool) -> None:
    from transformers.models.codegen import modeling_codegen

    base = modeling_codegen.CodeGenAttention
    fast = _sdpa_class(base)
    for module in model.modules():
        if isinstance(module, base):
            module.__class__ = fast if sdpa else base
