"""`upstream` tokenization reproduces what upstream's `finetune_moss.py` fed the released MOSS models.

The reference below re-implements, on the tiny checkpoint's own files, the two things that decide
upstream's token stream and labels: the slow `MossTokenizer.encode` of transformers 4.25.1 (split the
text on added tokens; an added token that is not an `AddedToken` of the special-tokens map strips the
whitespace on both sides; byte-level BPE for the rest) and `SFTDataset.load_data` / `__getitem__`
(segments encoded one by one, stop at the first turn past the context, no-loss spans with the fixed
`+5/-2` Results offsets).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from datagen.errors import ConfigError, InputError
from datagen.finetune.config import FinetuneConfig
from datagen.model.cache import tokenizer_fingerprint
from datagen.model.loading import END_TAGS, load_tokenizer
from datagen.model.score import score_records
from datagen.model.tokenize import tokenization_of, tokenize_record
from tests.moss.conftest import SHORT_META, sft_record


class SlowMossTokenizer:
    """`MossTokenizer.encode` as transformers 4.25.1 ran it, from a MOSS folder's files."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer, models, pre_tokenizers

        self.bpe = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        self.bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        smap = json.loads((folder / "special_tokens_map.json").read_text(encoding="utf-8"))
        # bos/eos/unk: AddedToken(lstrip=False, rstrip=False) in MossTokenizer.__init__
        self.keeps_space = set(smap.values())
        self.no_split = {
            **json.loads((folder / "added_tokens.json").read_text(encoding="utf-8")),
            **{t: vocab[t] for t in self.keeps_space},
        }
        alternatives = "|".join(re.escape(t) for t in sorted(self.no_split, key=len, reverse=True))
        self.split = re.compile(f"({alternatives})")

    def encode(self, text: str) -> list[int]:
        pieces = self.split.split(text)  # text, token, text, token, ..., text
        for i in range(1, len(pieces), 2):
            if pieces[i] not in self.keeps_space:  # a plain str in the added tokens: strip both sides
                pieces[i - 1] = pieces[i - 1].rstrip()
                pieces[i + 1] = pieces[i + 1].lstrip()
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if piece:
                ids += [self.no_split[piece]] if i % 2 else self.bpe.encode(piece).ids
        return ids


def upstream_sample(record: dict, encode, max_len: int = 2048) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) of one record as upstream's SFTDataset builds them; None when it skips it."""
    chat, num_turns = record["chat"], int(record["num_turns"])
    instruction_ids = encode(record["meta_instruction"])
    input_ids = list(instruction_ids)
    no_loss_spans = [(0, len(instruction_ids))]
    for i in range(num_turns):
        cur_turn_ids: list[int] = []
        cur_no_loss_spans = []
        for key, value in chat[f"turn_{i + 1}"].items():
            cur_ids = encode(value)
            if key == "Tool Responses":
                cur_no_loss_spans.append(
                    (len(input_ids + cur_turn_ids) + 5, len(input_ids + cur_turn_ids + cur_ids) - 2)
                )
            assert cur_ids
            cur_turn_ids.extend(cur_ids)
        if len(input_ids + cur_turn_ids) > max_len:
            break
        input_ids.extend(cur_turn_ids)
        no_loss_spans.extend(cur_no_loss_spans)
    if len(input_ids) == len(instruction_ids):
        return None
    labels = list(input_ids)
    for a, b in no_loss_spans:
        labels[a:b] = [-100] * len(labels[a:b])
    return input_ids, labels


def edge_records() -> list[dict]:
    """Whitespace on both sides of the tags, an added token and `<|endoftext|>` inside text, a
    Results segment too short for the `+5/-2` span, plugin-style `None` results."""
    odd = sft_record(
        "odd",
        [
            ("  spaced  question \t", "an answer ending in spaces   "),
            ("use <|extra_0|> and <|endoftext|> here", "ok\n\n"),
        ],
    )
    odd["chat"]["turn_1"]["MOSS"] = "<|MOSS|>: an answer\n  <eom>\n\n"
    odd["chat"]["turn_2"]["Tool Responses"] = "<|Results|>:\nNone\n<eor>\n"
    short = sft_record("short", [("Hi.", "Hello!")])
    short["chat"]["turn_1"]["Tool Responses"] = "<|Results|>:<eor>"
    return [odd, short]


@pytest.fixture(scope="module")
def slow(tiny_moss) -> SlowMossTokenizer:
    return SlowMossTokenizer(tiny_moss)


@pytest.fixture(scope="module")
def upstream_tok(tiny_moss):
    tok, _ = load_tokenizer(tiny_moss)  # auto: a MOSS folder gets upstream's token stream
    assert tokenization_of(tok) == "upstream"
    return tok


