"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.paths import absolute_paths, absolute_paths_in_text
from datagen.publish.build import BUILD_FILE, DatasetFolder, _read_json
from datagen.publish.card import split_card
from datagen.publish.rows import SPLITS, _loads, row_to_conversation
from datagen.record import (
    Conversation,
)
from datagen.splits import split_for

MAX_REPORTED_PROBLEMS = 50


# ------------------------------------------------------------------------------------ check


def _structural_problems(conv: Conversation, config: str) -> list[str]:
    """What a published record needs beyond the MOSS format checks: an id, turns, the config of its
    kind, and no MOSS tag inside a command argument or a tool output (it would split the dialogue
    when tokenised; the format checker looks at the messages and thoughts)."""
    from datagen.formats.moss import TAG_RE

    out = []
    if not conv.id.strip():
        out.append("empty id")
    if not conv.turns:
        out.append("no turns")
    if conv.kind != config:
        out.append(f"is a {conv.kind!r} conversation in config {config!r}")
    for i, t in enumerate(conv.turns, start=1):
        texts = [(f"command {c.name}", c.arg) for c in t.calls]
        texts += [(f"result of {r.name}", x) for r in t.results for x in [r.output, *r.snippets]]
        for where, text in texts:
            if m := TAG_RE.search(text):
                out.append(f"turn {i}: {where} contains the MOSS tag {m.group(0)!r}")
    return out


def _format_problems(conv: Conversation) -> list[str]:
    """What `datagen validate` reports for this conversation (`check_conversation`: empty texts,
    tags inside texts, commands against the enabled plugins, results against the calls, Search
    numbering, thoughts against the meta instruction, text that does not parse back). Deviations
    that released MOSS data also has (`Issue.noise`) are accepted, as `datagen validate` does
    without --strict."""
    from datagen.formats.validate import check_conversation

    return [f"MOSS 003: {i.format()}" for i in check_conversation(conv) if not i.noise]


def _row_paths(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Absolute paths in a published row's metadata: lineage, tags, extra (not the dialogue text,
    where a path can be the subject of a conversation)."""
    lineage = dict(row.get("lineage") or {})
    try:
        lineage["params"] = _loads(lineage.get("params"))
        tags, extra = _loads(row.get("tags")), _loads(row.get("extra"))
    except json.JSONDecodeError:
        return  # reported as a malformed row elsewhere
    yield from absolute_paths({"lineage": lineage, "tags": tags, "extra": extra})


def _machine_path_problems(path: Path) -> list[str]:
    """Absolute paths written into the card or the `datagen/` JSON files of a folder."""
    out = []
    card = path / "README.md"
    for n, line in enumerate(card.read_text(encoding="utf-8").splitlines(), start=1):
        out.extend(
            f"{card}:{n}: absolute path {p!r} (publish only file names)" for p in absolute_paths_in_text(line)
        )
    for f in sorted((path / "datagen").glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.append(f"{f}: unreadable: {exc}")
            continue
        out.extend(
            f"{f}: {key} is the absolute path {p!r} (publish only file names)"
            for key, p in absolute_paths(data)
        )
    return out


def check_dataset_folder(folder: str | os.PathLike | DatasetFolder) -> list[str]:
    """Everything wrong with a built folder, as `where: what` lines (empty when it is fit to upload).

    Loads each config and split with `datasets.load_dataset` (into a throwaway cache, exactly as a
    user would, which also verifies the split sizes the card declares), then checks every row:
    it converts back to a Conversation, passes `datagen validate`'s format checks and the structural
    ones, sits in the config of its kind and the split its id hashes to, and its id is unique. No
    absolute filesystem path may appear in the card, the `datagen/` JSON files or a row's lineage,
    tags or extra (the build keeps file names only; see `datagen.paths.portable`). The license is not
    checked here (`publish` refuses to upload without one).
    """
    path = folder.path if isinstance(folder, DatasetFolder) else Path(folder)
    problems: list[str] = []
    card = path / "README.md"
    if not card.exists():
        return [f"{card}: missing dataset card"]
    try:
        meta, _ = split_card(card.read_text(encoding="utf-8"), path=str(card))
    except Exception as exc:  # yaml errors, decoding errors
        return [f"{card}: unreadable card metadata: {exc}"]
    configs = meta.get("configs") or []
    if not configs:
        return [f"{card}: no `configs` in the card metadata"]
    problems.extend(_machine_path_problems(path))
    build: dict[str, Any] = {}
    if (path / BUILD_FILE).exists():
        build = _read_json(path / BUILD_FILE)
    else:
        problems.append(f"{path / BUILD_FILE}: missing (was this folder built by datagen?)")
    fraction = build.get("validation_fraction")
    expected = build.get("counts") or {}
    infos = meta.get("dataset_info") or []
    declared = {
        (info.get("config_name", "default"), s.get("name")): s.get("num_examples")
        for info in (infos if isinstance(infos, list) else [infos])
        for s in info.get("splits") or []
    }

    import datasets

    from datagen.publish.preference import CONFIG as PREFERENCE
    from datagen.publish.preference import check_preference_split

    seen: dict[str, str] = {}
    seen_pairs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.check-") as cache:
        for entry in configs:
            config = entry.get("config_name")
            for df in entry.get("data_files") or []:
                split, pattern = df.get("split"), df.get("path")
                where = f"{config}/{split}"
                if not list(path.glob(pattern)):
                    problems.append(f"{where}: no files match {pattern}")
                    continue
                try:
                    # split sizes are compared below, with a clearer message than datasets' own check
                    ds = datasets.load_dataset(
                        str(path), name=config, split=split, cache_dir=cache, verification_mode="no_checks"
                    )
                except Exception as exc:
                    cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
                    problems.append(f"{where}: load_dataset failed: {type(exc).__name__}: {exc}{cause}")
                    continue
                for source, want in (
                    ("the card's dataset_info", declared.get((config, split))),
                    (BUILD_FILE, (expected.get(config) or {}).get(split)),
                ):
                    if want is not None and want != ds.num_rows:
                        problems.append(f"{where}: {ds.num_rows} rows, {source} says {want}")
                if config == PREFERENCE:  # pairs, not conversations: their own row checks
                    problems.extend(check_preference_split(ds, where, fraction, seen_pairs))
                    del ds
                    continue
                for i, row in enumerate(ds):
                    rid = row.get("id")
                    at = f"{where} row {i} (id {rid!r})"
                    try:
                        conv = row_to_conversation(row)
                    except (KeyError, TypeError, ValueError) as exc:
                        problems.append(f"{at}: not a conversation record: {type(exc).__name__}: {exc}")
                        continue
                    problems.extend(f"{at}: {p}" for p in _structural_problems(conv, config))
                    problems.extend(
                        f"{at}: {key} is the absolute path {p!r} (publish only file names)"
                        for key, p in _row_paths(row)
                    )
                    problems.extend(f"{at}: {p}" for p in _format_problems(conv))
                    if fraction is not None and split in SPLITS and split_for(conv.id, fraction) != split:
                        problems.append(f"{at}: belongs in {split_for(conv.id, fraction)!r} by its id hash")
                    if conv.id in seen:
                        problems.append(f"{at}: duplicate id (also in {seen[conv.id]})")
                    else:
                        seen[conv.id] = where
                del ds
    if len(problems) > MAX_REPORTED_PROBLEMS:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        problems = problems[:MAX_REPORTED_PROBLEMS] + [f"... and {more} more"]
    return problems
