"""TRL's own loading and processing of an exported pairs file, as a user would run it: the JSONL
through `datasets`, then `trl.DPOTrainer`'s dataset preparation (chat template, `tools` decoded,
prompt and completions tokenised) with a tiny model whose tokenizer has a plain chat template."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

#: Every message as `<|role|>: ...<eom>`, tool calls and reasoning included; the tools' names first.
CHAT_TEMPLATE = (
    "{%- if tools %}<|tools|>:{% for t in tools %} {{ t.function.name }}{% endfor %}<eom>\n{% endif -%}"
    "{%- for m in messages -%}"
    "<|{{ m.role }}|>:{% if m.reasoning_content %} ({{ m.reasoning_content }}){% endif %}"
    "{% if m.content %} {{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %} {{ c.function.name }}({{ c.function.arguments }}){% endfor %}"
    "{% endif %}<eom>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<|assistant|>:{% endif -%}"
)


def trl_trainer(pairs: str | Path, model_dir: str | Path, out_dir: str | Path, *, max_steps: int = 1) -> Any:
    """A `DPOTrainer` over the pairs file loaded with `datasets.load_dataset("json", ...)`, as it
    is. Raises whatever TRL raises on a file it cannot take."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from datagen.model.loading import load_model

    loaded = load_model(str(model_dir), device="cpu", tokenization="datagen")
    tokenizer = loaded.tokenizer
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = "<eom>"
    tokenizer.pad_token = tokenizer.pad_token or "<eom>"
    ds = datasets.load_dataset("json", data_files=str(pairs), split="train")
    args = DPOConfig(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    from transformers.trainer_callback import PrinterCallback

    ref = copy.deepcopy(loaded.model)
    trainer = DPOTrainer(
        model=loaded.model, ref_model=ref, args=args, train_dataset=ds, processing_class=tokenizer
    )
    trainer.remove_callback(PrinterCallback)  # its logs go to stdout
    return trainer
