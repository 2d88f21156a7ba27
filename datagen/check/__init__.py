"""Stage 4, check: score conversations with a local model and split them by a loss threshold."""
