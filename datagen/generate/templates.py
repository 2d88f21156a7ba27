"""Prompt templates as files: `templates/NAME.vN.md`, readable and editable by users.

A template file is Markdown. Text before the first section marker is documentation for the reader
and is never sent. Sections start with an HTML comment naming them, e.g.

    <!-- section: system -->
    You write user prompts ...
    <!-- section: user -->
    Here are examples: $examples

and hold `string.Template` placeholders (`$name` or `${name}`; `$$` is a literal dollar). Braces,
code and JSON need no escaping. A missing placeholder value raises ConfigError naming the file.
Section names may hold dots (`examples.zh`: a variant of `examples` for one language, see `variant`).

Versions: the number in the file name is the template version. It goes into each teacher request's
`template_version` (so the journal never mixes answers to different templates) and into every
conversation's lineage. Editing a template changes the messages, so the teacher is asked again
anyway; bump the version when the change is meant, so the lineage says which rows used which text.

Users point `templates_dir` (in the stage configs, `--templates` on the CLI) at a folder of their
own: a file there wins over the shipped one of the same name; the highest version present is used
unless a version is pinned in the config.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from datagen.errors import ConfigError

#: Shipped templates.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

_SECTION = re.compile(r"^<!--\s*section:\s*([A-Za-z0-9_.\-]+)\s*-->\s*$", re.M)
_FILE = re.compile(r"^(?P<name>.+)\.v(?P<version>\d+)\.md$")


@dataclass(frozen=True, slots=True)
class Template:
    """One template file: named sections of `string.Template` text.

    `id` is `NAME.vN` (what lineage and the journal key record); `digest` is a short hash of the
    file's text, so a locally edited copy with the same version is still told apart in lineage.
    """

    name: str
    version: int
    sections: dict[str, str]
    path: str
    digest: str
    doc: str = ""
    placeholders: frozenset[str] = field(default_factory=frozenset)
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def has(self, section: str) -> bool:
        return section in self.sections

    def variant(self, section: str, language: str | None) -> str | None:
        """The name of the section to use for a language: `section.zh-Hant`, then `section.zh`,
        then `section`; None when none exists."""
        names = []
        if language:
            names.append(f"{section}.{language}")
            base = language.split("-")[0]
            if base != language:
                names.append(f"{section}.{base}")
        names.append(section)
        return next((n for n in names if n in self.sections), None)

    def line_of(self, section: str) -> int | None:
        """The 1-based line of the file where a section's text starts (for error messages)."""
        return self.lines.get(section)

    def render(self, section: str, **values: object) -> str:
        """Fill one section. Every placeholder must have a value; extra values are ignored."""
        try:
            text = self.sections[section]
        except KeyError:
            raise ConfigError(
                f"template has no section {section!r} (has: {', '.join(self.sections)})", path=self.path
            ) from None
        try:
            return string.Template(text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise ConfigError(
                f"no value for placeholder ${exc.args[0]} in section {section!r}", path=self.path
            ) from None
        except ValueError as exc:
            raise ConfigError(f"bad placeholder in section {section!r}: {exc}", path=self.path) from None


def parse_template(text: str, *, name: str, version: int, path: str = "<string>") -> Template:
    """Split a template file's text into its sections (see the module docstring)."""
    marks = list(_SECTION.finditer(text))
    if not marks:
        raise ConfigError("template has no `<!-- section: NAME -->` marker", path=path)
    sections: dict[str, str] = {}
    lines: dict[str, int] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        key = m.group(1)
        if key in sections:
            raise ConfigError(
                f"section {key!r} appears twice", path=path, line=text.count("\n", 0, m.start()) + 1
            )
        body = text[m.end() : end]
        sections[key] = body.strip("\n").rstrip()
        lines[key] = text.count("\n", 0, m.end()) + 1 + (len(body) - len(body.lstrip("\n")))
    placeholders = frozenset(
        p
        for body in sections.values()
        for _, named, braced, _ in string.Template.pattern.findall(body)
        for p in (named or braced,)
        if p
    )
    return Template(
        name=name,
        version=version,
        sections=sections,
        path=path,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest()[:8],
        doc=text[: marks[0].start()].strip(),
        placeholders=placeholders,
        lines=lines,
    )


def available(directory: str | Path | None = None) -> dict[str, list[int]]:
    """Template name -> sorted versions found in the shipped folder and `directory`."""
    found: dict[str, set[int]] = {}
    for folder in _search_dirs(directory):
        for p in folder.rglob("*.md"):
            m = _FILE.match(p.relative_to(folder).as_posix())
            if m:
                found.setdefault(m.group("name"), set()).add(int(m.group("version")))
    return {k: sorted(v) for k, v in sorted(found.items())}


def _search_dirs(directory: str | Path | None) -> list[Path]:
    dirs = []
    if directory is not None:
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError("templates folder not found", path=str(d))
        dirs.append(d)
    dirs.append(TEMPLATES_DIR)
    return dirs


def load_template(name: str, version: int | None = None, *, directory: str | Path | None = None) -> Template:
    """Load `NAME.vN.md`: the user's folder first, then the shipped one; the highest version when
    `version` is None. `name` may contain a sub-folder (`guidance/harmless`)."""
    return _load_cached(name, version, str(directory) if directory is not None else None)


@functools.lru_cache(maxsize=256)
def _load_cached(name: str, version: int | None, directory: str | None) -> Template:
    for folder in _search_dirs(directory):
        if version is not None:
            path = folder / f"{name}.v{version}.md"
            if path.is_file():
                return _read(path, name, version)
            continue
        candidates = []
        parent = (folder / name).parent
        stem = Path(name).name
        if parent.is_dir():
            for p in parent.glob(f"{stem}.v*.md"):
                m = _FILE.match(p.name)
                if m and m.group("name") == stem:
                    candidates.append((int(m.group("version")), p))
        if candidates:
            v, path = max(candidates)
            return _read(path, name, v)
    pinned = f" version {version}" if version is not None else ""
    raise ConfigError(
        f"no template {name!r}{pinned} (looked in {', '.join(map(str, _search_dirs(directory)))})"
    )


def find_template(
    name: str, version: int | None = None, *, directory: str | Path | None = None
) -> Template | None:
    """Like `load_template`, but None when no such template exists."""
    try:
        return load_template(name, version, directory=directory)
    except ConfigError as exc:
        if str(exc).startswith("no template"):
            return None
        raise


def _read(path: Path, name: str, version: int) -> Template:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("template is not UTF-8", path=str(path)) from None
    return parse_template(text, name=name, version=version, path=str(path))
