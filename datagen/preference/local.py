"""On-policy candidates: the local model's own answers, sampled with transformers in MOSS's format.

The prompt is the dialogue rendered by datagen's MOSS renderer and tokenised segment by segment as
`datagen finetune` and `datagen dpo` tokenise it (`datagen.model.tokenize`), ending in `<|MOSS|>:`;
the model writes until `<eom>`. Each sample is seeded by (seed, slot, source, sample), so a rerun
draws the same answers.
"""

from __future__ import annotations

from typing import Any

from datagen.formats.moss import to_sft
from datagen.generate.common import rng_for
from datagen.record import Conversation, Turn

MOSS_PREFIX = "<|MOSS|>:"


class LocalSampler:
    """A local model (folder, `.gguf` file or alias; see `datagen.model.loading.load_model`) that
    writes MOSS's answer to a turn."""

    def __init__(self, model: str, *, device: str | None = None, tokenization: str = "auto"):
        from datagen.model.loading import EOS_TAG, load_model

        self.loaded = load_model(model, device=device, tokenization=tokenization)
        self.eom = self.loaded.end_tag_ids[EOS_TAG]
        self.context = self.loaded.context_length

    def prompt_ids(self, head: Conversation, turn: Turn) -> list[int]:
        """Token ids of the dialogue up to `<|MOSS|>:` of `turn` (its thoughts, commands and
        results included)."""
        tok = self.loaded.tokenizer
        conv = Conversation.from_dict(head.to_dict())
        last = Turn.from_dict(turn.to_dict())
        last.assistant, last.raw = "", {}
        conv.turns.append(last)
        record = to_sft(conv)
        ids = list(tok(record["meta_instruction"], add_special_tokens=True)["input_ids"])
        turns = list(record["chat"].values())
        for n, segments in enumerate(turns):
            for key, text in segments.items():
                if n == len(turns) - 1 and key == "MOSS":
                    text = MOSS_PREFIX
                if text:
                    ids += tok(text, add_special_tokens=False)["input_ids"]
        return ids

    def sample(
        self,
        head: Conversation,
        turn: Turn,
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
    ) -> str | None:
        """One answer (None when the prompt leaves no room for it in the model's context)."""
        import torch

        ids = self.prompt_ids(head, turn)
        if self.context and len(ids) + max_new_tokens > self.context:
            return None
        model = self.loaded.model
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self.eom,
            "pad_token_id": self.loaded.tokenizer.pad_token_id or self.eom,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs["do_sample"] = False
        with torch.no_grad():
            out = model.generate(torch.tensor([ids], device=self.loaded.device), **kwargs)
        new = out[0][len(ids) :].tolist()
        if self.eom in new:
            new = new[: new.index(self.eom)]
        return self.loaded.tokenizer.decode(new, skip_special_tokens=True)


def sample_seed(seed: int, slot: str, label: str) -> int:
    """The torch seed of one local sample."""
    return rng_for(seed, "local", slot, label).randrange(2**31)
