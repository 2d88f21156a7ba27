"""The `preference:` section: where candidate answers come from, which contrastive answers plugin
turns get, and how the judge ranks them.

    preference:
      sources:                                   # K candidates per assistant turn, from any mix of:
        - kind: original                         #   the dialogue's own (kept, grounded) answer
        - kind: teacher                          #   the run's teacher, same templates as generation
          temperatures: [0.3, 1.0]
        - kind: teacher                          #   a second teacher model (same endpoint unless
          model: gpt-4o                          #   base_url / api_key_env are given)
        - kind: local                            #   the local model's own samples (transformers)
          model: path/to/moss                    #   on-policy for `datagen dpo`
          samples: 2
        - kind: server                           #   a local model behind an OpenAI endpoint (the
          base_url: http://127.0.0.1:8089/v1     #   embedded teacher), sent the plain dialogue
      contrastive: [failed_as_success, ignore_results, wrong_command]   # plugin turns only
      judge: {min_margin: 1.0}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError

SOURCE_KINDS = ("original", "teacher", "server", "local")
#: Contrastive answers of a plugin turn (see `datagen.preference.candidates`).
CONTRASTIVE_KINDS = ("failed_as_success", "ignore_results", "wrong_command")
TURN_CHOICES = ("all", "first", "last")


def _number(value: Any, where: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, got {value!r}", field=where)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"must be within [{low}, {high}], got {value!r}", field=where)
    return float(value)


def _count(value: Any, where: str, *, minimum: int = 1, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be a whole number of at least {minimum}, got {value!r}", field=where)
    return value


def _text(value: Any, where: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"must be a non-empty string, got {value!r}", field=where)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", field=where)
    known = [f.name for f in dataclasses.fields(cls) if f.name != "where"]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key (known: {', '.join(known)})", field=f"{where}.{key}")
    try:
        return cls(**data, where=where)
    except TypeError as exc:  # a missing required key
        raise ConfigError(str(exc), field=where) from None


@dataclass(slots=True)
class SourceConfig:
    """One source of candidate answers.

    Args:
        kind: `original` (the dialogue's own answer), `teacher` (the answer templates of
            generation), `server` (a model behind an OpenAI-compatible endpoint, sent the dialogue
            as plain chat messages) or `local` (a local model folder sampled with transformers).
        model: the model name (`teacher`, `server`; default the run's teacher) or the model
            folder / alias (`local`, required).
        base_url, api_key_env: another endpoint for `teacher`/`server` (default the teacher's).
        temperatures: one batch of `samples` per temperature.
        max_tokens, top_p: per-source overrides of the section's values.
        name: the label candidates carry (default: kind and model).
        device: `local` only: cpu, cuda (default: a GPU when there is one).
    """

    kind: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperatures: list[float] = field(default_factory=lambda: [0.7])
    samples: int = 1
    max_tokens: int | None = None
    top_p: float | None = None
    name: str | None = None
    device: str | None = None
    where: str = field(default="preference.sources[0]", repr=False, compare=False)

    def __post_init__(self) -> None:
        w = self.where
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(
                f"must be one of {', '.join(SOURCE_KINDS)}, got {self.kind!r}", field=f"{w}.kind"
            )
        for key in ("model", "base_url", "api_key_env", "name", "device"):
            _text(getattr(self, key), f"{w}.{key}")
        if self.kind == "local" and not self.model:
            raise ConfigError(
                "a local source needs `model` (a model folder, .gguf file or alias)", field=f"{w}.model"
            )
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"must be an http(s) URL, got {self.base_url!r}", field=f"{w}.base_url")
        if not isinstance(self.temperatures, list) or not self.temperatures:
            raise ConfigError("must be a non-empty list of numbers", field=f"{w}.temperatures")
        self.temperatures = [_number(t, f"{w}.temperatures", low=0.0, high=2.0) for t in self.temperatures]
        _count(self.samples, f"{w}.samples")
        _count(self.max_tokens, f"{w}.max_tokens", optional=True)
        if self.top_p is not None:
            _number(self.top_p, f"{w}.top_p", low=0.0, high=1.0)

    @property
    def label(self) -> str:
        """What candidates of this source are called (`teacher`, `teacher:gpt-4o`, `local:moss`)."""
        if self.name:
            return self.name
        if self.kind == "original" or not self.model:
            return self.kind
        return f"{self.kind}:{self.model.rstrip('/').rsplit('/', 1)[-1]}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "where"}


@dataclass(slots=True)
class JudgeConfig:
    """The pairwise judge.

    Args:
        model, base_url, api_key_env: the judge model and endpoint (default: the run's teacher).
        temperature, max_tokens: the judge calls' sampling.
        min_margin: how many score points (1-10 scale, averaged over both orders) the better answer
            must lead by; closer pairs are dropped as `low_margin`.
        template_version: pin `judge.vN` (default: the newest).
    """

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 300
    min_margin: float = 1.0
    template_version: int | None = None
    where: str = field(default="preference.judge", repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("model", "base_url", "api_key_env"):
            _text(getattr(self, key), f"{self.where}.{key}")
        _number(self.temperature, f"{self.where}.temperature", low=0.0, high=2.0)
        _count(self.max_tokens, f"{self.where}.max_tokens")
        _number(self.min_margin, f"{self.where}.min_margin", low=0.0, high=9.0)
        _count(self.template_version, f"{self.where}.template_version", optional=True)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "where"}


def _default_sources() -> list[SourceConfig]:
    return [SourceConfig(kind="original"), SourceConfig(kind="teacher", temperatures=[0.7, 1.0])]


@dataclass(slots=True)
class PreferenceConfig:
    """Settings of `datagen preference` (the `preference:` section of a run config).

    Args:
        sources: where the K candidates of each assistant turn come from (see `SourceConfig`).
        contrastive: contrastive answers added on plugin turns: `failed_as_success` (a failed tool
            answered as if it had worked), `ignore_results` (the Results left unused),
            `wrong_command` (another command run and answered from).
        contrastive_temperature: the sampling temperature of contrastive answers.
        judge: the pairwise judge (see `JudgeConfig`).
        turns: which assistant turns get candidates: `all`, `first` or `last`.
        max_tokens, top_p: the candidates' sampling (sources may override them).
        max_pairs_per_turn: judge at most this many candidate pairs per turn (default: every pair
            but those of two contrastive answers).
        templates_dir, template_versions: the answer templates, as in `dialogues` (a folder over
            the shipped ones; pinned versions); the judge and contrastive templates too.
        tools: plugin name -> tool options for `wrong_command` (default: each plugin's defaults).
        seed: seeds the local samples and the choice of wrong commands.
    """

    sources: list[SourceConfig] = field(default_factory=_default_sources)
    contrastive: list[str] = field(default_factory=lambda: list(CONTRASTIVE_KINDS))
    contrastive_temperature: float = 0.7
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    turns: str = "all"
    max_tokens: int = 512
    top_p: float = 0.95
    max_pairs_per_turn: int | None = None
    templates_dir: str | None = None
    template_versions: dict[str, int] = field(default_factory=dict)
    tools: dict[str, Any] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("must name at least one source of candidates", field="preference.sources")
        bad = [c for c in self.contrastive if c not in CONTRASTIVE_KINDS]
        if not isinstance(self.contrastive, list) or bad:
            raise ConfigError(
                f"must be a list of {', '.join(CONTRASTIVE_KINDS)}, got {self.contrastive!r}",
                field="preference.contrastive",
            )
        _number(self.contrastive_temperature, "preference.contrastive_temperature", low=0.0, high=2.0)
        if self.turns not in TURN_CHOICES:
            raise ConfigError(
                f"must be one of {', '.join(TURN_CHOICES)}, got {self.turns!r}", field="preference.turns"
            )
        _count(self.max_tokens, "preference.max_tokens")
        _number(self.top_p, "preference.top_p", low=0.0, high=1.0)
        _count(self.max_pairs_per_turn, "preference.max_pairs_per_turn", optional=True)
        _text(self.templates_dir, "preference.templates_dir")
        if not isinstance(self.template_versions, dict):
            raise ConfigError(
                "must be a mapping of template name to version", field="preference.template_versions"
            )
        if self.tools is not None and not isinstance(self.tools, dict):
            raise ConfigError("must be a mapping of plugin name to tool options", field="preference.tools")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"must be a whole number, got {self.seed!r}", field="preference.seed")
        labels = [s.label for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(
                f"two sources are both called {dupes[0]!r}; give one a `name`", field="preference.sources"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PreferenceConfig:
        """Build from a config section; unknown keys and bad values raise ConfigError naming the
        key (`preference.sources[1].temperatures`)."""
        data = dict(data or {})
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown key (known: {', '.join(known)})", field=f"preference.{key}")
        if "sources" in data:
            raw = data["sources"]
            if not isinstance(raw, list):
                raise ConfigError("must be a list of sources", field="preference.sources")
            sources = []
            for i, item in enumerate(raw):
                if isinstance(item, str):  # `- original` is short for `- kind: original`
                    item = {"kind": item}
                sources.append(_build(SourceConfig, item, f"preference.sources[{i}]"))
            data["sources"] = sources
        if "judge" in data:
            data["judge"] = _build(JudgeConfig, data["judge"], "preference.judge")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(str(exc), field="preference") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for fingerprints and the stats file)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["sources"] = [s.to_dict() for s in self.sources]
        out["judge"] = self.judge.to_dict()
        return out