@pytest.mark.parametrize("max_length", [2048, 600])
def test_upstream_tokenization_is_upstreams_sftdataset(upstream_tok, slow, moss_records, max_length):
    records = moss_records + edge_records()
    cut = 0
    for record in records:
        want = upstream_sample(record, slow.encode, max_length)
        got = tokenize_record(record, upstream_tok, max_length=max_length)
        if want is None:
            assert got.empty, record["conversation_id"]
            continue
        assert got.input_ids == want[0], record["conversation_id"]
        assert got.labels() == want[1], record["conversation_id"]
        cut += not got.fits
    if max_length < 2048:
        assert cut  # the context rule was exercised


def test_datagen_tokenization_keeps_what_upstream_drops(tiny_moss, slow, moss_records):
    """The old behaviour, still an option: every character is encoded, so not one sample matches
    upstream's stream; every sample is longer by at least its end tags' trailing newlines."""
    tok, _ = load_tokenizer(tiny_moss, tokenization="datagen")
    assert tokenization_of(tok) == "datagen"
    same = 0
    for record in moss_records:
        want = upstream_sample(record, slow.encode, 10**6)
        got = tokenize_record(record, tok, max_length=10**6)
        same += got.input_ids == want[0]
        tagged_newlines = sum(
            v.endswith(tuple(f"{t}\n" for t in END_TAGS))
            for turn in record["chat"].values()
            for v in turn.values()
        )
        assert len(got.input_ids) - len(want[0]) >= tagged_newlines > 0
    assert same == 0


def test_score_counts_the_tokens_of_the_chosen_stream(tiny_moss):
    record = sft_record("a", [("Hi.", "Hello!"), ("And?", "Bye.")])
    [up] = score_records([record], tiny_moss, max_length=512, device="cpu")
    [dg] = score_records([record], tiny_moss, max_length=512, device="cpu", tokenization="datagen")
    assert dg.tokens - up.tokens == 5 * 2  # one `\n` after each of the five end tags, per turn


def test_modes_have_different_cache_keys(tiny_moss, upstream_tok):
    datagen_tok, _ = load_tokenizer(tiny_moss, tokenization="datagen")
    assert tokenizer_fingerprint(upstream_tok) != tokenizer_fingerprint(datagen_tok)
    ids = {t: upstream_tok.convert_tokens_to_ids(t) for t in END_TAGS}
    assert ids == {t: datagen_tok.convert_tokens_to_ids(t) for t in END_TAGS}  # only the stripping differs


def _causal_lm_folder(tok, folder: Path) -> Path:
    tok.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "codegen"}))
    return folder


def test_auto_follows_what_a_saved_tokenizer_recorded(upstream_tok, tiny_moss, tmp_path):
    text = "<|Human|>: hi<eoh>\n<|MOSS|>: yo<eom>\n"
    # a checkpoint datagen fine-tuned in upstream tokenization keeps it
    saved = _causal_lm_folder(upstream_tok, tmp_path / "ft")
    tok, _ = load_tokenizer(saved)
    assert tokenization_of(tok) == "upstream" and tok(text)["input_ids"] == upstream_tok(text)["input_ids"]
    # asked for datagen, the end tags keep the newline after them
    tok, _ = load_tokenizer(saved, tokenization="datagen")
    assert tok.decode(tok(text)["input_ids"]) == text
    # any other causal LM: datagen
    cfg = json.loads((saved / "tokenizer_config.json").read_text())
    cfg.pop("datagen_tokenization")
    plain = tmp_path / "plain"
    shutil.copytree(saved, plain)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok, _ = load_tokenizer(plain)
    assert tokenization_of(tok) == "datagen" and tok.decode(tok(text)["input_ids"]) == text


def test_unknown_tokenization_is_refused(tiny_moss):
    with pytest.raises(InputError) as err:
        load_tokenizer(tiny_moss, tokenization="slow")
    assert err.value.field == "tokenization"
    with pytest.raises(ConfigError) as err:
        FinetuneConfig.from_dict({"tokenization": "slow"})
    assert err.value.field == "tokenization"
    assert FinetuneConfig.from_dict({"tokenization": "datagen"}).tokenization == "datagen"


def test_prompt_for_generation_matches_training(upstream_tok):
    """At inference upstream's tokenizer also dropped the newline after `<eoh>`: a prompt encodes
    to the prefix of the trained stream."""
    prompt = SHORT_META + "<|Human|>: Hi.<eoh>\n<|MOSS|>:"
    record = sft_record("p", [("Hi.", "Hello!")])
    record["chat"]["turn_1"] = {"Human": record["chat"]["turn_1"]["Human"], "MOSS": "<|MOSS|>: Hello!<eom>\n"}
    full = tokenize_record(record, upstream_tok, max_length=512).input_ids
    ids = upstream_tok(prompt)["input_ids"]
    assert full[: len(ids)] == ids
