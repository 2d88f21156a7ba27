"""The run config: YAML -> typed objects, `--set` overrides, and a fingerprint for lineage.

A run config has one section per stage. Each section is parsed by the stage's own config class
(`TeacherConfig`, `ExpandConfig`, ...), which rejects unknown keys; this module adds the YAML line
of the offending key to the error (the file is read by `datagen.yamlfile`, which also refuses
duplicate keys and alias bombs), applies `--set a.b=value` overrides, resolves the relative paths
written in the file against its folder, and fingerprints the result. See configs/example.yaml for
every field, annotated.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError
from datagen.filters.config import FilterConfig
from datagen.finetune.config import FinetuneConfig
from datagen.generate.config import DialogueConfig, ExpandConfig
from datagen.preference.config import PreferenceConfig
from datagen.run.quota import QuotaSection
from datagen.settings import check_int, reject_unknown
from datagen.teacher.config import RUNTIME_FIELDS, TeacherConfig
from datagen.yamlfile import load_yaml, read_yaml, resolve_path

#: sections parsed here (small, owned by the pipeline).
TOP_LEVEL_KEYS = {
    "name",
    "seed",
    "seeds",
    "teacher",
    "expand",
    "dialogues",
    "tools",
    "filters",
    "check",
    "finetune",
    "dataset",
    "publish",
    "targets",
    "budget",
    "quota",
    "preference",
}


def _check_type(value: Any, types: tuple[type, ...], field_name: str, what: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"must be {what}, got {value!r}", field=field_name)
    if not isinstance(value, types):
        raise ConfigError(f"must be {what}, got {value!r}", field=field_name)


def _check_str_list(value: Any, field_name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"must be a list of strings, e.g. [zh, en], got {value!r}", field=field_name)
    return value


@dataclass(slots=True)
class SeedsSection:
    """Which seed prompts a run starts from."""

    path: str = "seeds/starter.jsonl"
    languages: list[str] = field(default_factory=list)  # empty = all
    categories: list[str] = field(default_factory=list)  # empty = all
    per_cell: int | None = None  # balanced sample: at most this many per (category, language, plugin)

    def __post_init__(self) -> None:
        _check_type(self.path, (str,), "seeds.path", "a file path")
        _check_str_list(self.languages, "seeds.languages")
        _check_str_list(self.categories, "seeds.categories")
        if self.per_cell is not None:
            check_int(self.per_cell, "seeds.per_cell", minimum=1)


@dataclass(slots=True)
class DialogueKind:
    """One kind of dialogue to generate (`hhh` or `plugin`)."""

    enabled: bool = True
    max_dialogues: int | None = None  # cap on prompts taken for this kind
    include_seeds: bool = True  # seed prompts themselves become dialogues too
    options: dict[str, Any] = field(default_factory=dict)  # passed to the generation config

    def __post_init__(self) -> None:
        _check_type(self.enabled, (bool,), "dialogues.enabled", "true or false")
        _check_type(self.include_seeds, (bool,), "dialogues.include_seeds", "true or false")
        if self.max_dialogues is not None:
            check_int(self.max_dialogues, "dialogues.max_dialogues", minimum=0)
        _check_type(self.options, (dict,), "dialogues.options", "a mapping")


@dataclass(slots=True)
class CheckSection:
    """The local-model check: score every kept dialogue, optionally drop the worst."""

    enabled: bool = False
    model: str | None = None  # a folder, a .gguf file, or `smollm2` for the embedded demo model
    batch_size: int = 4
    max_length: int | None = None  # None: the model's own context (2048 for MOSS)
    max_loss: float | None = None
    percentile: float | None = None  # drop rows above this loss percentile (e.g. 95)
    max_rows: int | None = None
    tokenization: str = "auto"  # upstream (what released MOSS models saw), datagen, or auto

    def __post_init__(self) -> None:
        _check_type(self.enabled, (bool,), "check.enabled", "true or false")
        if self.tokenization not in ("auto", "upstream", "datagen"):
            raise ConfigError(
                f"must be auto, upstream or datagen, got {self.tokenization!r}", field="check.tokenization"
            )
        if self.model is not None:
            _check_type(self.model, (str,), "check.model", "a folder, a .gguf file or smollm2")
        check_int(self.batch_size, "check.batch_size", minimum=1)
        if self.max_length is not None:
            check_int(self.max_length, "check.max_length", minimum=1)
        if self.max_rows is not None:
            check_int(self.max_rows, "check.max_rows", minimum=0)
        if self.max_loss is not None:
            _check_type(self.max_loss, (int, float), "check.max_loss", "a number")
            if not self.max_loss >= 0:
                raise ConfigError(f"must be at least 0, got {self.max_loss}", field="check.max_loss")
        if self.percentile is not None:
            _check_type(self.percentile, (int, float), "check.percentile", "a number")
            if not 0 < self.percentile < 100:
                raise ConfigError(
                    f"must be between 0 and 100, got {self.percentile}", field="check.percentile"
                )
        if self.enabled and not self.model:
            raise ConfigError(
                "the check stage needs a model (a folder, a .gguf file or smollm2)", field="check.model"
            )


@dataclass(slots=True)
class DatasetSection:
    """The Hub-ready dataset folder built at the end of a run."""

    enabled: bool = True
    validation_fraction: float = 0.05

    def __post_init__(self) -> None:
        _check_type(self.enabled, (bool,), "dataset.enabled", "true or false")
        _check_type(self.validation_fraction, (int, float), "dataset.validation_fraction", "a number")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(
                f"must be in [0, 1), got {self.validation_fraction}", field="dataset.validation_fraction"
            )


@dataclass(slots=True)
class PublishSection:
    """Where and how to publish. Nothing is uploaded unless `repo_id` is set."""

    repo_id: str | None = None
    license: str | None = None
    private: bool = False
    pretty_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("repo_id", "license", "pretty_name"):
            if getattr(self, name) is not None:
                _check_type(getattr(self, name), (str,), f"publish.{name}", "a string")
        _check_type(self.private, (bool,), "publish.private", "true or false")


@dataclass(slots=True)
class RunConfig:
    """A whole run. Stage sections hold the stages' own config objects (or dicts for stages whose
    config class is optional, e.g. finetune needs the `moss` extra)."""

    name: str = "run"
    seed: int = 0
    seeds: SeedsSection = field(default_factory=SeedsSection)
    teacher: TeacherConfig | None = None
    expand: ExpandConfig | None = None
    dialogues: dict[str, DialogueKind] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    filters: FilterConfig | None = None
    check: CheckSection = field(default_factory=CheckSection)
    finetune: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    publish: PublishSection = field(default_factory=PublishSection)
    quota: QuotaSection | None = None  # `targets`, `budget`, `quota`: the run goes in waves (run/waves.py)
    preference: PreferenceConfig | None = None  # pairs from the kept dialogues (preference/), when set
    raw: dict[str, Any] = field(default_factory=dict)  # the merged dict it was built from
    source: str | None = None

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the given sections (all when none), for lineage and stage skipping.
        A section may be a dotted path (`dialogues.hhh`, `check.model`).

        How hard things are pushed does not change what a run produces, so it is left out:
        the teacher's runtime fields (concurrency, limits, timeouts, prices, progress), dialogue
        concurrency and tools' concurrency, timeouts and retries (`RUNTIME_PATHS`). Raising any of
        them mid-run must not redo finished stages. Publishing details are left out too, except for
        the stages that ask for `publish` (the card names the license, repo and title). No secret
        is ever in the config (keys come from environment variables)."""
        data = copy.deepcopy(self.raw)
        if sections and "publish" in sections and isinstance(data.get("publish"), dict):
            # visibility changes nothing in the folder
            data["publish"] = {k: v for k, v in data["publish"].items() if k != "private"}
        else:
            data.pop("publish", None)
        if isinstance(data.get("teacher"), dict):
            data["teacher"] = {k: v for k, v in data["teacher"].items() if k not in RUNTIME_FIELDS}
        for path in RUNTIME_PATHS:
            _drop_path(data, path.split("."))
        data = _prune_empty(data)  # `check: {}` and no `check:` are the same config
        if sections:
            data = {k: _get_path(data, k.split(".")) for k in sections}
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Config paths (`*` matches any key) that tune speed, not output; left out of fingerprints.
RUNTIME_PATHS = (
    "dialogues.*.options.concurrency",
    "tools.*.concurrency",
    "tools.*.timeout",
    "tools.*.retries",
    "check.batch_size",
    "filters.workers",
    "filters.chunk_size",
    "filters.parallel_min_rows",
)


