"""The local model: load a MOSS (or any causal LM) checkpoint on today's transformers, tokenise MOSS
SFT records like upstream `finetune_moss.py`, score dialogues (`datagen check`) and fine-tune
(`datagen finetune`).

Modules (torch and transformers are imported inside functions only, so importing this package and
`datagen --help` stay fast; without them the functions raise `MissingDependencyError`):

    loading.py    MOSS folder -> CodeGenForCausalLM + a fast GPT-2 tokenizer with the end tags at
                  their checkpoint ids; any other causal LM folder or GGUF file as itself
    tokenize.py   SFT record -> token ids, upstream label mask, per-turn segment spans, truncation
    cache.py      the token cache, keyed by data, tokenizer, options and code version
    score.py      batched scoring and the `moss_check` threshold
    check.py      `datagen check` / the pipeline's check stage: resumable scoring of JSONL files
    finetune.py   FinetuneConfig and the training loop (AdamW, cosine, LoRA, mixed precision)
"""

#: The context length of moss-moon-003, used when neither the caller nor the model says otherwise.
DEFAULT_MAX_LENGTH = 2048
