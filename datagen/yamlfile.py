"""The one YAML loader of datagen: every YAML datagen reads (run configs, filter configs, `--set`
values, finetune sections) goes through `load_yaml` or `read_yaml`.

On top of PyYAML's safe loader it
- records the line of every mapping key, by dotted path (`dialogues.hhh.options.turns`), so a
  config error can point at its line;
- refuses a key given twice in one mapping, naming both lines (PyYAML keeps the last silently);
- bounds aliases: anchors may be reused, but aliases may not add more than `MAX_ALIAS_VALUES`
  values to the document, and a value may not contain itself. A few hundred bytes of nested
  aliases (a "billion laughs") would otherwise expand to millions of values in every walk,
  fingerprint and manifest of the config;
- returns plain trees: a value reached through two aliases is two independent copies, so a
  `--set` on one place never changes the other.

`resolve_path` is the rule for paths written in a YAML file: relative to the file's folder.

Every problem is a ConfigError naming the file, the line and, where there is one, the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datagen.errors import ConfigError

#: Values that aliases may add to a document beyond the ones written out. Reusing a block of
#: settings a few times stays far below it; a nested alias bomb crosses it within a few levels.
MAX_ALIAS_VALUES = 10_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class YamlDoc:
    """A loaded YAML document: the data, and the line (1-based) of each mapping key by dotted path."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str | None) -> int | None:
        """The line of `key`, or of its nearest parent written in the file (`teacher.modle` -> the
        line of `teacher` when the key itself came from elsewhere)."""
        probe = key or ""
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe.rpartition(".")[0]
        return None


class _Loader(yaml.SafeLoader):
    """A safe loader that remembers the line of each alias: the composed node of an alias is the
    anchored node itself, which carries the anchor's position, not the alias's."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.alias_lines: list[int] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.alias_lines.append(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


class _Walk:
    """One pass over the composed node graph, expanding aliases as the loaded data will: records
    key lines, refuses duplicate keys, recursive aliases and alias bombs."""

    def __init__(self, path: str, lines: dict[str, int], alias_lines: list[int]):
        self.path = path
        self.lines = lines
        # Outside aliases, the walk meets the aliases in document order, so the n-th one it enters
        # is the n-th alias of the text.
        self.alias_lines = iter(alias_lines)
        self.seen: set[int] = set()
        self.open: set[int] = set()
        self.repeats = 0

    def node(self, node: yaml.Node, prefix: str, line: int, site: tuple[str, int] | None) -> None:
        """Visit `node`, the value at `prefix` written on `line`; `site` is where the alias that
        led here was used (the key and its line), None outside aliases."""
        if id(node) in self.open:
            raise ConfigError(
                "a YAML alias refers to a value that contains it",
                path=self.path,
                line=line,
                field=prefix or None,
            )
        if id(node) in self.seen:
            site = site or (prefix, next(self.alias_lines, line))
            self.repeats += 1
            if self.repeats > MAX_ALIAS_VALUES:
                raise ConfigError(
                    f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values beyond those "
                    "written; write the values out instead of nesting aliases",
                    path=self.path,
                    line=site[1],
                    field=site[0] or None,
                )
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self.open.add(id(node))
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                key_line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    ident = (key_node.tag, key_node.value)
                    if ident in first:
                        raise ConfigError(
                            f"duplicate key (first given on line {first[ident]})",
                            path=self.path,
                            line=key_line,
                            field=key,
                        )
                    first[ident] = key_line
                self.lines[key] = key_line
                self.node(value_node, key, key_line if site is None else site[1], site)
            self.open.discard(id(node))
        elif isinstance(node, yaml.SequenceNode):
            self.open.add(id(node))
            for i, item in enumerate(node.value):
                self.node(item, f"{prefix}.{i}", line if site else item.start_mark.line + 1, site)
            self.open.discard(id(node))


def _plain(value: Any) -> Any:
    """A copy of the loaded tree with no shared containers (aliases become independent copies)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_yaml(text: str, *, path: str) -> YamlDoc:
    """Parse one YAML document (see the module docstring). `path` names the source in errors (a
    file, or e.g. `--set teacher.model`). Raises ConfigError, never a YAML or recursion error."""
    lines: dict[str, int] = {}
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(None, lines)
        _Walk(path, lines, loader.alias_lines).node(node, "", node.start_mark.line + 1, None)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = ", ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise ConfigError(
            f"invalid YAML: {problem or exc}", path=path, line=mark.line + 1 if mark else None
        ) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", path=path) from None
    finally:
        loader.dispose()
    return YamlDoc(_plain(data), lines)


def resolve_path(value: str, base: str | os.PathLike) -> str:
    """A path written in a YAML file, resolved against the file's folder `base` (`~` expanded;
    absolute paths kept). Never made more absolute than needed: `configs/../seeds/x.jsonl` is
    `seeds/x.jsonl`, and a path inside the working directory is given relative to it, so what gets
    recorded (manifests, messages) carries no machine path when the user typed none."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return str(path)
    joined = os.path.normpath(Path(base) / path)
    if os.path.isabs(joined):
        rel = os.path.relpath(joined)
        if rel != ".." and not rel.startswith(".." + os.sep):
            return rel
    return joined


def read_yaml(path: str | os.PathLike) -> YamlDoc:
    """Read and parse a YAML file; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(p)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder; give the YAML config file inside it", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 (byte {exc.start})", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file ({exc.strerror})", path=str(p)) from None
    return load_yaml(text, path=str(p))
