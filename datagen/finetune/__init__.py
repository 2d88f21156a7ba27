"""Fine-tune a local MOSS (or causal LM) on dialogues: config, data, training loop."""
