"""Publish a run: build a Hub dataset folder (parquet shards + card), check it, upload it.

    datagen publish runs/demo --repo-id my-org/moss-demo --dry-run     # build + check, print tree and card
    datagen publish runs/demo --repo-id my-org/moss-demo --private     # build + check + upload, print URL

The folder (default RUN_DIR/dataset) holds:

    README.md                                   card: YAML metadata + a body written from the run
    data/{config}/{split}-00000-of-0000N.parquet  configs `hhh` and `plugin`, splits `train`/`validation`
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
and extra (`make_portable`) and in the manifest copy (`portable_paths`), and the check reports any
absolute path left in the card, the `datagen/` files, or a row's lineage, tags or extra.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import xxhash

from datagen.card import (
    NOT_A_LICENSE,
    CardContext,
    DatasetStats,
    SentSampling,
    normalize_license,
    redact,
    render_card,
    split_card,
)
from datagen.errors import InputError, PublishError
from datagen.manifest import now, write_json_atomic
from datagen.record import (
    Conversation,
    Lineage,
    ToolCall,
    ToolResult,
    Turn,
    Usage,
)

#: Configs in the order cards list them; a conversation's config is its `kind`.
CONFIGS = ("hhh", "plugin")
SPLITS = ("train", "validation")
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
MAX_REPORTED_PROBLEMS = 50


def _log(msg: str) -> None:
    print(f"[datagen publish] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ paths

_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\[^\\]+\\)")
#: An absolute POSIX or Windows path inside free text (a card line): two or more components, not part
#: of a URL or of a relative path (`data/hhh/train-*`).
_PATH_IN_TEXT = re.compile(r"(?<![\w:/.~%-])(?:/[\w.@+-]+){2,}/?|(?<![\w])[A-Za-z]:\\(?:[\w .@+-]+\\)+[\w .@+-]*")


def is_absolute_path(value: Any) -> bool:
    """True for a one-line string that is an absolute filesystem path (`/home/ann/seeds.jsonl`,
    `~/data.jsonl`, `C:\\data\\x.jsonl`, `file:///...`); URLs, relative paths and one-component
    paths (`/`, `/v1`) are not."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return False
    text = value[len("file://"):] if value.startswith("file://") else value
    if "://" in text:
        return False
    if text.startswith("~/") or _WINDOWS_ABS.match(text):
        return True
    # two components at least: `/v1` or `/` alone say nothing about the machine (and may be an API path)
    return text.startswith("/") and len(PurePosixPath(text).parts) > 2


def portable_path(value: str) -> str:
    """The file name of an absolute path (`/home/ann/data/seeds.jsonl` -> `seeds.jsonl`); any other
    value unchanged."""
    if not is_absolute_path(value):
        return value
    text = value[len("file://"):] if value.startswith("file://") else value
    name = PureWindowsPath(text).name if _WINDOWS_ABS.match(text) else PurePosixPath(text).name
    return name or value


def portable_paths(value: Any) -> Any:
    """A copy of a JSON-like value with every absolute path string replaced by its file name."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    return portable_path(value) if isinstance(value, str) else value


def make_portable(conv: Conversation) -> Conversation:
    """Keep only file names of absolute paths in the metadata a published row carries and the check
    reads (`_row_paths`): the whole lineage (a teacher model served under its path, as vLLM does by
    default, a seed source file, a path among the params), tags and extra. The dialogue text is left
    alone. Changes `conv` in place and returns it."""
    conv.lineage = Lineage.from_dict(portable_paths(conv.lineage.to_dict()))
    conv.tags = portable_paths(conv.tags)
    conv.extra = portable_paths(conv.extra)
    return conv


def absolute_paths(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, path) for every absolute path string in a JSON-like value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from absolute_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from absolute_paths(v, f"{where}[{i}]")
    elif is_absolute_path(value):
        yield where, value


def absolute_paths_in_text(text: str) -> list[str]:
    """Absolute paths written in free text (a card body), in order of appearance, each once."""
    return list(dict.fromkeys(m.group(0) for m in _PATH_IN_TEXT.finditer(text)))


# ------------------------------------------------------------------------------------ rows


def split_for(conversation_id: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of ids (xxh64 of the UTF-8 id), else `train`."""
    if validation_fraction <= 0:
        return "train"
    h = xxhash.xxh64_intdigest(conversation_id.encode("utf-8"))
    return "validation" if h / 2**64 < validation_fraction else "train"