def _drop_path(node: Any, parts: list[str]) -> None:
    if not isinstance(node, dict) or not parts:
        return
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head]
    for k in keys:
        if k not in node:
            continue
        if rest:
            _drop_path(node[k], rest)
        else:
            node.pop(k, None)


def _prune_empty(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _prune_empty(v) for k, v in node.items()}
    return {k: v for k, v in out.items() if v != {}}


def _get_path(node: Any, parts: list[str]) -> Any:
    for p in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return node


def parse_override(item: str) -> tuple[list[str], Any]:
    """`teacher.model=gpt-4o-mini` -> (["teacher", "model"], "gpt-4o-mini"); values are YAML."""
    if "=" not in item:
        raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set needs a key, got {item!r}")
    try:
        parsed = load_yaml(value, path=f"--set {key.strip()}").data if value.strip() else ""
    except ConfigError as exc:
        if not exc.reason.startswith("invalid YAML"):
            raise  # a duplicate key or an alias bomb: say so
        parsed = value  # not YAML: the text itself
    return parts, parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides in order to a nested dict (creating sections as needed)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = {}
                node[p] = child
            node = child
        node[parts[-1]] = value
    return data


def _dataclass_from_dict(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", field=where)
    reject_unknown(data, (f.name for f in dataclasses.fields(cls)), where)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(str(exc), field=where) from None
    except ConfigError as exc:
        f = exc.field or where
        # sections name their fields generically (dialogues.enabled); put the real path back
        if "." in f and not f.startswith(where):
            f = f"{where}.{f.split('.', 1)[1]}"
        raise ConfigError(exc.reason, field=f) from None


def _section(name: str, cls: type, data: Any) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", field=name)
    try:
        return cls.from_dict(data)
    except ConfigError as exc:
        f = exc.field or ""
        raise ConfigError(
            exc.reason, field=f if f.startswith(name + ".") or f == name else (f"{name}.{f}" if f else name)
        ) from None


#: A run name becomes a folder under outputs/: one plain name, never a path.
_RUN_NAME = re.compile(r"\w[\w.-]{0,99}")


def _run_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `name: 2024`
    if not isinstance(value, str) or not _RUN_NAME.fullmatch(value):
        raise ConfigError(
            "must be a plain name of letters, digits, '.', '_' and '-' (it names the folder "
            f"outputs/NAME), got {value!r}",
            field="name",
        )
    return value


def build_config(
    data: dict[str, Any], *, source: str | None = None, raw: dict[str, Any] | None = None
) -> RunConfig:
    """Build a RunConfig from a plain dict (already merged with overrides). Paths are used as given
    (`load_config` resolves those written in a file first); `raw` is what the user wrote, kept for
    fingerprints and manifests (default: `data`)."""
    reject_unknown(data, TOP_LEVEL_KEYS)
    name = _run_name(data.get("name", "run"))
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"must be a whole number, got {seed!r}", field="seed")
    if not isinstance(data.get("dialogues") or {}, dict):
        raise ConfigError("must be a mapping of kind (hhh, plugin) -> settings", field="dialogues")
    dialogues: dict[str, DialogueKind] = {}
    for kind, section in (data.get("dialogues") or {}).items():
        if kind not in ("hhh", "plugin"):
            raise ConfigError("unknown dialogue kind (use hhh or plugin)", field=f"dialogues.{kind}")
        dialogues[kind] = _dataclass_from_dict(DialogueKind, section, f"dialogues.{kind}")
        # Validate the generation options now, not an hour into the run.
        DialogueConfig.from_dict(dict(dialogues[kind].options), kind=kind, where=f"dialogues.{kind}.options")
    finetune = data.get("finetune") or {}
    if not isinstance(finetune, dict):
        raise ConfigError("must be a mapping", field="finetune")
    if finetune:
        _section(
            "finetune", FinetuneConfig, finetune
        )  # validate now; `datagen finetune --config` builds it again
    tools = data.get("tools") or {}
    if not isinstance(tools, dict):
        raise ConfigError("must be a mapping", field="tools")
    # Unknown tools and bad tool settings fail now, not on the first plugin call (after the HHH
    # stage has been paid for) as a "retryable" failure that no rerun fixes.
    from datagen.tools.base import validate_tool_settings

    validate_tool_settings(tools)
    return RunConfig(
        name=name,
        seed=seed,
        seeds=_dataclass_from_dict(SeedsSection, data.get("seeds"), "seeds"),
        teacher=_section("teacher", TeacherConfig, data.get("teacher")),
        expand=_section("expand", ExpandConfig, data.get("expand")),
        dialogues=dialogues,
        tools=tools,
        filters=_section("filters", FilterConfig, data.get("filters")),
        check=_dataclass_from_dict(CheckSection, data.get("check"), "check"),
        finetune=finetune,
        dataset=_dataclass_from_dict(DatasetSection, data.get("dataset"), "dataset"),
        publish=_dataclass_from_dict(PublishSection, data.get("publish"), "publish"),
        quota=QuotaSection.from_config(data.get("targets"), data.get("budget"), data.get("quota")),
        preference=_section("preference", PreferenceConfig, data["preference"])
        if "preference" in data
        else None,
        raw=data if raw is None else raw,
        source=source,
    )


