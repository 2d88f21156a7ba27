"""Filters: turn raw teacher output into a dataset.

Steps (registered by name, run in a configured order, each with a drop/tag/redact policy):
`quality`, `tool_failure`, `length`, `boilerplate`, `language`, `safety`, `exact_dedup`,
`near_dedup`. `run_filters` streams rows through them (worker processes for large inputs) and
writes kept.jsonl, rejected.jsonl and the funnel. Building blocks usable on their own:
`language.detect_language`, `dedup.NearDupIndex`, `exact.normalize_text`.
"""