#: Turn.raw keys (MOSS SFT segment names) <-> the `raw` struct's column names.
RAW_FIELDS = {"Human": "human", "Inner Thoughts": "inner_thoughts", "Commands": "commands",
              "Tool Responses": "tool_responses", "MOSS": "moss"}


def score_types(convs: Iterable[Conversation]) -> dict[str, str]:
    """`scores` key -> `float64` (every value a number) or `string` (anything else, stored as JSON),
    over all conversations, keys sorted. Decides the typed `scores` struct of the parquet files."""
    kinds: dict[str, str] = {}
    for conv in convs:
        for key, value in conv.scores.items():
            numeric = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            if not numeric or kinds.get(key) == "string":
                kinds[key] = "string"
            else:
                kinds.setdefault(key, "float64")
    return dict(sorted(kinds.items()))


#: The keys an OpenAI message of `to_messages(metadata=False)` may have, and those of one tool call:
#: the `messages` column is a list of structs with exactly these fields (null where a message has
#: no such key).
MESSAGE_FIELDS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id")
TOOL_CALL_FIELDS = ("id", "type", "function")
FUNCTION_FIELDS = ("name", "arguments")


def dataset_features(scores: dict[str, str] | None = None):
    """The `datasets.Features` of every config: the MOSS record (turns as a nested feature), the
    OpenAI messages (a list of structs, see `MESSAGE_FIELDS`; a tool call's `arguments` is the JSON
    string of the OpenAI wire form) and tool schemas (JSON strings),
    lineage, usage, and a typed `scores` struct (see `score_types`; left out when no row has scores).

    Only plain Arrow types (strings, numbers, bools, lists, structs): `datasets` 3.6 to 5.x and any
    parquet reader load them as they are (the `Json` feature needs `datasets>=4.7`). Free-form parts
    (tool schemas, `lineage.params`, `tags`, `extra`, non-numeric scores) are JSON strings, which also
    give back exactly what was published (0.7 stays 0.7)."""
    from datasets import Features, List, Value

    string = Value("string")
    call = {"name": string, "arg": string}
    result = {"name": string, "arg": string, "ok": Value("bool"), "output": string, "snippets": List(string),
              "first_index": Value("int32")}
    turn = {"human": string, "thoughts": string, "calls": List(call), "results": List(result), "assistant": string,
            "flags": List(string), "raw": {name: string for name in RAW_FIELDS.values()}}
    tool_call = {"id": string, "type": string, "function": {name: string for name in FUNCTION_FIELDS}}
    message = {"role": string, "content": string, "reasoning_content": string, "tool_calls": List(tool_call),
               "tool_call_id": string}
    lineage = {"teacher_model": string, "template_version": string, "params": string, "seed_id": string,
               "source": string, "source_id": string, "parents": List(string), "run": string}
    usage = {"prompt_tokens": Value("int64"), "completion_tokens": Value("int64"), "cost": Value("float64"),
             "calls": Value("int64")}
    columns: dict[str, Any] = {
        "id": string,
        "category": string,
        "language": string,
        "plugins": List(string),
        "inner_thoughts": Value("bool"),
        "meta_instruction": string,
        "num_turns": Value("int32"),
        "turns": List(turn),
        "messages": List(message),
        "tools": List(string),
        "lineage": lineage,
        "usage": usage,
    }
    if scores:
        columns["scores"] = {k: Value(t) for k, t in scores.items()}
    columns["tags"] = string
    columns["extra"] = string
    return Features(columns)


