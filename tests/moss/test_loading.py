"""Loading MOSS folders without remote code, other causal LMs, and GGUF files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from datagen.errors import InputError
from datagen.model.loading import END_TAGS, ModelLoadError, load_model, load_tokenizer, resolve_model


def test_moss_folder_loads_as_codegen_with_the_file_ids(tiny_moss):
    added = json.loads((tiny_moss / "added_tokens.json").read_text())
    lm = load_model(tiny_moss, device="cpu")
    assert type(lm.model).__name__ == "CodeGenForCausalLM"
    assert lm.source.kind == "moss" and lm.added_token_ids == [] and lm.context_length == 2048
    assert lm.dtype == torch.float32
    tok = lm.tokenizer
    for content, idx in added.items():
        assert tok.convert_tokens_to_ids(content) == idx, content
    assert lm.end_tag_ids == {t: added[t] for t in END_TAGS}
    assert tok.eos_token == "<eom>" and tok.eos_token_id == added["<eom>"]
    # The end tags are single special tokens inside text, and decode back.
    text = "<|Human|>: hi<eoh>\n<|MOSS|>: hello<eom>\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert added["<eoh>"] in ids and added["<eom>"] in ids
    # upstream tokenization, the default for a MOSS folder, drops the newline after each end tag
    assert lm.tokenization == "upstream" and tok.decode(ids) == text.replace(">\n", ">")
    # The weights are the checkpoint's (not a fresh init): compare one tensor with the file.
    state = torch.load(tiny_moss / "pytorch_model.bin", weights_only=True)
    assert torch.equal(lm.model.lm_head.weight, state["lm_head.weight"])


def test_registering_tags_in_file_order_would_shift_ids(tiny_moss):
    """The trap the loader avoids: a tokenizer built from vocab/merges with the tags added in file
    order gets ids in insertion order, not the checkpoint's."""
    from tokenizers import Tokenizer, models

    added = json.loads((tiny_moss / "added_tokens.json").read_text())
    naive = Tokenizer(models.BPE.from_file(str(tiny_moss / "vocab.json"), str(tiny_moss / "merges.txt")))
    naive.add_special_tokens(list(added))
    assert [naive.token_to_id(t) for t in added] != list(added.values())
    tok, _ = load_tokenizer(tiny_moss)
    assert [tok.convert_tokens_to_ids(t) for t in added] == list(added.values())


def test_upstream_tokenizer_config_is_ignored(tiny_moss):
    from transformers import AutoTokenizer

    cfg = json.loads((tiny_moss / "tokenizer_config.json").read_text())
    assert "auto_map" in cfg  # what makes AutoTokenizer ask for remote code
    with pytest.raises((ValueError, OSError)):
        AutoTokenizer.from_pretrained(tiny_moss, trust_remote_code=False)
    tok, _ = load_tokenizer(tiny_moss)
    assert tok.is_fast


def test_conflicting_added_token_id_is_an_error_naming_the_file(tiny_moss, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_moss, folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    added = json.loads((folder / "added_tokens.json").read_text())
    added["<eom>"] = vocab["Ġthe"]
    (folder / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(InputError) as err:
        load_tokenizer(folder)
    assert err.value.path == str(folder / "added_tokens.json") and err.value.field == "<eom>"


def test_quantised_moss_checkpoint_is_refused(tiny_moss, tmp_path):
    folder = tmp_path / "q"
    shutil.copytree(tiny_moss, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "wbits": 4, "groupsize": 128}))
    with pytest.raises(ModelLoadError, match="quantised to 4 bits"):
        load_model(folder, device="cpu")


def test_other_causal_lm_loads_as_itself_and_gets_the_end_tags(tiny_moss, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE.from_file(str(tiny_moss / "vocab.json"), str(tiny_moss / "merges.txt")))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    vocab = backend.get_vocab_size()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=256))
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)

    lm = load_model(folder, device="cpu")
    assert lm.source.kind == "causal_lm" and type(lm.model).__name__ == "GPT2LMHeadModel"
    assert sorted(lm.added_token_ids) == list(range(vocab, vocab + 5))
    assert lm.model.get_input_embeddings().weight.shape[0] >= vocab + 5
    assert lm.context_length == 256
    ids = lm.tokenizer("a<eom>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == lm.end_tag_ids["<eom>"]


def test_resolve_model_errors(tmp_path):
    with pytest.raises(InputError, match="model not found"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(InputError, match="GGUF file not found"):
        resolve_model(tmp_path / "m.gguf")
    assert resolve_model("org/name").kind == "causal_lm"


@pytest.mark.slow
def test_smollm2_gguf_scores_a_dialogue_on_cpu():
    """The demo's local model: SmolLM2-135M-Instruct as a GGUF file, dequantised by transformers."""
    from datagen.model.score import score_records
    from tests.moss.conftest import sft_record

    lm = load_model("smollm2", device="cpu")
    assert lm.source.kind == "gguf" and lm.source.gguf_file.endswith(".gguf")
    assert len(lm.added_token_ids) == 5  # SmolLM2 has no MOSS tags
    [score] = score_records(
        [sft_record("g", [("What is the capital of France?", "The capital of France is Paris.")])],
        lm,
        max_length=512,
    )
    assert score.fits and score.turns_scored == 1
    # A real small model finds plain English far less surprising than a uniform guess over its vocab.
    assert 0 < score.loss < 0.6 * torch.log(torch.tensor(float(len(lm.tokenizer)))).item()


def test_missing_torch_names_the_extra(monkeypatch, tiny_moss):
    import sys

    from datagen.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"datagen\[moss\]"):
        load_model(tiny_moss)
