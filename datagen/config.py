"""The run config: YAML -> typed objects, `--set` overrides, and a fingerprint for lineage.

A run config has one section per stage. Each section is parsed by the stage's own config class
(`TeacherConfig`, `ExpandConfig`, ...), which rejects unknown keys; this module adds the YAML line
of the offending key to the error, applies `--set a.b=value` overrides and fingerprints the result.
See configs/example.yaml for every field, annotated.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datagen.errors import ConfigError

#: section name -> (module, class) of the stage config that parses it.
SECTION_CLASSES: dict[str, tuple[str, str]] = {
    "teacher": ("datagen.teacher.config", "TeacherConfig"),
    "expand": ("datagen.generate.expand", "ExpandConfig"),
    "filters": ("datagen.filters.config", "FilterConfig"),
    "finetune": ("datagen.moss.finetune", "FinetuneConfig"),
}

#: sections parsed here (small, owned by the pipeline).
TOP_LEVEL_KEYS = {
    "name", "seed", "seeds", "teacher", "expand", "dialogues", "tools", "filters", "check",
    "finetune", "dataset", "publish",
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
            _check_type(self.per_cell, (int,), "seeds.per_cell", "a whole number")
            if self.per_cell < 1:
                raise ConfigError(f"must be at least 1, got {self.per_cell}", field="seeds.per_cell")


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
            _check_type(self.max_dialogues, (int,), "dialogues.max_dialogues", "a whole number")
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

    def __post_init__(self) -> None:
        _check_type(self.enabled, (bool,), "check.enabled", "true or false")
        if self.model is not None:
            _check_type(self.model, (str,), "check.model", "a folder, a .gguf file or smollm2")
        _check_type(self.batch_size, (int,), "check.batch_size", "a whole number")
        for name in ("max_length", "max_rows"):
            if getattr(self, name) is not None:
                _check_type(getattr(self, name), (int,), f"check.{name}", "a whole number")
        if self.max_loss is not None:
            _check_type(self.max_loss, (int, float), "check.max_loss", "a number")
        if self.percentile is not None:
            _check_type(self.percentile, (int, float), "check.percentile", "a number")
            if not 0 < self.percentile < 100:
                raise ConfigError(f"must be between 0 and 100, got {self.percentile}", field="check.percentile")
        if self.enabled and not self.model:
            raise ConfigError("the check stage needs a model (a folder, a .gguf file or smollm2)",
                              field="check.model")


@dataclass(slots=True)
class DatasetSection:
    """The Hub-ready dataset folder built at the end of a run."""

    enabled: bool = True
    validation_fraction: float = 0.05

    def __post_init__(self) -> None:
        _check_type(self.enabled, (bool,), "dataset.enabled", "true or false")
        _check_type(self.validation_fraction, (int, float), "dataset.validation_fraction", "a number")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"must be in [0, 1), got {self.validation_fraction}",
                              field="dataset.validation_fraction")


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
    teacher: Any = None
    expand: Any = None
    dialogues: dict[str, DialogueKind] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    filters: Any = None
    check: CheckSection = field(default_factory=CheckSection)
    finetune: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    publish: PublishSection = field(default_factory=PublishSection)
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
        from datagen.teacher.config import RUNTIME_FIELDS

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


# --------------------------------------------------------------------------- YAML with lines

class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, by dotted path."""


def _load_with_lines(text: str, path: str) -> tuple[dict[str, Any], dict[str, int]]:
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{prefix}.{i}")

    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=path,
                          line=mark.line + 1 if mark else None) from None
    if node is not None:
        walk(node, "")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a run config must be a YAML mapping", path=path, line=1)
    return data, lines


def parse_override(item: str) -> tuple[list[str], Any]:
    """`teacher.model=gpt-4o-mini` -> (["teacher", "model"], "gpt-4o-mini"); values are YAML."""
    if "=" not in item:
        raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set needs a key, got {item!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
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
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(sorted(names))})", field=f"{where}.{unknown[0]}")
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


def _section(name: str, data: Any) -> Any:
    module, cls_name = SECTION_CLASSES[name]
    cls = getattr(importlib.import_module(module), cls_name)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", field=name)
    try:
        return cls.from_dict(data)
    except ConfigError as exc:
        f = exc.field or ""
        raise ConfigError(exc.reason, field=f if f.startswith(name + ".") or f == name else
                          (f"{name}.{f}" if f else name)) from None


def build_config(data: dict[str, Any], *, source: str | None = None) -> RunConfig:
    """Build a RunConfig from a plain dict (already merged with overrides)."""
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(sorted(TOP_LEVEL_KEYS))})", field=unknown[0])
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
        from datagen.generate.config import DialogueConfig

        DialogueConfig.from_dict(dict(dialogues[kind].options), kind=kind, where=f"dialogues.{kind}.options")
    finetune = data.get("finetune") or {}
    if not isinstance(finetune, dict):
        raise ConfigError("must be a mapping", field="finetune")
    if finetune:
        _section("finetune", finetune)  # validate now; `datagen finetune --config` builds it again
    tools = data.get("tools") or {}
    if not isinstance(tools, dict):
        raise ConfigError("must be a mapping", field="tools")
    return RunConfig(
        name=str(data.get("name", "run")),
        seed=seed,
        seeds=_dataclass_from_dict(SeedsSection, data.get("seeds"), "seeds"),
        teacher=_section("teacher", data.get("teacher")),
        expand=_section("expand", data.get("expand")),
        dialogues=dialogues,
        tools=tools,
        filters=_section("filters", data.get("filters")),
        check=_dataclass_from_dict(CheckSection, data.get("check"), "check"),
        finetune=finetune,
        dataset=_dataclass_from_dict(DatasetSection, data.get("dataset"), "dataset"),
        publish=_dataclass_from_dict(PublishSection, data.get("publish"), "publish"),
        raw=data,
        source=source,
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `--set` overrides, and validate every section. Errors name the
    key and its line in the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8", path=str(path)) from None
    data, lines = _load_with_lines(text, str(path))
    data = apply_overrides(data, list(overrides or []))
    try:
        return build_config(data, source=str(path))
    except ConfigError as exc:
        key = exc.field or ""
        line = None
        probe = key
        while probe:
            if probe in lines:
                line = lines[probe]
                break
            probe = probe.rpartition(".")[0]
        raise ConfigError(exc.reason, path=str(path), line=line, field=key or None) from None
