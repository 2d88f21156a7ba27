"""Publish a run: build a Hub dataset folder (parquet shards + card), check it, upload it.

    datagen publish runs/demo --repo-id my-org/moss-demo --dry-run     # build + check, print tree and card
    datagen publish runs/demo --repo-id my-org/moss-demo --private     # build + check + upload, print URL

The folder (default RUN_DIR/dataset) holds:

    README.md                                   card: YAML metadata + a body written from the run
    data/{config}/{split}-00000-of-0000N.parquet  configs `hhh` and `plugin`, splits `train`/`validation`;
                                                `preference` when the run made pairs (publish/preference.py)
    datagen/build.json                          how the folder was built (source, counts, files)
    datagen/manifest.json, datagen/funnel.json  the run's own records, secrets removed (run dirs only)
    moss/train.jsonl, moss/val.jsonl            MOSS SFT records for finetune_moss.py (`--moss-jsonl`)

A row's split is decided by a hash of its conversation id (`split_for`), so rebuilding never moves a
dialogue between train and validation. Each row keeps the whole MOSS record (`turns` as a nested
feature), so `row_to_conversation(row)` renders back to the identical MOSS text; the build checks
that for every row. `check_dataset_folder` loads the folder with `datasets.load_dataset` and validates
every record; `publish` refuses a folder that fails, or one without a license, and otherwise uploads
it in one commit. The token comes from HF_TOKEN or the user's `hf auth login`; datagen never writes it.

Nothing published names a path of the building machine: the build keeps only the file name of an
absolute path in a row's lineage (teacher model included: vLLM serves a model under its path), tags
and extra (`make_portable`) and in the manifest copy (`portable`), and the check reports any
absolute path left in the card, the `datagen/` files, or a row's lineage, tags or extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError, PublishError
from datagen.io import write_json_atomic
from datagen.paths import make_portable, portable
from datagen.publish.card import CardContext, SentSampling, render_card
from datagen.publish.card_judge import read_judge_report
from datagen.publish.preference import CONFIG as PREFERENCE
from datagen.publish.preference import (
    PreferenceStats,
    has_pairs,
    iter_pairs,
    pair_to_row,
    preference_features,
    read_stage_stats,
)
from datagen.publish.redact import normalize_license, redact
from datagen.publish.rows import (
    CONFIGS,
    SPLITS,
    _formats,
    _json,
    conversation_to_row,
    dataset_features,
    row_to_conversation,
    score_types,
)
from datagen.publish.stats import DatasetStats
from datagen.record import (
    Conversation,
)
from datagen.splits import split_for
from datagen.versions import now

#: File name used for each split in the `moss/` extras (MOSS's finetune script reads these names).
MOSS_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl"}
DEFAULT_VALIDATION_FRACTION = 0.05
DEFAULT_SHARD_ROWS = 50_000
ROW_GROUP_ROWS = 1_000
BUILD_FILE = "datagen/build.json"
#: A run directory's teacher journal (see `datagen.teacher.journal`).
JOURNAL_FILE = "journal.sqlite"
#: A run directory's review decisions (see `datagen.review.decisions`); `datagen run` applies them.
REVIEW_FILE = "review.jsonl"
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def _log(msg: str) -> None:
    print(f"[datagen publish] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ source


@dataclass(slots=True)
class Source:
    """Where the conversations come from: a run directory (manifest + funnel + final.jsonl) or plain
    conversation files."""

    path: Path
    files: list[Path]
    manifest: dict[str, Any] | None = None
    funnel: dict[str, Any] | None = None

    @property
    def is_run(self) -> bool:
        return self.manifest is not None

    def conversations(self) -> Iterator[Conversation]:
        """Stream the conversations (any format `datagen.formats.reader` knows; folders recursively)."""
        from datagen.formats.reader import read_conversations

        yield from read_conversations([str(p) for p in self.files])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("must be a JSON object", path=str(path))
    return data


def open_source(path: str | os.PathLike) -> Source:
    """A run directory (it has `manifest.json`), a conversations file, or a folder of them (read
    recursively, any format datagen knows)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    if path.is_dir() and (path / "manifest.json").exists():
        final = path / "final.jsonl"
        if not final.exists():
            raise InputError(
                f"no final.jsonl: the run has not finished (see `datagen status {path}`)", path=str(path)
            )
        funnel = _read_json(path / "funnel.json") if (path / "funnel.json").exists() else None
        return Source(path=path, files=[final], manifest=_read_json(path / "manifest.json"), funnel=funnel)
    return Source(path=path, files=[path])


