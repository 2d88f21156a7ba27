"""`datagen seeds import|stats|dedup|sample`: build and inspect seed prompt files.

Registered by `datagen.cli.generate` through `register_seeds(sub)`. Data goes to files or stdout,
summaries and warnings to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SEEDS_EXAMPLES = """examples:
  datagen seeds import seed_tasks.jsonl --preset self-instruct --category brainstorming --out seeds/si.jsonl
  datagen seeds import alpaca_data.json --field instruction --append-field input --out seeds/alpaca.jsonl \\
      --rejects seeds/alpaca.rejects.jsonl --languages en
  datagen seeds import harmless_prompts.jsonl --field user_prompt --out seeds/moss_harmless.jsonl
  datagen seeds import sharegpt.json --field 'conversations[from=human].value' --id-field id --out sg.jsonl
  datagen seeds import prompts.csv --field prompt --lang-field lang --category-field type --out seeds.jsonl
  datagen seeds import ./my_dataset --field question --split train --plugins search --out search.jsonl
  datagen seeds stats seeds/starter.jsonl
  datagen seeds dedup seeds/*.jsonl --near --out seeds/all.jsonl
  datagen seeds sample seeds/all.jsonl --per-cell 20 --seed 1 --out seeds/sample.jsonl"""

IMPORT_HELP = """Import prompts from JSONL, JSON, CSV/TSV, Parquet or a `datasets` save_to_disk folder.

--field and the other *-field flags take dotted paths with selectors: `instruction`,
`instances.0.input`, `conversations[from=human|user].value`. The prompt is --field plus each
non-empty --append-field, joined by a blank line. Text is normalised (NFC, control characters
removed, whitespace runs collapsed outside code), the language is detected unless mapped, and rows
that cannot be used are rejected with a reason (--rejects FILE) without stopping the import.
Presets: self-instruct (instruction + instances.0.input), alpaca (instruction + input),
moss (user_prompt), sharegpt (first human turn), messages (first user message), dolly."""


def _csv_list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _int_at_least(minimum: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    return parse


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return x


def cmd_import(args: argparse.Namespace) -> int:
    """Import seed prompts from another dataset."""
    from datagen.io import write_jsonl_atomic
    from datagen.seeds.importer import import_seeds, same_source
    from datagen.seeds.record import read_seeds, write_seeds

    out = Path(args.out)
    existing = []
    if args.append and out.exists():
        existing = read_seeds(out)
    result = import_seeds(
        args.src,
        field=args.field,
        preset=args.preset,
        append_fields=args.append_field or None,
        lang_field=args.lang_field,
        category_field=args.category_field,
        id_field=args.id_field,
        plugins_field=args.plugins_field,
        language=args.language,
        category=args.category,
        plugins=args.plugins,
        languages=args.languages,
        prefix=args.prefix,
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        records_path=args.records_path,
        split=args.split,
        # seeds from this very file (by a hash of its full path: v1/train.jsonl is not v2/train.jsonl)
        existing_ids=[s.source_id for s in existing if s.source_id and same_source(s, args.src, args.split)],
    )
    seeds = result.seeds
    if existing:
        have = {s.id for s in existing}
        fresh = [s for s in seeds if s.id not in have]
        result.counts["already_in_out"] = len(seeds) - len(fresh)
        seeds = existing + fresh
    write_seeds(out, seeds)
    if args.rejects:
        write_jsonl_atomic(args.rejects, result.rejects)
    print(result.summary(), file=sys.stderr)
    if result.counts.get("already_in_out"):
        print(f"  {result.counts['already_in_out']} already in {out}", file=sys.stderr)
    if result.rejects and not args.rejects:
        for r in result.rejects[:5]:
            print(f"  {r.source}:{r.row}: {r.reason} {r.detail}".rstrip(), file=sys.stderr)
        if len(result.rejects) > 5:
            print(
                f"  ... {len(result.rejects) - 5} more (write them all with --rejects FILE)", file=sys.stderr
            )
    print(f"wrote {len(seeds)} seeds to {out}", file=sys.stderr)
    return 0


def _read_all(paths: list[str]):
    from datagen.seeds.record import read_seeds

    seeds = []
    for p in paths:
        seeds.extend(read_seeds(p))
    return seeds


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts per category x language x plugin and prompt lengths."""
    from datagen.seeds.curate import format_stats, seed_stats

    stats = seed_stats(_read_all(args.files))
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        print(format_stats(stats))
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    """Drop duplicate prompts (exact after normalisation; --near adds MinHash near-duplicates)."""
    from datagen.errors import SeedFormatError
    from datagen.io import write_jsonl_atomic
    from datagen.seeds.curate import dedup_seeds
    from datagen.seeds.record import write_seeds

    seeds = _read_all(args.files)
    ids: dict[str, int] = {}
    for s in seeds:
        ids[s.id] = ids.get(s.id, 0) + 1
    clashes = [k for k, n in ids.items() if n > 1]
    if clashes:
        raise SeedFormatError(
            f"id {clashes[0]!r} appears in several input files; ids must be unique", field="id"
        )
    result = dedup_seeds(seeds, near=args.near, threshold=args.threshold)
    write_seeds(args.out, result.kept)
    if args.rejects:
        write_jsonl_atomic(
            args.rejects,
            (
                {**s.to_dict(), "reason": f"{kind}_duplicate", "duplicate_of": of}
                for s, kind, of in result.dropped
            ),
        )
    exact = sum(1 for _, k, _ in result.dropped if k == "exact")
    near = len(result.dropped) - exact
    print(
        f"read {len(seeds)}: kept {len(result.kept)}, dropped {exact} exact"
        + (f" and {near} near" if args.near else "")
        + f" duplicates; wrote {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """A balanced sample: at most N seeds per (category, language, plugins) cell."""
    from datagen.seeds.curate import sample_balanced, seed_stats
    from datagen.seeds.record import normalize_category, normalize_language, write_seeds

    seeds = _read_all(args.files)
    if args.categories:  # both sides normalised: `--categories writing_zh` selects `writing` seeds
        wanted = {normalize_category(c) for c in args.categories}
        seeds = [s for s in seeds if s.category and normalize_category(s.category) in wanted]
    if args.languages:
        langs = {normalize_language(x) for x in args.languages}
        seeds = [s for s in seeds if s.language and normalize_language(s.language) in langs]
    sample = sample_balanced(seeds, per_cell=args.per_cell, seed=args.seed)
    write_seeds(args.out, sample)
    cells = len(seed_stats(sample)["cells"])
    print(
        f"sampled {len(sample)} of {len(seeds)} seeds ({cells} cells, at most {args.per_cell} each); "
        f"wrote {args.out}",
        file=sys.stderr,
    )
    return 0


def register_seeds(sub) -> None:
    """Add `seeds import|stats|dedup|sample` to the `datagen` parser."""
    seeds = sub.add_parser(
        "seeds",
        help="import, inspect, deduplicate and sample seed prompts",
        description=__doc__.splitlines()[0],
        epilog=SEEDS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = seeds.add_subparsers(dest="seeds_command", metavar="COMMAND")
    seeds.set_defaults(func=lambda a: (seeds.print_help(), 2)[1])

    imp = ssub.add_parser(
        "import",
        help="import prompts from JSONL/JSON/CSV/Parquet/datasets",
        description=IMPORT_HELP,
        epilog=SEEDS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("src", help="source file or datasets folder")
    imp.add_argument("--out", required=True, help="seed JSONL to write")
    imp.add_argument(
        "--append",
        action="store_true",
        help="add to --out instead of replacing it (seeds already there are kept)",
    )
    imp.add_argument("--rejects", metavar="FILE", help="write rejected rows with their reasons (JSONL)")
    m = imp.add_argument_group("field mapping")
    m.add_argument(
        "--preset",
        choices=["self-instruct", "alpaca", "moss", "sharegpt", "messages", "dolly"],
        help="mapping of a known dataset shape (flags override it)",
    )
    m.add_argument("--field", help="path of the prompt field, e.g. instruction or conversations.0.value")
    m.add_argument(
        "--append-field",
        action="append",
        metavar="PATH",
        help="path appended after a blank line when non-empty (repeatable), e.g. input",
    )
    m.add_argument("--lang-field", metavar="PATH", help="path of a language field (else detected)")
    m.add_argument("--category-field", metavar="PATH", help="path of a category field")
    m.add_argument("--id-field", metavar="PATH", help="path of the row id (kept as source_id)")
    m.add_argument("--plugins-field", metavar="PATH", help="path of a plugin list (or comma string)")
    m.add_argument("--records-path", metavar="PATH", help="JSON object input: path of the record list")
    m.add_argument("--split", help="datasets folder: which split")
    c = imp.add_argument_group("constants and filters")
    c.add_argument("--category", help="category of every row (see seeds/README.md)")
    c.add_argument("--language", help="language of every row (zh, en, ...)")
    c.add_argument(
        "--plugins",
        type=_csv_list,
        metavar="LIST",
        help="plugins of every row, comma-separated: search,calculator,solver,text2image",
    )
    c.add_argument(
        "--languages", type=_csv_list, metavar="LIST", help="keep only these languages, e.g. zh,en"
    )
    c.add_argument("--prefix", help="id prefix (default: the source file name)")
    c.add_argument("--min-chars", type=_int_at_least(1), default=2, help="shortest prompt kept (default 2)")
    c.add_argument(
        "--max-chars", type=_int_at_least(1), default=8000, help="longest prompt kept (default 8000)"
    )
    imp.set_defaults(func=cmd_import)

    st = ssub.add_parser("stats", help="counts per category x language x plugin, lengths")
    st.add_argument("files", nargs="+", help="seed JSONL files")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=cmd_stats)

    dd = ssub.add_parser("dedup", help="drop duplicate prompts (exact; --near for MinHash near-duplicates)")
    dd.add_argument("files", nargs="+", help="seed JSONL files (first occurrence wins, in order)")
    dd.add_argument("--out", required=True, help="deduplicated seed JSONL")
    dd.add_argument("--near", action="store_true", help="also drop near-duplicates (MinHash LSH)")
    dd.add_argument("--threshold", type=_fraction, default=None, help="near-duplicate Jaccard threshold")
    dd.add_argument("--rejects", metavar="FILE", help="write dropped seeds with what they duplicate")
    dd.set_defaults(func=cmd_dedup)

    sa = ssub.add_parser("sample", help="balanced sample per category and language")
    sa.add_argument("files", nargs="+", help="seed JSONL files")
    sa.add_argument("--out", required=True, help="sampled seed JSONL")
    sa.add_argument(
        "--per-cell",
        type=_int_at_least(1),
        required=True,
        metavar="N",
        help="at most N seeds per (category, language, plugins) cell",
    )
    sa.add_argument("--seed", type=int, default=0, help="random seed (same seed, same sample)")
    sa.add_argument("--categories", type=_csv_list, metavar="LIST", help="only these categories")
    sa.add_argument("--languages", type=_csv_list, metavar="LIST", help="only these languages")
    sa.set_defaults(func=cmd_sample)
