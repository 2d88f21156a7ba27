"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from datagen.errors import InputError, PublishError
from datagen.publish.build import (
    BUILD_FILE,
    DEFAULT_SHARD_ROWS,
    DEFAULT_VALIDATION_FRACTION,
    _log,
    _read_json,
    _setting,
    build_dataset_folder,
)
from datagen.publish.card import split_card
from datagen.publish.hub import publish
from datagen.publish.verify import check_dataset_folder

# ------------------------------------------------------------------------------------ CLI


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def folder_tree(path: str | os.PathLike) -> str:
    """The folder as an indented tree with file sizes (and row counts for parquet shards)."""
    root = Path(path)
    rows: dict[str, int] = {}
    if (root / BUILD_FILE).exists():
        rows = {k: v.get("rows") for k, v in (_read_json(root / BUILD_FILE).get("files") or {}).items()}
    lines = [f"{root.name}/"]

    def walk(d: Path, prefix: str) -> None:
        entries = sorted(
            (p for p in d.iterdir() if not p.name.startswith(".")), key=lambda p: (p.is_dir(), p.name)
        )
        for i, p in enumerate(entries):
            last = i == len(entries) - 1
            branch = "└── " if last else "├── "
            if p.is_dir():
                lines.append(f"{prefix}{branch}{p.name}/")
                walk(p, prefix + ("    " if last else "│   "))
            else:
                rel = p.relative_to(root).as_posix()
                n = rows.get(rel)
                extra = "" if n is None else f", {n:,} row{'s' if n != 1 else ''}"
                lines.append(f"{prefix}{branch}{p.name}  ({_human_size(p.stat().st_size)}{extra})")

    walk(root, "")
    return "\n".join(lines)


EXAMPLES = """\
examples:
  datagen publish runs/demo --dry-run                         build + check, show the tree and the card
  datagen publish runs/demo --repo-id my-org/moss-demo        upload (license from publish.license)
  datagen publish runs/demo --repo-id my-org/moss-demo --private --license apache-2.0
  datagen publish convs.jsonl --license cc-by-4.0 --repo-id me/convs --out /tmp/convs-ds
  datagen publish runs/demo/dataset --repo-id my-org/moss-demo  upload a folder built earlier

The token comes from HF_TOKEN or `hf auth login`; datagen never writes it to disk.
"""


def register(sub) -> None:
    """Add `datagen publish`."""
    p = sub.add_parser(
        "publish",
        help="Build the Hub dataset folder (parquet + card) of a run, check it, and upload it.",
        description="Build a Hugging Face dataset folder from a run directory (or a conversations file or\n"
        "folder): parquet shards per config (hhh, plugin) and split (train, validation), a\n"
        "dataset card written from the run, and provenance files. Check it by loading it with\n"
        "datasets.load_dataset and validating every record, then upload it in one commit.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="RUN_DIR",
        help="a run directory, a conversations file or folder, or a "
        "dataset folder built earlier (has datagen/build.json)",
    )
    p.add_argument("--repo-id", metavar="ORG/NAME", help="the Hub dataset repo (default: publish.repo_id)")
    p.add_argument(
        "--license",
        help="license id for the card, e.g. apache-2.0, cc-by-4.0 (default: "
        "publish.license; required to upload)",
    )
    p.add_argument(
        "--private",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="create the repo private (default: publish.private)",
    )
    p.add_argument("--pretty-name", help="the card's title (default: publish.pretty_name or the repo name)")
    p.add_argument("--out", metavar="DIR", help="where to build the folder (default: RUN_DIR/dataset)")
    p.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help=f"share of dialogues in validation (default: dataset.validation_fraction or "
        f"{DEFAULT_VALIDATION_FRACTION})",
    )
    p.add_argument(
        "--shard-rows",
        type=int,
        default=DEFAULT_SHARD_ROWS,
        metavar="N",
        help="rows per parquet shard (default: %(default)s)",
    )
    p.add_argument(
        "--moss-jsonl",
        action="store_true",
        help="also ship moss/train.jsonl and moss/val.jsonl (MOSS SFT records for finetune_moss.py)",
    )
    p.add_argument("--commit-message", help="default: names the run and its fingerprint")
    p.add_argument(
        "--card-lines",
        type=int,
        default=40,
        metavar="N",
        help="card lines --dry-run prints (default: %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="build and check the folder, upload nothing")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args: argparse.Namespace) -> int:
    source = Path(args.source)
    prebuilt = source.is_dir() and (source / BUILD_FILE).exists() and not (source / "manifest.json").exists()
    manifest = (
        _read_json(source / "manifest.json")
        if source.is_dir() and (source / "manifest.json").exists()
        else None
    )
    repo_id = args.repo_id or _setting(manifest, "publish", "repo_id")
    private = args.private if args.private is not None else _setting(manifest, "publish", "private")
    if prebuilt:
        if args.license or args.validation_fraction is not None or args.moss_jsonl or args.pretty_name:
            raise InputError(
                "this folder is already built; pass --license etc. when building it from the run",
                path=str(source),
            )
        folder_path = source
        meta, _ = split_card(
            (source / "README.md").read_text(encoding="utf-8"), path=str(source / "README.md")
        )
        license = meta.get("license")
        build_warnings: list[str] = []
    else:
        _log(f"building the dataset folder from {source}")
        built = build_dataset_folder(
            source,
            args.out,
            license=args.license,
            repo_id=repo_id,
            pretty_name=args.pretty_name,
            validation_fraction=args.validation_fraction,
            shard_rows=args.shard_rows,
            moss_jsonl=args.moss_jsonl,
        )
        folder_path, license, build_warnings = built.path, built.license, built.warnings
        counts = ", ".join(
            f"{c} " + "/".join(f"{n} {s}" for s, n in splits.items()) for c, splits in built.counts.items()
        )
        _log(f"built {folder_path}: {built.rows} rows ({counts})")
    for w in build_warnings:
        if not w.startswith("no license"):
            _log(f"warning: {w}")
    if not license:
        print(
            "\n"
            + "!" * 78
            + "\n!! NO LICENSE: the card has no license. Set publish.license in the run config\n"
            "!! or pass --license; `datagen publish` refuses to upload without one.\n" + "!" * 78 + "\n",
            file=sys.stderr,
        )

    if args.dry_run:
        print(folder_tree(folder_path))
        print()
        card_lines = (folder_path / "README.md").read_text(encoding="utf-8").splitlines()
        n = max(1, args.card_lines)
        print(f"README.md (first {min(n, len(card_lines))} of {len(card_lines)} lines):")
        print("\n".join(card_lines[:n]))
        print()
        _log("checking the folder (load_dataset + validate every record)")
        problems = check_dataset_folder(folder_path)
        if problems:
            print(f"check: FAILED, {len(problems)} problem(s); an upload would be refused:")
            for pr in problems:
                print(f"  {pr}")
            return 1
        target = f" to {repo_id}" if repo_id else ""
        verdict = "passed" if license else "passed, but an upload would be refused: no license"
        print(f"check: {verdict}. Dry run: nothing uploaded{target}.")
        return 0

    if not repo_id:
        raise InputError("no repo id: pass --repo-id ORG/NAME or set publish.repo_id in the run config")
    if not license:
        raise PublishError(
            f"{folder_path}: refusing to upload a dataset without a license. Set `publish.license` "
            "in the run config or pass --license (e.g. --license cc-by-4.0); datagen does not pick one"
        )
    url = publish(folder_path, repo_id, private=private, commit_message=args.commit_message)
    print(url)
    return 0