def unapplied_review(run_dir: str | os.PathLike) -> bool:
    """True when a run directory's `review.jsonl` changed after its `final.jsonl` was written: the
    reviewer's latest decisions are not in the data until `datagen run` applies them."""
    review, final = Path(run_dir) / REVIEW_FILE, Path(run_dir) / "final.jsonl"
    try:
        return review.stat().st_mtime_ns > final.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def default_out_dir(source: str | os.PathLike) -> Path:
    """RUN_DIR/dataset for a run directory; `{name}-dataset` beside a conversations file or folder
    (never inside an input folder, whose files are all read)."""
    p = Path(source)
    if p.is_dir() and (p / "manifest.json").exists():
        return p / "dataset"
    return p.parent / f"{p.stem if p.is_file() else p.name}-dataset"


def journal_sampling(path: str | os.PathLike) -> list[SentSampling] | None:
    """The sampling parameters a run's journal shows were sent: one entry per prompt template, model
    and parameter set, counting answered calls; ordered by template, most calls first. Paths among
    the values keep only their file name. None when there is no readable journal at `path`.

    Reads every row (the parameters sit inside each journaled request), read-only."""
    path = Path(path)
    if not path.is_file():
        return None
    from urllib.request import pathname2url

    query = (
        "SELECT json_extract(request, '$.template_version'), model, json_extract(request, '$.params'), "
        "COUNT(*) FROM calls WHERE status = 'ok' GROUP BY 1, 2, 3"
    )
    try:
        con = sqlite3.connect(f"file:{pathname2url(str(path.resolve()))}?mode=ro", uri=True)
        try:
            rows = con.execute(query).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        _log(f"warning: {path.name}: cannot read the journal ({exc}); the card lists no sent parameters")
        return None
    merged: dict[tuple[str, str, str], int] = {}
    for template, model, params, calls in rows:
        params = portable(json.loads(params) if params else {})
        if "response_format" in params:
            params["response_format"] = _format_label(params["response_format"])
        key = (template or "(none)", portable(model or "(unknown)"), _json(params))
        merged[key] = merged.get(key, 0) + int(calls)
    ordered = sorted(merged.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1:]))
    return [SentSampling(template=t, model=m, params=json.loads(p), calls=n) for (t, m, p), n in ordered]


def _format_label(fmt: Any) -> Any:
    """A short name for a structured-output request: the judge's schemas differ with every set of
    graded turns, and the card wants one row per kind of request, not one per schema."""
    if not isinstance(fmt, dict):
        return fmt
    if fmt.get("type") == "json_schema":
        name = (fmt.get("json_schema") or {}).get("name")
        return f"json_schema:{name}" if name else "json_schema"
    if fmt.get("type") == "json_object" and "schema" in fmt:
        return "json_object+schema"
    return fmt.get("type", fmt)


# ------------------------------------------------------------------------------------ build


@dataclass(slots=True)
class DatasetFolder:
    """A built dataset folder: where it is, its row counts and files, and what the build noticed."""

    path: Path
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    files: list[str]  # relative paths, sorted
    license: str | None
    repo_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    pairs: dict[str, int] = field(default_factory=dict)  # preference config: split -> rows

    @property
    def rows(self) -> int:
        return sum(n for splits in self.counts.values() for n in splits.values())

    @property
    def card_path(self) -> Path:
        return self.path / "README.md"


