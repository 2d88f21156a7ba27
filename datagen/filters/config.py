"""Filter configuration: which steps run, in which order, with which policy and thresholds.

As YAML (the `filters:` section of a run config, or `datagen filter --config`)::

    workers: 2            # worker processes for large inputs (default: all cores)
    steps:                # a list: exactly these steps, in this order
      - {name: quality}
      - {name: language, languages: [zh, en]}
      - {name: safety, policy: redact}
      - {name: near_dedup, threshold: 0.6}
      - {name: near_dedup_dialogue, type: near_dedup, unit: dialogue}

or a mapping of overrides on the default steps (order and the rest kept)::

    steps:
      boilerplate: {policy: drop}
      near_dedup: false          # short for {enabled: false}; `true` switches a step on

Keys other than `name`, `type`, `enabled` and `policy` are the step's constructor arguments; an
unknown key is a ConfigError whose field is the full dotted key inside this section
(`steps.near_dedup.treshold`, `steps.2.threshold` in the list form), so the run config loader can
point at its line.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError
from datagen.filters.base import POLICIES, BaseFilter
from datagen.settings import check_int, reject_unknown

#: (name, policy, params) of the default steps, in order: cheap per-row checks first, dedup last so
#: the first good copy of a duplicate is the one kept.
DEFAULT_STEPS: tuple[tuple[str, str | None, dict[str, Any]], ...] = (
    ("quality", None, {}),
    ("tool_failure", None, {}),
    ("length", None, {}),
    ("boilerplate", None, {}),  # tags by default
    ("language", None, {}),
    ("safety", None, {}),
    ("exact_dedup", None, {}),
    ("near_dedup", None, {}),
)

_STEP_KEYS = ("name", "type", "enabled", "policy")
_TOP_KEYS = ("steps", "workers", "chunk_size", "parallel_min_rows")


@dataclass(slots=True)
class StepConfig:
    """One step: `name` in the funnel, `type` in the registry (defaults to name)."""

    name: str
    type: str | None = None
    enabled: bool = True
    policy: str | None = None  # None: the step's own default (drop, or tag for boilerplate)
    params: dict[str, Any] = field(default_factory=dict)
    #: dotted key of this step in the config (`steps.near_dedup`, `steps.2`), for error fields.
    where: str | None = field(default=None, repr=False, compare=False)

    @property
    def step_type(self) -> str:
        return self.type or self.name

    def build(self) -> BaseFilter:
        """Instantiate the step, checking params against its constructor."""
        from datagen.filters.registry import get_step

        cls = get_step(self.step_type)
        sig = inspect.signature(cls.__init__)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        known = {n for n in sig.parameters if n not in ("self", "policy")}
        where = self.where or f"steps.{self.name}"
        if not accepts_any:
            reject_unknown(self.params, known | set(_STEP_KEYS), where)
        self._check_types(cls, where)
        try:
            kwargs = dict(self.params)
            if self.policy is not None:
                kwargs["policy"] = self.policy
            step = cls(**kwargs)
        except ConfigError as exc:
            # Constructors name their own argument (`threshold`); give the full key. A file the step
            # read (a lexicon) stays named in the message.
            reason = f"{exc.location}: {exc.reason}" if exc.path else exc.reason
            raise ConfigError(
                f"step {self.name!r}: {reason}", field=f"{where}.{exc.field}" if exc.field else where
            ) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"step {self.name!r}: {exc}", field=where) from None
        step.step_name = self.name
        step.stats.name = self.name
        return step

    def _check_types(self, cls: type, where: str) -> None:
        """Each param against the type its constructor declares (`threshold: float | None`), so
        `threshold: high` names its key instead of failing inside the step."""
        from datagen.tools.base import constructor_settings

        settings = constructor_settings(cls).settings
        for key, value in self.params.items():
            problem = settings[key].problem(value) if key in settings else None
            if problem:
                raise ConfigError(f"step {self.name!r}: {problem}", field=f"{where}.{key}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.type:
            d["type"] = self.type
        d["enabled"] = self.enabled
        if self.policy is not None:
            d["policy"] = self.policy
        d.update(self.params)
        return d


def _step_from_dict(d: Any, where: str, base: StepConfig | None = None) -> StepConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"a step must be a mapping, got {type(d).__name__}", field=where)
    name = d.get("name", base.name if base else None)
    if not name or not isinstance(name, str):
        raise ConfigError("a step needs a name", field=where)
    sc = StepConfig(
        name,
        base.type if base else None,
        base.enabled if base else True,
        base.policy if base else None,
        dict(base.params) if base else {},
        where=where,
    )
    for k, v in d.items():
        if k == "name":
            continue
        if k == "type":
            sc.type = str(v)
        elif k == "enabled":
            if not isinstance(v, bool):
                raise ConfigError(f"enabled must be true or false, got {v!r}", field=f"{where}.enabled")
            sc.enabled = v
        elif k == "policy":
            if v not in POLICIES:
                raise ConfigError(
                    f"unknown policy {v!r} (choose from {', '.join(POLICIES)})", field=f"{where}.policy"
                )
            sc.policy = v
        else:
            sc.params[k] = v
    return sc


def _step_override(name: str, over: Any) -> dict[str, Any]:
    """One value of the mapping form of `steps`: a mapping of overrides, a bool (`near_dedup: false`
    is `{enabled: false}`), or nothing (`near_dedup:` keeps the defaults)."""
    where = f"steps.{name}"
    if over is None:
        over = {}
    elif isinstance(over, bool):
        over = {"enabled": over}
    elif isinstance(over, dict):
        over = dict(over)
    else:
        raise ConfigError(
            f"step {name!r} takes true, false or a mapping of settings, got {over!r}", field=where
        )
    if "name" in over and over["name"] != name:
        raise ConfigError(
            f"step {name!r} is renamed to {over['name']!r} here; use the list form to rename",
            field=f"{where}.name",
        )
    over["name"] = name
    return over


@dataclass(slots=True)
class FilterConfig:
    """Ordered filter steps plus how to run them.

    Args:
        steps: the steps, in order (disabled ones are skipped but listed).
        workers: worker processes for large inputs; None = all cores, 1 = in-process.
        chunk_size: rows per work unit sent to a worker.
        parallel_min_rows: inputs smaller than this run in-process (worker start-up costs more).
    """

    steps: list[StepConfig] = field(
        default_factory=lambda: [StepConfig(n, None, True, p, dict(kw)) for n, p, kw in DEFAULT_STEPS]
    )
    workers: int | None = None
    chunk_size: int = 2000
    parallel_min_rows: int = 5000

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ConfigError(
                f"step name(s) used twice: {', '.join(dups)} (give one a new name and a type)", field="steps"
            )
        for name, minimum in (("workers", 1), ("chunk_size", 1), ("parallel_min_rows", 0)):
            value = getattr(self, name)
            if value is None and name == "workers":
                continue
            check_int(value, name, minimum=minimum)

    @classmethod
    def default(cls) -> FilterConfig:
        return cls()

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FilterConfig:
        """Build from a mapping (see the module docstring); ConfigError names unknown keys."""
        d = d or {}
        if not isinstance(d, dict):
            raise ConfigError(f"the filter config must be a mapping, got {type(d).__name__}")
        reject_unknown(d, _TOP_KEYS)
        base = cls()
        steps_in = d.get("steps")
        if steps_in is None:
            steps = base.steps
        elif isinstance(steps_in, list):
            # `steps.0`, not `steps[0]`: the run config loader keys YAML lines by dotted path.
            steps = [_step_from_dict(s, f"steps.{i}") for i, s in enumerate(steps_in)]
        elif isinstance(steps_in, dict):
            by_name = {s.name: s for s in base.steps}
            steps = list(base.steps)
            for name, over in steps_in.items():
                over = _step_override(name, over)
                if name in by_name:
                    steps[steps.index(by_name[name])] = _step_from_dict(over, f"steps.{name}", by_name[name])
                else:
                    steps.append(_step_from_dict(over, f"steps.{name}"))
        else:
            raise ConfigError("steps must be a list or a mapping", field="steps")
        cfg = cls(
            steps=steps,
            workers=d.get("workers"),
            chunk_size=d.get("chunk_size", 2000),
            parallel_min_rows=d.get("parallel_min_rows", 5000),
        )
        cfg.build_steps()  # validate step types and params now, not mid-run
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> FilterConfig:
        """Read YAML (or JSON); a file with a top-level `filters:` key uses that section. Errors
        name the file, the line and the key; relative lexicon paths resolve against the file's
        folder."""
        from datagen.yamlfile import read_yaml, resolve_path

        path = Path(path)
        doc = read_yaml(path)
        data, prefix = doc.data, ""
        if isinstance(data, dict) and "filters" in data:
            data, prefix = data["filters"], "filters."
        steps = data.get("steps") if isinstance(data, dict) else None
        for step in steps.values() if isinstance(steps, dict) else steps if isinstance(steps, list) else ():
            if isinstance(step, dict) and isinstance(step.get("lexicons"), list):
                step["lexicons"] = [
                    resolve_path(p, path.parent) if isinstance(p, str) else p for p in step["lexicons"]
                ]
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            key = prefix + exc.field if exc.field else None
            raise ConfigError(exc.reason, path=str(path), line=doc.line_of(key), field=key) from None

    def enabled_steps(self) -> list[StepConfig]:
        return [s for s in self.steps if s.enabled]

    def build_steps(self) -> list[BaseFilter]:
        """Fresh step objects (with empty counters) for the enabled steps, in order."""
        return [s.build() for s in self.enabled_steps()]

    def step(self, name: str) -> StepConfig:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "chunk_size": self.chunk_size,
            "parallel_min_rows": self.parallel_min_rows,
            "steps": [s.to_dict() for s in self.steps],
        }
