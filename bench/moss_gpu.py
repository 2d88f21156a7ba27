"""Throughput of datagen's local-model code paths: scoring (`datagen check`) and fine-tuning
(`datagen finetune`), on a CodeGen-architecture model built from a config (no download).

    python bench/moss_gpu.py                  # GPU: ~1.1B params (MOSS vocabulary), seq 2048, bf16
    python bench/moss_gpu.py --size tiny      # what a CPU runs (and says so)

Scoring runs `datagen.model.score.token_losses` (the padded forward and per-token loss of `datagen
check`) on a bf16 model; fine-tuning runs the Trainer built by `datagen.finetune.train.build_trainer`
with the `finetune` defaults (fp32 master weights, bf16 autocast, AdamW, cosine, gradient
checkpointing unless --no-grad-ckpt). Tokens are random ids at full sequence length, so the figures
are the model's, not the data's. MFU counts 6N + 12*L*d*T FLOPs per trained token (2N + 4*L*d*T per
scored token), N = parameters doing matmuls (input embedding excluded), against the device's dense
bf16 peak; recomputation by gradient checkpointing is not counted as useful work.

Measured on one H100 (transformers 5.17, bf16, seq 2048): score_tok_s=65064 finetune_tok_s=17014
mfu=0.108 peak_gb=25.9. A profile of the scoring pass shows where the rest goes: transformers'
CodeGen has no SDPA/flash attention path (5.17 and 5.23 both refuse `attn_implementation="sdpa"`),
so attention runs eagerly with the QK product and softmax in fp32 (about 60% of GPU time), not the
matmuls. A fused attention kernel for CodeGen is the lever, not batch size.

The last line is `score_tok_s=A finetune_tok_s=B mfu=C peak_gb=D` (mfu of fine-tuning; nan when the
peak of the device is unknown; peak_gb the most GPU memory allocated, 0 on CPU).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

#: Dense bf16 tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name().
PEAK_BF16 = [
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12),
]

SIZES = {
    # ~1.1B parameters: 14 layers of width 2048 and MOSS's padded 107008-token vocabulary.
    "1b": dict(n_embd=2048, n_layer=14, n_head=16, rotary_dim=64, vocab_size=107008, n_positions=2048),
    "350m": dict(n_embd=1024, n_layer=20, n_head=16, rotary_dim=32, vocab_size=51200, n_positions=2048),
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=16, vocab_size=1024, n_positions=256),
}


def peak_flops(name: str) -> float | None:
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: 1b on a GPU, tiny on a CPU")
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default: the size's context)")
    ap.add_argument("--score-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--score-iters", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=12, help="optimizer steps (the first 2 are warm-up)")
    ap.add_argument("--no-grad-ckpt", action="store_true", help="keep activations instead of recomputing")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM, TrainerCallback

    from datagen.finetune.config import FinetuneConfig
    from datagen.finetune.train import build_trainer
    from datagen.model.cache import TokenizedSet
    from datagen.model.score import token_losses
    from datagen.model.tokenize import TruncationStats

    gpu = torch.cuda.is_available()
    size = args.size or ("1b" if gpu else "tiny")
    device = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name() if gpu else "CPU"
    if not gpu:
        log(f"no GPU: running the {size!r} size on the CPU; these are not GPU figures")
    cfg_kwargs = dict(SIZES[size])
    seq = args.seq or cfg_kwargs["n_positions"]
    last = cfg_kwargs["vocab_size"] - 1
    config = CodeGenConfig(**cfg_kwargs, n_ctx=cfg_kwargs["n_positions"], tie_word_embeddings=False,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=last, eos_token_id=last)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(name) if gpu else None)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = CodeGenForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_matmul = n_params - model.get_input_embeddings().weight.numel()
    L, d = config.n_layer, config.n_embd
    log(f"device {name}; model {size}: {n_params / 1e6:,.1f}M params ({n_matmul / 1e6:,.1f}M in matmuls), "
        f"{L} layers x {d}, vocab {config.vocab_size}, seq {seq}; built in {time.perf_counter() - t0:.1f}s")

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    # --- scoring: the model in the dtype `datagen check` loads it in (bf16 on GPU, fp32 on CPU)
    score_dtype = torch.bfloat16 if gpu else torch.float32
    model.to(score_dtype).eval()
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, config.vocab_size - 1, size=seq).tolist() for _ in range(args.score_batch)]
    for _ in range(2):
        token_losses(model, batch, pad_id=0)
    sync()
    t = time.perf_counter()
    for _ in range(args.score_iters):
        token_losses(model, batch, pad_id=0)
    sync()
    score_s = time.perf_counter() - t
    score_tok_s = args.score_batch * seq * args.score_iters / score_s
    score_mfu = score_tok_s * (2 * n_matmul + 4 * L * d * seq) / peak if peak else math.nan
    score_peak_gb = torch.cuda.max_memory_allocated() / 1e9 if gpu else 0.0
    log(f"score: {score_tok_s:,.0f} tok/s (batch {args.score_batch} x {seq}), mfu {score_mfu:.3f}, "
        f"peak {score_peak_gb:.1f} GB")

    # --- fine-tuning: fp32 master weights, the Trainer that `datagen finetune` builds
    model.to(torch.float32).train()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    n_examples = args.train_batch * args.train_steps
    ids = rng.integers(0, config.vocab_size - 1, size=n_examples * seq).astype(np.int32)
    mask = np.ones_like(ids, dtype=bool)
    offsets = np.arange(0, n_examples * seq + 1, seq, dtype=np.int64)
    train_set = TokenizedSet(ids=ids, mask=mask, offsets=offsets, stats=TruncationStats())
    ft = FinetuneConfig(max_steps=args.train_steps, batch_size=args.train_batch, lr=1e-5, log_steps=10**6,
                        gradient_checkpointing=not args.no_grad_ckpt, val_fraction=0.0)
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "fp32"

    class StepTimer(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003
            sync()
            self.times.append(time.perf_counter())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(model, train_set, None, ft, out_dir=tmp, device=device, precision=precision,
                                pad_id=0, progress=False, callbacks=[timer])
        trainer.train()
    warm = 2 if len(timer.times) > 3 else 0
    steps = len(timer.times) - 1 - warm
    train_s = timer.times[-1] - timer.times[warm]
    finetune_tok_s = steps * args.train_batch * seq / train_s
    mfu = finetune_tok_s * (6 * n_matmul + 12 * L * d * seq) / peak if peak else math.nan
    train_peak_gb = torch.cuda.max_memory_allocated() / 1e9 if gpu else 0.0
    log(f"finetune: {finetune_tok_s:,.0f} tok/s (batch {args.train_batch} x {seq}, {precision}, gradient "
        f"checkpointing {'off' if args.no_grad_ckpt else 'on'}, {steps} timed steps), mfu {mfu:.3f}, "
        f"peak {train_peak_gb:.1f} GB")
    if peak is None and gpu:
        log(f"unknown bf16 peak for {name!r}: pass --peak-tflops to get an MFU")
    print(f"score_tok_s={score_tok_s:.0f} finetune_tok_s={finetune_tok_s:.0f} mfu={mfu:.3f} "
          f"peak_gb={max(score_peak_gb, train_peak_gb):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