def _only(value: dict[str, Any], fields: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise PublishError(f"{what} has key(s) {unknown} the dataset schema lacks (known: {', '.join(fields)}); "
                           "a datagen bug, please report it")


def message_row(message: dict[str, Any], where: str = "message") -> dict[str, Any]:
    """One OpenAI message as a `messages` struct: every field of `MESSAGE_FIELDS`, null where absent.
    Raises PublishError on a key the schema lacks (it would be lost)."""
    _only(message, MESSAGE_FIELDS, where)
    row = {k: message.get(k) for k in MESSAGE_FIELDS}
    calls = message.get("tool_calls")
    if calls is not None:
        row["tool_calls"] = []
        for i, call in enumerate(calls):
            _only(call, TOOL_CALL_FIELDS, f"{where} tool call {i}")
            function = call.get("function") or {}
            _only(function, FUNCTION_FIELDS, f"{where} tool call {i} function")
            row["tool_calls"].append({"id": call.get("id"), "type": call.get("type"),
                                      "function": {k: function.get(k) for k in FUNCTION_FIELDS}})
    return row


def row_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI messages of a published row, as `to_messages(conv, metadata=False,
    tool_arguments="string")` made them: null fields left out, except `content` (null on an
    assistant message that only calls tools)."""
    def clean(value: Any, keep: tuple[str, ...] = ()) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None or k in keep}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(m, keep=("content",)) for m in row.get("messages") or []]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _formats():
    """The format modules publishing needs (imported late: `datagen --help` stays fast)."""
    from datagen.formats import messages, moss

    return moss, messages


def conversation_to_row(conv: Conversation, scores: dict[str, str] | None = None) -> dict[str, Any]:
    """One parquet row (python values, JSON columns already encoded): the MOSS record with its meta
    instruction made explicit, the same dialogue as OpenAI messages, lineage, usage, scores, tags.
    `scores` is the `score_types` mapping the features were built with."""
    _, messages = _formats()
    from datagen.formats.meta import meta_instruction_for

    unknown_raw = [k for t in conv.turns for k in t.raw if k not in RAW_FIELDS]
    if unknown_raw:
        raise InputError(f"conversation {conv.id!r}: unknown raw segment key(s) {sorted(set(unknown_raw))}")
    lin = conv.lineage
    # arguments as the OpenAI JSON string: an object's keys differ by tool, which no Arrow type holds
    chat = messages.to_messages(conv, metadata=False, tool_arguments="string")
    row: dict[str, Any] = {
        "id": conv.id,
        "category": conv.category,
        "language": conv.language,
        "plugins": list(conv.plugins),
        "inner_thoughts": conv.inner_thoughts,
        "meta_instruction": meta_instruction_for(conv),
        "num_turns": len(conv.turns),
        "turns": [
            {
                "human": t.human,
                "thoughts": t.thoughts,
                "calls": [{"name": c.name, "arg": c.arg} for c in t.calls],
                "results": [{"name": r.name, "arg": r.arg, "ok": r.ok, "output": r.output,
                             "snippets": list(r.snippets), "first_index": r.first_index} for r in t.results],
                "assistant": t.assistant,
                "flags": list(t.flags),
                "raw": {col: t.raw.get(key) for key, col in RAW_FIELDS.items()},
            }
            for t in conv.turns
        ],
        "messages": [message_row(m, f"conversation {conv.id!r} message {i}")
                     for i, m in enumerate(chat["messages"])],
        "tools": [_json(t) for t in chat.get("tools") or []],
        "lineage": {
            "teacher_model": lin.teacher_model,
            "template_version": lin.template_version,
            "params": _json(lin.params) if lin.params else None,
            "seed_id": lin.seed_id,
            "source": lin.source,
            "source_id": lin.source_id,
            "parents": list(lin.parents),
            "run": lin.run,
        },
        "usage": conv.usage.to_dict(),
    }
    missing = set(conv.scores) - set(scores or {})
    if missing:
        raise InputError(f"conversation {conv.id!r}: scores {sorted(missing)} are not among the dataset's score "
                         "columns (pass every conversation to `score_types`)")
    if scores:
        row["scores"] = {k: (None if (v := conv.scores.get(k)) is None else float(v) if t == "float64" else _json(v))
                         for k, t in scores.items()}
    row["tags"] = _json(conv.tags) if conv.tags else None
    row["extra"] = _json(conv.extra) if conv.extra else None
    return row


def row_to_conversation(row: dict[str, Any]) -> Conversation:
    """The Conversation a published row holds (as `datasets` or pyarrow returns it): renders to the
    same MOSS text as the conversation it was built from. Raises KeyError/TypeError/ValueError on a
    malformed row."""
    turns = []
    for t in row["turns"]:
        raw = t.get("raw") or {}
        turns.append(Turn(
            human=t["human"],
            assistant=t["assistant"],
            thoughts=t["thoughts"],
            calls=[ToolCall(name=c["name"], arg=c["arg"]) for c in t.get("calls") or []],
            results=[ToolResult(name=r["name"], arg=r["arg"], ok=bool(r["ok"]), output=r["output"] or "",
                                snippets=list(r.get("snippets") or []), first_index=int(r.get("first_index") or 1))
                     for r in t.get("results") or []],
            flags=list(t.get("flags") or []),
            raw={key: raw[col] for key, col in RAW_FIELDS.items() if raw.get(col) is not None},
        ))
    lin = dict(row.get("lineage") or {})
    lin["params"] = _loads(lin.get("params")) or {}
    usage = row.get("usage") or {}
    scores = {}
    for k, v in (row.get("scores") or {}).items():
        if v is not None:
            scores[k] = _loads(v) if isinstance(v, str) else v
    return Conversation(
        id=str(row["id"]),
        turns=turns,
        category=row.get("category"),
        language=row.get("language"),
        plugins=list(row.get("plugins") or []),
        inner_thoughts=bool(row.get("inner_thoughts")),
        meta_instruction=row.get("meta_instruction"),
        lineage=Lineage.from_dict({k: v for k, v in lin.items() if v is not None}),
        usage=Usage.from_dict({k: v for k, v in usage.items() if v is not None}),
        scores=scores,
        tags=_loads(row.get("tags")) or {},
        extra=_loads(row.get("extra")) or {},
    )


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
            raise InputError(f"no final.jsonl: the run has not finished (see `datagen status {path}`)",
                             path=str(path))
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

    query = ("SELECT json_extract(request, '$.template_version'), model, json_extract(request, '$.params'), "
             "COUNT(*) FROM calls WHERE status = 'ok' GROUP BY 1, 2, 3")
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
        params = portable_paths(json.loads(params) if params else {})
        key = (template or "(none)", portable_path(model or "(unknown)"), _json(params))
        merged[key] = merged.get(key, 0) + int(calls)
    ordered = sorted(merged.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1:]))
    return [SentSampling(template=t, model=m, params=json.loads(p), calls=n) for (t, m, p), n in ordered]


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
            raise PublishError(f"{out_dir}: exists and was not built by datagen (no {BUILD_FILE}); "
                               "refusing to replace it, choose another --out")
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
) -> DatasetFolder:
    """Build the Hub dataset folder for a run directory (or a conversations file/folder).

    Arguments left None come from the run's manifest (`publish.license`, `publish.repo_id`,
    `publish.pretty_name`, `dataset.validation_fraction`). Streams the conversations twice, holding
    at most a row group per shard in memory: once for the score columns, then each row goes to its
    config's and split's parquet shard, into the card's statistics and (with `moss_jsonl`) into
    `moss/train.jsonl`/`val.jsonl`. Every row is checked to render back to the identical MOSS text.
    The folder is built beside `out_dir` and swapped in when complete; a failed build leaves the
    previous folder untouched.
    """
    moss, _ = _formats()
    from datagen import __version__

    src = open_source(source)
    if src.is_run and unapplied_review(src.path):
        _log(f"warning: {REVIEW_FILE} has decisions newer than final.jsonl; rerun `datagen run` to apply them")
    out = Path(out_dir) if out_dir is not None else default_out_dir(source)
    if not src.is_run and src.path.is_dir() and out.resolve().is_relative_to(src.path.resolve()):
        raise InputError(f"the output folder {out} is inside the input folder, whose files are all read as "
                         "conversations; choose an --out outside it", path=str(src.path))
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
                    raise PublishError(f"conversation {conv.id!r}: its parquet row does not render back to the "
                                       "same MOSS text (a datagen bug; please report it with this conversation)")
                if (config, split) not in writers:
                    writer = _ShardWriter(staging / "data" / config, split, features, shard_rows)
                    writers[(config, split)] = open_files.enter_context(writer)
                writers[(config, split)].write(row)
                stats.add(conv, config, split)
                if moss_jsonl:
                    if split not in jsonl:
                        (staging / "moss").mkdir(exist_ok=True)
                        jsonl[split] = open_files.enter_context(
                            open(staging / "moss" / MOSS_SPLIT_FILES[split], "w", encoding="utf-8"))
                    jsonl[split].write(moss.dumps_sft_line(moss.to_sft(conv)) + "\n")
        if stats.rows == 0:
            raise PublishError(f"{src.path}: no conversations to publish")
        if duplicates:
            warnings.append(f"{duplicates} conversation id(s) appear more than once; `check` will refuse the folder")

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
        for c in configs:
            if not stats.splits[c].get("validation"):
                warnings.append(f"config {c!r} has no validation rows (validation fraction {validation_fraction})")

        # Secrets out, and no path of this machine: the card and the manifest copy are published.
        manifest = portable_paths(redact(src.manifest)) if src.manifest is not None else None
        funnel = portable_paths(src.funnel) if src.funnel is not None else None
        ctx = CardContext(
            stats=stats, license=license, repo_id=repo_id, pretty_name=pretty_name, manifest=manifest,
            funnel=funnel, source=src.path.name, validation_fraction=float(validation_fraction),
            data_files=data_files, dataset_info=_dataset_infos(features, stats, split_bytes, configs),
            extras=[f"moss/{MOSS_SPLIT_FILES[s]}" for s in jsonl], datagen_version=__version__,
            sent=journal_sampling(src.path / JOURNAL_FILE) if src.is_run else None,
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
            if src.manifest else None,
            "repo_id": repo_id,
            "license": license,
            "validation_fraction": float(validation_fraction),
            "split_rule": "validation if xxh64(utf-8 id) / 2**64 < validation_fraction",
            "counts": counts,
            "files": files_info,
            "extras": ctx.extras,
        }
        write_json_atomic(staging / BUILD_FILE, build)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    if not license:
        warnings.append("no license: set publish.license in the run config or pass --license; "
                        "`datagen publish` will not upload without one")
    return DatasetFolder(path=out, counts=counts, files=files, license=license, repo_id=repo_id,
                         warnings=warnings)


def _dataset_infos(features: Any, stats: DatasetStats, split_bytes: dict[tuple[str, str], tuple[int, int]],
                   configs: list[str]) -> Any:
    """`dataset_info` for the card YAML: features and per-split sizes, which `load_dataset` verifies."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict

    infos = DatasetInfosDict()
    for config in configs:
        splits = SplitDict()
        download = dataset = 0
        for split in SPLITS:
            n = stats.splits[config].get(split, 0)
            if not n:
                continue
            nbytes, size = split_bytes[(config, split)]
            splits.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=n))
            download += size
            dataset += nbytes
        infos[config] = DatasetInfo(config_name=config, features=features, splits=splits,
                                    download_size=download, dataset_size=dataset)
    return infos


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
        out.extend(f"{card}:{n}: absolute path {p!r} (publish only file names)" for p in absolute_paths_in_text(line))
    for f in sorted((path / "datagen").glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.append(f"{f}: unreadable: {exc}")
            continue
        out.extend(f"{f}: {key} is the absolute path {p!r} (publish only file names)"
                   for key, p in absolute_paths(data))
    return out


def check_dataset_folder(folder: str | os.PathLike | DatasetFolder) -> list[str]:
    """Everything wrong with a built folder, as `where: what` lines (empty when it is fit to upload).

    Loads each config and split with `datasets.load_dataset` (into a throwaway cache, exactly as a
    user would, which also verifies the split sizes the card declares), then checks every row:
    it converts back to a Conversation, passes `datagen validate`'s format checks and the structural
    ones, sits in the config of its kind and the split its id hashes to, and its id is unique. No
    absolute filesystem path may appear in the card, the `datagen/` JSON files or a row's lineage,
    tags or extra (the build keeps file names only; see `portable_paths`). The license is not
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
    declared = {(info.get("config_name", "default"), s.get("name")): s.get("num_examples")
                for info in (infos if isinstance(infos, list) else [infos]) for s in info.get("splits") or []}

    import datasets

    seen: dict[str, str] = {}
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
                    ds = datasets.load_dataset(str(path), name=config, split=split, cache_dir=cache,
                                               verification_mode="no_checks")
                except Exception as exc:
                    cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
                    problems.append(f"{where}: load_dataset failed: {type(exc).__name__}: {exc}{cause}")
                    continue
                for source, want in (("the card's dataset_info", declared.get((config, split))),
                                     (BUILD_FILE, (expected.get(config) or {}).get(split))):
                    if want is not None and want != ds.num_rows:
                        problems.append(f"{where}: {ds.num_rows} rows, {source} says {want}")
                for i, row in enumerate(ds):
                    rid = row.get("id")
                    at = f"{where} row {i} (id {rid!r})"
                    try:
                        conv = row_to_conversation(row)
                    except (KeyError, TypeError, ValueError) as exc:
                        problems.append(f"{at}: not a conversation record: {type(exc).__name__}: {exc}")
                        continue
                    problems.extend(f"{at}: {p}" for p in _structural_problems(conv, config))
                    problems.extend(f"{at}: {key} is the absolute path {p!r} (publish only file names)"
                                    for key, p in _row_paths(row))
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


# ------------------------------------------------------------------------------------ upload


def _resolve_token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (datagen never stores it)")
    return found


def publish(folder: str | os.PathLike | DatasetFolder, repo_id: str, *, private: bool | None = None,
            token: str | None = None, commit_message: str | None = None) -> str:
    """Upload a checked dataset folder to the Hub dataset repo `repo_id`, in one commit; return its URL.

    Refuses (PublishError, nothing sent) a folder whose card has no license or that fails
    `check_dataset_folder`. Creates the repo if needed (`private` applies to a new repo; asking for
    a private upload to an existing public repo is refused). Files a previous publish left under
    `data/`, `moss/` or `datagen/` that this folder no longer has are deleted in the same commit, so
    the configs' globs never pick up stale shards. The token comes from `token`, HF_TOKEN or the
    user's Hugging Face login, and is never written anywhere.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from datagen import __version__

    path = folder.path if isinstance(folder, DatasetFolder) else Path(folder)
    if not repo_id or not REPO_ID_RE.match(repo_id):
        raise PublishError(f"repo id must look like ORG/NAME, got {repo_id!r}")
    card = path / "README.md"
    if not card.exists():
        raise PublishError(f"{path}: not a dataset folder (no README.md); build it with `datagen publish --dry-run`")
    meta, _ = split_card(card.read_text(encoding="utf-8"), path=str(card))
    if not meta.get("license") or str(meta["license"]).lower() in NOT_A_LICENSE:
        raise PublishError(f"{card}: refusing to upload a dataset without a license. Set `publish.license` in the "
                           "run config or pass --license (e.g. --license cc-by-4.0); datagen does not pick one")
    problems = check_dataset_folder(path)
    if problems:
        listing = "\n  ".join(problems[:20]) + (f"\n  ... ({len(problems) - 20} more)" if len(problems) > 20 else "")
        raise PublishError(f"{path}: refusing to upload, the folder failed {len(problems)} check(s):\n  {listing}")
    build = _read_json(path / BUILD_FILE)
    if build.get("repo_id") and build["repo_id"] != repo_id:
        _log(f"warning: the card was written for {build['repo_id']}, uploading to {repo_id}")

    api = HfApi(token=_resolve_token(token), library_name="datagen", library_version=__version__)
    local = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    run = build.get("run") or {}
    message = commit_message or (f"datagen: publish run {run.get('name')} ({run.get('fingerprint')})" if run
                                 else f"datagen: publish {build.get('source', path.name)}")
    counts = build.get("counts") or {}
    description = "\n".join(f"- {c}: " + ", ".join(f"{s} {n}" for s, n in splits.items())
                            for c, splits in counts.items())
    try:
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type="dataset").private:
            raise PublishError(f"{repo_id} already exists and is public, but a private upload was asked for; "
                               "make the repo private on the Hub first, or choose another repo id")
        remote = api.list_repo_files(repo_id, repo_type="dataset")
        managed = ("data/", "moss/", "datagen/")
        ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in remote
                          if p.startswith(managed) and p not in set(local)]
        ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path / rel)) for rel in local]
        _log(f"uploading {len(local)} files to {repo_id} in one commit"
             + (f" (deleting {len(ops) - len(local)} stale)" if len(ops) > len(local) else ""))
        api.create_commit(repo_id, ops, commit_message=message, commit_description=description,
                          repo_type="dataset")
    except PublishError:
        raise
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = ""
        if status in (401, 403):
            hint = (" Check the token (HF_TOKEN or `hf auth login`): it needs write access to "
                    f"{repo_id.split('/')[0]}.")
        raise PublishError(f"upload to {repo_id} failed: {str(exc).splitlines()[0]}.{hint}") from exc
    except Exception as exc:  # network errors, metadata the Hub rejects: one clear line, traceback in DEBUG
        raise PublishError(f"upload to {repo_id} failed: {type(exc).__name__}: {exc}") from exc
    return str(repo_url)


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
        entries = sorted((p for p in d.iterdir() if not p.name.startswith(".")),
                         key=lambda p: (p.is_dir(), p.name))
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
    p.add_argument("source", metavar="RUN_DIR", help="a run directory, a conversations file or folder, or a "
                   "dataset folder built earlier (has datagen/build.json)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="the Hub dataset repo (default: publish.repo_id)")
    p.add_argument("--license", help="license id for the card, e.g. apache-2.0, cc-by-4.0 (default: "
                   "publish.license; required to upload)")
    p.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                   help="create the repo private (default: publish.private)")
    p.add_argument("--pretty-name", help="the card's title (default: publish.pretty_name or the repo name)")
    p.add_argument("--out", metavar="DIR", help="where to build the folder (default: RUN_DIR/dataset)")
    p.add_argument("--validation-fraction", type=float, metavar="F",
                   help=f"share of dialogues in validation (default: dataset.validation_fraction or "
                        f"{DEFAULT_VALIDATION_FRACTION})")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, metavar="N",
                   help="rows per parquet shard (default: %(default)s)")
    p.add_argument("--moss-jsonl", action="store_true",
                   help="also ship moss/train.jsonl and moss/val.jsonl (MOSS SFT records for finetune_moss.py)")
    p.add_argument("--commit-message", help="default: names the run and its fingerprint")
    p.add_argument("--card-lines", type=int, default=40, metavar="N",
                   help="card lines --dry-run prints (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="build and check the folder, upload nothing")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args: argparse.Namespace) -> int:
    source = Path(args.source)
    prebuilt = source.is_dir() and (source / BUILD_FILE).exists() and not (source / "manifest.json").exists()
    manifest = _read_json(source / "manifest.json") if source.is_dir() and (source / "manifest.json").exists() else None
    repo_id = args.repo_id or _setting(manifest, "publish", "repo_id")
    private = args.private if args.private is not None else _setting(manifest, "publish", "private")
    if prebuilt:
        if args.license or args.validation_fraction is not None or args.moss_jsonl or args.pretty_name:
            raise InputError("this folder is already built; pass --license etc. when building it from the run",
                             path=str(source))
        folder_path = source
        meta, _ = split_card((source / "README.md").read_text(encoding="utf-8"), path=str(source / "README.md"))
        license = meta.get("license")
        build_warnings: list[str] = []
    else:
        _log(f"building the dataset folder from {source}")
        built = build_dataset_folder(source, args.out, license=args.license, repo_id=repo_id,
                                     pretty_name=args.pretty_name, validation_fraction=args.validation_fraction,
                                     shard_rows=args.shard_rows, moss_jsonl=args.moss_jsonl)
        folder_path, license, build_warnings = built.path, built.license, built.warnings
        counts = ", ".join(f"{c} " + "/".join(f"{n} {s}" for s, n in splits.items())
                           for c, splits in built.counts.items())
        _log(f"built {folder_path}: {built.rows} rows ({counts})")
    for w in build_warnings:
        if not w.startswith("no license"):
            _log(f"warning: {w}")
    if not license:
        print("\n" + "!" * 78 + "\n!! NO LICENSE: the card has no license. Set publish.license in the run config\n"
              "!! or pass --license; `datagen publish` refuses to upload without one.\n" + "!" * 78 + "\n",
              file=sys.stderr)

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
        raise PublishError(f"{folder_path}: refusing to upload a dataset without a license. Set `publish.license` "
                           "in the run config or pass --license (e.g. --license cc-by-4.0); datagen does not pick one")
    url = publish(folder_path, repo_id, private=private, commit_message=args.commit_message)
    print(url)
    return 0


__all__ = [
    "DatasetFolder", "absolute_paths", "build_dataset_folder", "check_dataset_folder", "conversation_to_row",
    "dataset_features", "folder_tree", "is_absolute_path", "journal_sampling", "message_row", "portable_paths",
    "publish", "register", "row_messages", "row_to_conversation", "split_for",
]
