"""Stage 1, seeds: the Seed record, importing, curating (dedup, stats, balanced samples)."""