class _ShardWriter:
    """Parquet shards of one (config, split), rolled every `shard_rows` rows, row groups of
    ROW_GROUP_ROWS. Written under temporary names; `finish` gives them their `-of-N` names."""

    def __init__(self, directory: Path, split: str, features: Any, shard_rows: int):
        self.directory = directory
        self.split = split
        # No `huggingface` features metadata: datasets 3.x cannot read the 4.x feature names in it
        # (`List`), and plain Arrow types say all there is to say.
        self.schema = features.arrow_schema.remove_metadata()
        self.shard_rows = shard_rows
        self.buffer: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.shard_counts: list[int] = []
        self.nbytes = 0
        self._writer = None
        self._in_shard = 0

    def write(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= ROW_GROUP_ROWS or self._in_shard + len(self.buffer) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        while self.buffer:
            if self._writer is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f".{self.split}-{len(self.paths):05d}.parquet.tmp"
                self._writer = pq.ParquetWriter(path, self.schema)
                self.paths.append(path)
                self.shard_counts.append(0)
                self._in_shard = 0
            take = min(len(self.buffer), self.shard_rows - self._in_shard)
            table = pa.Table.from_pylist(self.buffer[:take], schema=self.schema)
            self.buffer = self.buffer[take:]
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            self.nbytes += table.nbytes
            self._in_shard += take
            self.shard_counts[-1] += take
            if self._in_shard >= self.shard_rows:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the open shard (complete or not); `finish` names the shards afterwards."""
        if exc[0] is None:
            self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> list[tuple[Path, int]]:
        """Give the closed shards their final `{split}-NNNNN-of-NNNNN.parquet` names."""
        self.__exit__(None, None, None)
        n = len(self.paths)
        out = []
        for i, (tmp, rows) in enumerate(zip(self.paths, self.shard_counts, strict=True)):
            final = self.directory / f"{self.split}-{i:05d}-of-{n:05d}.parquet"
            os.replace(tmp, final)
            out.append((final, rows))
        return out


def _setting(manifest: dict[str, Any] | None, *keys: str) -> Any:
    node: Any = (manifest or {}).get("config") or {}
    for k in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(k)
    return node


def _prepare_out_dir(out_dir: Path) -> Path:
    """A fresh staging folder beside `out_dir`. An existing `out_dir` is replaced only when datagen
    built it, so a mistyped --out never deletes someone's folder."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PublishError(f"{out_dir}: exists and is not a folder; choose another --out")
        if any(out_dir.iterdir()) and not (out_dir / BUILD_FILE).exists():
            raise PublishError(
                f"{out_dir}: exists and was not built by datagen (no {BUILD_FILE}); "
                "refusing to replace it, choose another --out"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-"))


def _swap_in(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "folder")
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def build_dataset_folder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    license: str | None = None,
    repo_id: str | None = None,
    pretty_name: str | None = None,
    validation_fraction: float | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    moss_jsonl: bool = False,
    preference: bool | None = None,
) -> DatasetFolder:
    """Build the Hub dataset folder for a run directory (or a conversations file/folder).

    Arguments left None come from the run's manifest (`publish.license`, `publish.repo_id`,
    `publish.pretty_name`, `dataset.validation_fraction`). Streams the conversations twice, holding
    at most a row group per shard in memory: once for the score columns, then each row goes to its
    config's and split's parquet shard, into the card's statistics and (with `moss_jsonl`) into
    `moss/train.jsonl`/`val.jsonl`. Every row is checked to render back to the identical MOSS text.
    `preference` adds the `preference` config from the run's pairs (`preference/pairs.jsonl` and a
    reviewer's `review/pairs.jsonl`); None: when the preference stage left pairs.
    The folder is built beside `out_dir` and swapped in when complete; a failed build leaves the
    previous folder untouched.
    """
    moss, _ = _formats()
    from datagen import __version__

    src = open_source(source)
    if src.is_run and unapplied_review(src.path):
        _log(
            f"warning: {REVIEW_FILE} has decisions newer than final.jsonl; rerun `datagen run` to apply them"
        )
    out = Path(out_dir) if out_dir is not None else default_out_dir(source)
    if not src.is_run and src.path.is_dir() and out.resolve().is_relative_to(src.path.resolve()):
        raise InputError(
            f"the output folder {out} is inside the input folder, whose files are all read as "
            "conversations; choose an --out outside it",
            path=str(src.path),
        )
    try:
        license, license_warnings = normalize_license(license or _setting(src.manifest, "publish", "license"))
    except ValueError as exc:
        raise InputError(str(exc), field="publish.license") from None
    repo_id = repo_id or _setting(src.manifest, "publish", "repo_id") or None
    pretty_name = pretty_name or _setting(src.manifest, "publish", "pretty_name") or None
    if validation_fraction is None:
        validation_fraction = _setting(src.manifest, "dataset", "validation_fraction")
    if validation_fraction is None:
        validation_fraction = DEFAULT_VALIDATION_FRACTION
    if not 0 <= float(validation_fraction) < 1:
        raise InputError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    if shard_rows < 1:
        raise InputError(f"shard rows must be at least 1, got {shard_rows}")
    if repo_id is not None and not REPO_ID_RE.match(repo_id):
        raise InputError(f"repo id must look like ORG/NAME, got {repo_id!r}")

    scores = score_types(src.conversations())  # a first pass: the parquet schema needs every score key
    features = dataset_features(scores)
    stats = DatasetStats()
    staging = _prepare_out_dir(out)
    warnings: list[str] = list(license_warnings)
    try:
        writers: dict[tuple[str, str], _ShardWriter] = {}
        jsonl: dict[str, Any] = {}
        seen: set[str] = set()
        duplicates = 0
        with ExitStack() as open_files:
            for conv in src.conversations():
                make_portable(conv)  # before the card's statistics, so its model table is portable too
                if conv.id in seen:
                    duplicates += 1
                seen.add(conv.id)
                config, split = conv.kind, split_for(conv.id, validation_fraction)
                row = conversation_to_row(conv, scores)
                if moss.render_text(row_to_conversation(row)) != moss.render_text(conv):
                    raise PublishError(
                        f"conversation {conv.id!r}: its parquet row does not render back to the "
                        "same MOSS text (a datagen bug; please report it with this conversation)"
                    )
                if (config, split) not in writers:
                    writer = _ShardWriter(staging / "data" / config, split, features, shard_rows)
                    writers[(config, split)] = open_files.enter_context(writer)
                writers[(config, split)].write(row)
                stats.add(conv, config, split)
                if moss_jsonl:
                    if split not in jsonl:
                        (staging / "moss").mkdir(exist_ok=True)
                        jsonl[split] = open_files.enter_context(
                            open(staging / "moss" / MOSS_SPLIT_FILES[split], "w", encoding="utf-8")
                        )
                    jsonl[split].write(moss.dumps_sft_line(moss.to_sft(conv)) + "\n")
        if stats.rows == 0:
            raise PublishError(f"{src.path}: no conversations to publish")
        if preference is None:
            preference = src.is_run and has_pairs(src.path)
        pair_stats = (
            _write_pairs(src, staging, shard_rows, float(validation_fraction), writers)
            if preference
            else None
        )
        if duplicates:
            warnings.append(
                f"{duplicates} conversation id(s) appear more than once; `check` will refuse the folder"
            )

        files_info: dict[str, dict[str, Any]] = {}
        split_bytes: dict[tuple[str, str], tuple[int, int]] = {}
        for (config, split), writer in writers.items():
            shards = writer.finish()
            size = 0
            for path, rows in shards:
                rel = path.relative_to(staging).as_posix()
                files_info[rel] = {"rows": rows, "bytes": path.stat().st_size}
                size += path.stat().st_size
            split_bytes[(config, split)] = (writer.nbytes, size)

        configs = [c for c in CONFIGS if c in stats.splits] + sorted(set(stats.splits) - set(CONFIGS))
        data_files = {c: {s: f"data/{c}/{s}-*" for s in SPLITS if stats.splits[c].get(s)} for c in configs}
        splits = {c: stats.splits[c] for c in configs}
        features_of = dict.fromkeys(configs, features)
        if pair_stats is not None and pair_stats.rows:
            data_files[PREFERENCE] = {
                s: f"data/{PREFERENCE}/{s}-*" for s in SPLITS if pair_stats.splits.get(s)
            }
            splits[PREFERENCE] = pair_stats.splits
            features_of[PREFERENCE] = preference_features()
        for c in configs:
            if not stats.splits[c].get("validation"):
                warnings.append(
                    f"config {c!r} has no validation rows (validation fraction {validation_fraction})"
                )

        # Secrets out, and no path of this machine: the card and the manifest copy are published.
        manifest = portable(redact(src.manifest)) if src.manifest is not None else None
        funnel = portable(src.funnel) if src.funnel is not None else None
        ctx = CardContext(
            stats=stats,
            license=license,
            repo_id=repo_id,
            pretty_name=pretty_name,
            manifest=manifest,
            funnel=funnel,
            source=src.path.name,
            validation_fraction=float(validation_fraction),
            data_files=data_files,
            dataset_info=_dataset_infos(features_of, splits, split_bytes),
            extras=[f"moss/{MOSS_SPLIT_FILES[s]}" for s in jsonl],
            datagen_version=__version__,
            sent=journal_sampling(src.path / JOURNAL_FILE) if src.is_run else None,
            preference=pair_stats if pair_stats is not None and pair_stats.rows else None,
            judge=portable(read_judge_report(src.path, src.manifest)) if src.is_run else None,
        )
        (staging / "README.md").write_text(render_card(ctx), encoding="utf-8")
        if manifest is not None:
            write_json_atomic(staging / "datagen" / "manifest.json", manifest)
        if funnel is not None:
            write_json_atomic(staging / "datagen" / "funnel.json", funnel)
        counts = {c: {s: stats.splits[c][s] for s in SPLITS if stats.splits[c].get(s)} for c in configs}
        build = {
            "datagen": __version__,
            "built": now(),
            "source": src.path.name,
            "run": {"name": src.manifest.get("name"), "fingerprint": src.manifest.get("fingerprint")}
            if src.manifest
            else None,
            "repo_id": repo_id,
            "license": license,
            "validation_fraction": float(validation_fraction),
            "split_rule": "validation if xxh64(utf-8 id) / 2**64 < validation_fraction",
            "counts": counts,
            "files": files_info,
            "extras": ctx.extras,
        }
        if ctx.preference:  # absent, not null, when there are no pairs: older folders stay identical
            build["preference"] = {"counts": dict(pair_stats.splits)}
        write_json_atomic(staging / BUILD_FILE, build)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    if not license:
        warnings.append(
            "no license: set publish.license in the run config or pass --license; "
            "`datagen publish` will not upload without one"
        )
    return DatasetFolder(
        path=out,
        counts=counts,
        files=files,
        license=license,
        repo_id=repo_id,
        warnings=warnings,
        pairs=dict(pair_stats.splits) if pair_stats is not None else {},
    )


def _write_pairs(
    src: Source, staging: Path, shard_rows: int, fraction: float, writers: dict[tuple[str, str], _ShardWriter]
) -> PreferenceStats:
    """Write the run's preference pairs as the `preference` config (shards registered in
    `writers`, closed); returns what the card says about them."""
    pair_stats = PreferenceStats(stage=read_stage_stats(src.path))
    features = preference_features()
    seen: set[str] = set()
    with ExitStack() as open_files:
        for pair in iter_pairs(src.path):
            row = pair_to_row(pair)
            if row["id"] in seen:
                continue  # a reviewer's pair listed twice; the first wins
            seen.add(row["id"])
            split = split_for(row["source_id"], fraction)
            if (PREFERENCE, split) not in writers:
                writers[(PREFERENCE, split)] = open_files.enter_context(
                    _ShardWriter(staging / "data" / PREFERENCE, split, features, shard_rows)
                )
            writers[(PREFERENCE, split)].write(row)
            pair_stats.add(row, split)
    return pair_stats


def _dataset_infos(
    features: dict[str, Any], splits: dict[str, Any], split_bytes: dict[tuple[str, str], tuple[int, int]]
) -> Any:
    """`dataset_info` for the card YAML: each config's features and per-split sizes, which
    `load_dataset` verifies."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict

    infos = DatasetInfosDict()
    for config, counter in splits.items():
        split_dict = SplitDict()
        download = dataset = 0
        for split in SPLITS:
            n = counter.get(split, 0)
            if not n:
                continue
            nbytes, size = split_bytes[(config, split)]
            split_dict.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=n))
            download += size
            dataset += nbytes
        infos[config] = DatasetInfo(
            config_name=config,
            features=features[config],
            splits=split_dict,
            download_size=download,
            dataset_size=dataset,
        )
    return infos