# --------------------------------------------------------------------------- paths


#: Config keys holding paths (`*`: any key or list index). Written in a config file, a relative one
#: resolves against the file's folder (`resolve_paths`).
PATH_KEYS = (
    "seeds.path",
    "expand.templates_dir",
    "dialogues.*.options.templates_dir",
    "tools.*.docs",  # search document collections
    "filters.steps.*.lexicons",
    "filters.steps.*.rubrics_dir",  # the judge's own rubric files
    "check.model",  # also an alias (smollm2) or a Hub id: only when it names a file or folder
    "preference.templates_dir",
    "preference.sources.*.model",  # a local source's model: like check.model
)
#: Keys that may also hold a model name or alias, rebased only when they look like a path.
MODEL_KEYS = re.compile(r"^(check\.model|preference\.sources\.\d+\.model)$")


def _looks_like_path(value: str, base: Path) -> bool:
    return value.startswith(("./", "../", "~")) or value.endswith(".gguf") or (base / value).exists()


def resolve_paths(data: dict[str, Any], base: str | os.PathLike, from_file: Any) -> dict[str, Any]:
    """A copy of `data` whose relative paths (`PATH_KEYS`) resolve against `base`, the config file's
    folder, for the keys `from_file(dotted_key)` says were written in the file. Defaults and `--set`
    values stay relative to the working directory."""
    base = Path(base)
    data = copy.deepcopy(data)

    def rebase(value: Any) -> Any:
        if isinstance(value, str) and value:
            return resolve_path(value, base)
        if isinstance(value, list):
            return [rebase(v) for v in value]
        return value

    def visit(node: Any, parts: list[str], key: str) -> None:
        head, rest = parts[0], parts[1:]
        if isinstance(node, dict):
            names = list(node) if head == "*" else [head] if head in node else []
            items = [(k, node[k]) for k in names]
        elif isinstance(node, list) and head == "*":
            items = list(enumerate(node))
        else:
            return
        for k, child in items:
            where = f"{key}.{k}" if key else str(k)
            if rest:
                visit(child, rest, where)
            elif from_file(where) and (
                not MODEL_KEYS.match(where) or (isinstance(child, str) and _looks_like_path(child, base))
            ):
                node[k] = rebase(child)

    for pattern in PATH_KEYS:
        visit(data, pattern.split("."), "")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `--set` overrides, and validate every section. Errors name the
    key and its line in the file.

    Relative paths written in the file (`PATH_KEYS`) resolve against the file's folder: `seeds.path:
    ../seeds/mine.jsonl` in `configs/run.yaml` is `seeds/mine.jsonl` from any working directory.
    `--set` paths resolve against the working directory, as shell paths do."""
    path = Path(path)
    doc = read_yaml(path)
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a run config must be a YAML mapping", path=str(path), line=1)
    written = copy.deepcopy(data)
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)
    overridden = [".".join(parse_override(item)[0]) for item in overrides]

    def from_file(key: str) -> bool:
        if any(key == o or key.startswith(o + ".") for o in overridden):
            return False
        node: Any = written
        for part in key.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return False
        return node is not None

    try:
        return build_config(resolve_paths(data, path.parent, from_file), source=str(path), raw=data)
    except ConfigError as exc:
        key = exc.field or ""
        raise ConfigError(exc.reason, path=str(path), line=doc.line_of(key), field=key or None) from None
