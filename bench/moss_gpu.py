"""Throughput of datagen's local-model code paths: scoring (`datagen check`) and fine-tuning
(`datagen finetune`), on a CodeGen-architecture model built from a config (no download), for each
attention kernel (eager, and torch's SDPA: `datagen.model.attention`).

    python bench/moss_gpu.py                        # GPU: ~1.1B params (MOSS vocabulary), seq 2048, bf16
    python bench/moss_gpu.py --size tiny            # what a CPU runs (and says so)
    python bench/moss_gpu.py --attention sdpa       # one kernel only (default: eager and sdpa)

Scoring runs `datagen.model.score.token_losses` (the padded forward and per-token loss of `datagen
check`) on a bf16 model and full-length rows of random ids. Fine-tuning runs the Trainer built by
`datagen.finetune.train.build_trainer` with the `finetune` defaults (fp32 master weights, bf16
autocast, AdamW, cosine, gradient checkpointing unless --no-grad-ckpt, packing) on random ids whose
lengths follow the 48 MOSS samples (../shared/moss-samples, tokenised by a byte-level BPE trained on
them, or by --tokenizer, a MOSS folder): dialogues packed into rows of `seq` tokens, and (`padded`)
the same dialogues `--train-batch` at a time, each batch padded to its longest.

Figures: `finetune_tok_s` and `padded_tok_s` count real (dialogue) tokens per second, padding
excluded. `packing_efficiency` is real tokens over the slots of the packed rows (`padding_efficiency`:
over the slots of the padded batches). MFU counts 6N + 12*L*d*T FLOPs per trained token (2N + 4*L*d*T
per scored token; T = seq), N = parameters doing matmuls (input embedding excluded), against the
device's dense bf16 peak; recomputation by gradient checkpointing is not counted as useful work.

Before SDPA and packing, on one H100 (transformers 5.17, eager, full-length rows, seq 2048):
score_tok_s=65064 finetune_tok_s=17014 mfu=0.108 peak_gb=25.9; a profile put ~60% of GPU time in
CodeGen's eager attention (QK product and softmax in fp32). The H100 target for this bench: the sdpa
line at least 1.5x the eager line's finetune_tok_s, MFU >= 0.2, and packing_efficiency >= 0.9 (0.911
on the samples with the tiny tokenizer at 2048; padded batches of 4 waste ~25%). Not yet measured on
a GPU: no GPU was available when packing and the SDPA path were added.

One line per kernel on stdout: `attention=K score_tok_s=A finetune_tok_s=B padded_tok_s=C mfu=D
packing_efficiency=E padding_efficiency=F peak_gb=G` (mfu of packed fine-tuning; nan when the device's
peak is unknown; peak_gb the most GPU memory allocated, 0 on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "moss-samples"

#: Dense bf16 tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name().
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]

SIZES = {
    # ~1.1B parameters: 14 layers of width 2048 and MOSS's padded 107008-token vocabulary.
    "1b": dict(n_embd=2048, n_layer=14, n_head=16, rotary_dim=64, vocab_size=107008, n_positions=2048),
    "350m": dict(n_embd=1024, n_layer=20, n_head=16, rotary_dim=32, vocab_size=51200, n_positions=2048),
    # a CPU's: long enough a context for the MOSS samples (their system prompt alone is ~300 tokens)
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=16, vocab_size=1024, n_positions=1024),
}


def peak_flops(name: str) -> float | None:
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bpe_tokenizer(records: list[dict]) -> object:
    """A byte-level BPE trained on the records with the MOSS end tags as special tokens (what the
    tests' tiny MOSS uses), loaded through datagen's MOSS tokenizer builder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from datagen.model.loading import END_TAGS, load_tokenizer

    texts = [r["meta_instruction"] for r in records] + [
        s for r in records for t in r["chat"].values() for s in t.values()
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=1200, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-bpe-"))
    bpe.model.save(str(folder))
    n = len(json.loads((folder / "vocab.json").read_text()))
    (folder / "added_tokens.json").write_text(json.dumps({t: n + i for i, t in enumerate(END_TAGS)}))
    (folder / "config.json").write_text(json.dumps({"model_type": "moss", "n_positions": 1 << 20}))
    return load_tokenizer(folder)[0]


def sample_lengths(samples: Path, tokenizer: str | None, seq: int) -> list[int]:
    """Token lengths of the MOSS samples at context `seq` (empty when there are none)."""
    from datagen.model.cache import tokenize_cached
    from datagen.model.loading import load_tokenizer

    files = sorted(samples.rglob("*.json")) if samples.is_dir() else []
    if not files:
        return []
    records = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    tok = load_tokenizer(tokenizer)[0] if tokenizer else _bpe_tokenizer(records)
    return tokenize_cached(records, tok, None, max_length=seq).lengths()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: 1b on a GPU, tiny on a CPU")
    ap.add_argument("--seq", type=int, default=None, help="row length (default: the size's context)")
    ap.add_argument("--attention", choices=["eager", "sdpa", "both"], default="both")
    ap.add_argument("--score-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=4, help="packed rows (or padded dialogues) per step")
    ap.add_argument("--score-iters", type=int, default=None, help="default 10 (3 on a CPU)")
    ap.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="optimizer steps, the first 2 are warm-up (default 12; 6 on a CPU)",
    )
    ap.add_argument("--no-padded", action="store_true", help="skip the padded (unpacked) fine-tuning run")
    ap.add_argument("--no-grad-ckpt", action="store_true", help="keep activations instead of recomputing")
    ap.add_argument(
        "--samples", type=Path, default=SAMPLES, help="MOSS sample dialogues (*.json) for lengths"
    )
    ap.add_argument("--tokenizer", default=None, help="a MOSS folder to tokenise the samples with")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM, TrainerCallback

    from datagen.finetune.config import FinetuneConfig
    from datagen.finetune.packing import PackedDataset, keeps_sequences_apart, padding_efficiency
    from datagen.finetune.train import build_trainer
    from datagen.model.attention import use_attention
    from datagen.model.cache import TokenizedSet
    from datagen.model.score import token_losses
    from datagen.model.tokenize import TruncationStats

    gpu = torch.cuda.is_available()
    size = args.size or ("1b" if gpu else "tiny")
    device = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name() if gpu else "CPU"
    if not gpu:
        log(f"no GPU: running the {size!r} size on the CPU; these are not GPU figures")
    args.score_iters = args.score_iters or (10 if gpu else 3)
    args.train_steps = args.train_steps or (12 if gpu else 6)
    cfg_kwargs = dict(SIZES[size])
    seq = args.seq or cfg_kwargs["n_positions"]
    last = cfg_kwargs["vocab_size"] - 1
    config = CodeGenConfig(
        **cfg_kwargs,
        n_ctx=cfg_kwargs["n_positions"],
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=last,
        eos_token_id=last,
        use_cache=False,
    )  # a KV cache would turn the packed mask off
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(name) if gpu else None)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = CodeGenForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_matmul = n_params - model.get_input_embeddings().weight.numel()
    L, d = config.n_layer, config.n_embd
    log(
        f"device {name}; model {size}: {n_params / 1e6:,.1f}M params ({n_matmul / 1e6:,.1f}M in matmuls), "
        f"{L} layers x {d}, vocab {config.vocab_size}, seq {seq}; built in {time.perf_counter() - t0:.1f}s"
    )

    # --- the training data: random ids, lengths of the MOSS samples (full rows when there are none)
    lengths = sample_lengths(args.samples, args.tokenizer, seq)
    if lengths:
        log(
            f"lengths: {len(lengths)} MOSS samples, mean {np.mean(lengths):.0f} tokens (max {max(lengths)}) at "
            f"context {seq}"
        )
    else:
        log(
            f"no MOSS sample under {args.samples} fits {seq} tokens: full-length rows, so packing and padding "
            "change nothing"
        )
        lengths = [seq]
    rng = np.random.default_rng(0)
    need = args.train_batch * args.train_steps * seq * 1.3 / np.mean(lengths)
    lens = [lengths[i % len(lengths)] for i in range(max(int(need), args.train_batch * args.train_steps))]
    ids = rng.integers(0, config.vocab_size - 1, size=sum(lens)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    train_set = TokenizedSet(
        ids=ids, mask=np.ones_like(ids, dtype=bool), offsets=offsets, stats=TruncationStats()
    )
    packed = PackedDataset(train_set, seq)
    order = list(range(len(lens)))
    random.Random(0).shuffle(order)
    pad_eff = padding_efficiency(lens, args.train_batch, order)
    log(
        f"packing: {len(lens)} dialogues in {len(packed)} rows of {seq}, efficiency {packed.efficiency:.3f} "
        f"(padded batches of {args.train_batch}: {pad_eff:.3f})"
    )

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003
            sync()
            self.times.append(time.perf_counter())

    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "fp32"

    def finetune_tok_s(packing: bool) -> tuple[float, float]:
        """Real tokens per second and peak GB of `train_steps` Trainer steps."""
        model.to(torch.float32).train()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        ft = FinetuneConfig(
            max_steps=args.train_steps,
            batch_size=args.train_batch,
            lr=1e-5,
            log_steps=10**6,
            gradient_checkpointing=not args.no_grad_ckpt,
            val_fraction=0.0,
            packing=packing,
        )
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(
                model,
                train_set,
                None,
                ft,
                out_dir=tmp,
                device=device,
                precision=precision,
                pad_id=0,
                row_length=seq,
                progress=False,
                callbacks=[timer],
            )
            trainer.train()
        warm = 2 if len(timer.times) > 3 else 0
        steps = len(timer.times) - 1 - warm
        per_example = train_set.tokens / (len(packed) if packing else len(train_set))  # on average
        tok_s = steps * args.train_batch * per_example / (timer.times[-1] - timer.times[warm])
        return tok_s, torch.cuda.max_memory_allocated() / 1e9 if gpu else 0.0

    kernels = ["eager", "sdpa"] if args.attention == "both" else [args.attention]
    for kernel in kernels:
        use_attention(model, kernel)
        if not keeps_sequences_apart(model):
            raise SystemExit(
                f"{kernel}: packed sequences attend to each other; the packed figures would be wrong"
            )

        # --- scoring: the model in the dtype `datagen check` loads it in (bf16 on GPU, fp32 on CPU)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        model.to(torch.bfloat16 if gpu else torch.float32).eval()
        batch = [rng.integers(0, config.vocab_size - 1, size=seq).tolist() for _ in range(args.score_batch)]
        for _ in range(2):
            token_losses(model, batch, pad_id=0)
        sync()
        t = time.perf_counter()
        for _ in range(args.score_iters):
            token_losses(model, batch, pad_id=0)
        sync()
        score_tok_s = args.score_batch * seq * args.score_iters / (time.perf_counter() - t)
        score_mfu = score_tok_s * (2 * n_matmul + 4 * L * d * seq) / peak if peak else math.nan
        score_gb = torch.cuda.max_memory_allocated() / 1e9 if gpu else 0.0
        log(
            f"{kernel} score: {score_tok_s:,.0f} tok/s (batch {args.score_batch} x {seq}), mfu {score_mfu:.3f}"
        )

        # --- fine-tuning: fp32 master weights, the Trainer that `datagen finetune` builds
        tok_s, train_gb = finetune_tok_s(packing=True)
        mfu = tok_s * (6 * n_matmul + 12 * L * d * seq) / peak if peak else math.nan
        padded_tok_s, padded_gb = (math.nan, 0.0) if args.no_padded else finetune_tok_s(packing=False)
        log(
            f"{kernel} finetune: {tok_s:,.0f} real tok/s packed ({args.train_batch} rows x {seq}), "
            f"{padded_tok_s:,.0f} padded ({args.train_batch} dialogues a batch); {precision}, gradient "
            f"checkpointing {'off' if args.no_grad_ckpt else 'on'}, {args.train_steps - 3} timed steps; mfu {mfu:.3f}"
        )
        print(
            f"attention={kernel} score_tok_s={score_tok_s:.0f} finetune_tok_s={tok_s:.0f} "
            f"padded_tok_s={padded_tok_s:.0f} mfu={mfu:.3f} packing_efficiency={packed.efficiency:.3f} "
            f"padding_efficiency={pad_eff:.3f} peak_gb={max(score_gb, train_gb, padded_gb):.1f}",
            flush=True,
        )
    if peak is None and gpu:
        log(f"unknown bf16 peak for {name!r}: pass --peak-tflops to get an MFU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
