"""Configs of the generation stages: `ExpandConfig` (Self-Instruct expansion) and `DialogueConfig`
(HHH and plugin dialogues).

Both are slotted dataclasses validated in `__post_init__`, built from a run config section with
`from_dict`, which rejects unknown keys with a ConfigError naming the key:

    expand:
      targets: {default: 200, harmless: 100, "code/en": 50}   # per (category, language) cell
      batch_size: 8
    dialogues:
      hhh:
        options: {turns: {default: [5, 6], harmless: [2, 3, 4]}, concurrency: 32}
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from datagen.errors import ConfigError
from datagen.record import PLUGIN_COMMANDS
from datagen.seeds.record import normalize_category
from datagen.settings import check_int, reject_unknown

__all__ = ["DialogueConfig", "ExpandConfig", "TurnDistribution", "lookup", "normalize_category"]

#: Words that mark a prompt a text-only assistant cannot fulfil (Self-Instruct's list plus Chinese).
#: ASCII words match whole words; CJK entries match as substrings.
DEFAULT_BLACKLIST: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "photo",
    "photos",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "drawing",
    "plot",
    "go to",
    "video",
    "videos",
    "audio",
    "music",
    "flowchart",
    "diagram",
    "diagrams",
    "screenshot",
    "attached",
    "attachment",
    "url",
    "website link",
    "图片",
    "照片",
    "图像",
    "视频",
    "音频",
    "音乐",
    "流程图",
    "示意图",
    "画一",
    "绘制",
    "附件",
    "截图",
    "链接",
    "文件",
    "地图",
)
#: For plugin prompts: pictures are Text2Image's job, so only media a text model cannot touch.
DEFAULT_PLUGIN_BLACKLIST: tuple[str, ...] = (
    "video",
    "videos",
    "audio",
    "music",
    "file",
    "files",
    "attached",
    "attachment",
    "screenshot",
    "视频",
    "音频",
    "音乐",
    "附件",
    "截图",
    "文件",
)

#: Candidates that are the teacher talking about the task rather than a user prompt (regexes,
#: case-insensitive, searched in the candidate).
DEFAULT_REJECT_PATTERNS: tuple[str, ...] = (
    r"^(?:here (?:are|is)\b|sure\b|certainly\b|of course\b|okay\b|example\s*(?:#?\d+)?\s*[:：]|note\s*[:：]|"
    r"output\s*[:：]|answer\s*[:：]|response\s*[:：])",
    r"^(?:以下是|好的[，,]|示例[:：]|例如[:：]|注意[:：]|答案[:：]|回答[:：])",
    r"\b(?:the )?(?:user|assistant)'s (?:message|response|prompt)\b",
    r"\b(?:new|more|other|another)\s+(?:\w+\s+)?(?:user )?(?:messages|prompts)\b",
    r"\]\(#",
)

#: Turn-count distributions, per category (see `TurnDistribution`). MOSS's helpful data averages
#: 5-6 turns, harmless and honest about 3, plugin data 1-3.
#: The most turns one dialogue may have (MOSS's longest have about 10).
MAX_TURNS = 50

DEFAULT_TURNS: dict[str, dict[str, Any]] = {
    "hhh": {"default": [5, 6], "harmless": [2, 3, 4], "honest": [2, 3, 4]},
    "plugin": {"default": [1, 2, 3]},
}


def _reject_unknown(cls: type, d: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"must be a mapping, got {type(d).__name__}", field=where)
    reject_unknown(d, (f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")), where)
    return dict(d)


def _num(value: Any, name: str, where: str, lo: float = 0.0) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < lo
    ):
        raise ConfigError(f"must be a number >= {lo}, got {value!r}", field=f"{where}.{name}")


def _str_list(value: Any, name: str, where: str) -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, list | tuple)
        or not all(isinstance(x, str) for x in value)
    ):
        raise ConfigError(f"must be a list of strings, got {value!r}", field=f"{where}.{name}")
    return list(value)


def lookup(table: dict[str, Any], category: str | None, language: str | None = None) -> Any:
    """Find a per-category setting: `category/language`, then `category`, then its normalised
    name (`harmless_zh` -> `harmless`), then `default`. Returns None when nothing matches."""
    keys = []
    if category:
        if language:
            keys.append(f"{category}/{language}")
        keys.append(category)
        norm = normalize_category(category)
        if language:
            keys.append(f"{norm}/{language}")
        keys.append(norm)
    if language:
        keys.append(f"default/{language}")
    keys.append("default")
    for k in keys:
        if k in table:
            return table[k]
    return None


# --------------------------------------------------------------------------- turn counts


@dataclass(frozen=True, slots=True)
class TurnDistribution:
    """A distribution of turn counts: uniform over a list (`[2, 3, 4]`), weighted (`{3: 0.5, 4: 0.5}`),
    or one number. Draws take an explicit RNG so a dialogue's draw depends only on its seed."""

    values: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, spec: Any, where: str = "turns") -> TurnDistribution:
        """From `4`, `"2-4"`, `"3,4,5"`, `[2, 3, 4]` or `{3: 1, 4: 2}`."""
        if isinstance(spec, str):
            s = spec.strip()
            if "-" in s and "," not in s:
                lo, _, hi = s.partition("-")
                try:
                    lo_n, hi_n = int(lo), int(hi)
                except ValueError:
                    raise ConfigError(f"bad turn range {spec!r} (use e.g. 2-4)", field=where) from None
                if not 1 <= lo_n <= hi_n <= MAX_TURNS:
                    raise ConfigError(
                        f"turn range {spec!r} must lie within 1-{MAX_TURNS}, low to high", field=where
                    )
                spec = list(range(lo_n, hi_n + 1))
            else:
                try:
                    spec = [int(x) for x in s.split(",") if x.strip()]
                except ValueError:
                    raise ConfigError(f"bad turn list {spec!r} (use e.g. 3,4,5)", field=where) from None
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = [spec]
        if isinstance(spec, dict):
            try:
                pairs = [(int(k), float(v)) for k, v in spec.items()]
            except (TypeError, ValueError):
                raise ConfigError(
                    f"weighted turns must map counts to weights, got {spec!r}", field=where
                ) from None
        elif isinstance(spec, list | tuple):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
                raise ConfigError(f"turn counts must be integers, got {spec!r}", field=where)
            pairs = [(int(x), 1.0) for x in spec]
        else:
            raise ConfigError(
                f"turns must be a number, list, range or weighted mapping, got {spec!r}", field=where
            )
        if (
            not pairs
            or any(not 1 <= n <= MAX_TURNS for n, _ in pairs)
            or any(not 0 <= w < math.inf for _, w in pairs)
            or sum(w for _, w in pairs) <= 0
        ):
            raise ConfigError(
                f"turn counts must be 1 to {MAX_TURNS} with positive total weight, got {spec!r}", field=where
            )
        return cls(values=tuple(n for n, _ in pairs), weights=tuple(w for _, w in pairs))

    def draw(self, rng: random.Random) -> int:
        return rng.choices(self.values, weights=self.weights, k=1)[0]

    @property
    def mean(self) -> float:
        return sum(v * w for v, w in zip(self.values, self.weights, strict=True)) / sum(self.weights)


# --------------------------------------------------------------------------- expansion


@dataclass(slots=True)
class ExpandConfig:
    """The Self-Instruct loop.

    Args:
        targets: machine prompts wanted per (category, language) cell. Keys: `default`, a category
            (`harmless`, matched also after normalising `harmless_zh`), or `category/language`.
        batch_size: prompts asked for per request.
        k_seed, k_machine: examples per request: human seeds and earlier machine prompts of the cell.
        min_chars, max_chars: length limits of a candidate (characters, so CJK and English compare).
        blacklist: words marking something a text model cannot do (whole words for ASCII, substrings
            for CJK). `plugin_blacklist` replaces it for cells whose seeds enable plugins.
        reject_patterns: regexes marking the teacher's own commentary ("Here are...", "Example 1:",
            "the user's message") rather than a prompt; reason `meta`.
        near_dup_method, near_dup_threshold: how a candidate is found to nearly duplicate the pool
            (seeds and every prompt kept so far, all cells): `rouge` is Self-Instruct's ROUGE-L F
            above the threshold (default 0.7); `minhash` is Jaccard of character/word bigrams
            (default 0.5). Both use an incremental LSH index, never an all-pairs scan.
        check_language: reject candidates not in the cell's language.
        parallel: requests in flight per round (across cells); results are used in request order,
            so a rerun replays the same loop from the journal.
        max_requests: safety cap on requests for the whole run (None: 4x what the targets need).
        max_idle_rounds: stop a cell after this many rounds in a row that added nothing.
        temperature, top_p, max_tokens: sampling of the expansion requests.
        templates_dir, template_version: a folder of user templates, and a pinned version of `expand`.
        seed: run seed for example sampling (the pipeline passes the run's `seed`).
    """

    targets: dict[str, int] = field(default_factory=lambda: {"default": 100})
    batch_size: int = 8
    k_seed: int = 3
    k_machine: int = 2
    min_chars: int = 4
    max_chars: int = 1500
    blacklist: list[str] = field(default_factory=lambda: list(DEFAULT_BLACKLIST))
    plugin_blacklist: list[str] = field(default_factory=lambda: list(DEFAULT_PLUGIN_BLACKLIST))
    reject_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_REJECT_PATTERNS))
    near_dup_method: str = "rouge"
    near_dup_threshold: float | None = None
    check_language: bool = True
    parallel: int = 8
    max_requests: int | None = None
    max_idle_rounds: int = 3
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 2048
    templates_dir: str | None = None
    template_version: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        w = "expand"
        if isinstance(self.targets, int) and not isinstance(self.targets, bool):
            self.targets = {"default": self.targets}
        if not isinstance(self.targets, dict):
            raise ConfigError(
                f"must be a mapping of category -> count, got {self.targets!r}", field=f"{w}.targets"
            )
        for k, v in self.targets.items():
            check_int(v, f"targets.{k}", minimum=0, where=w)
        check_int(self.batch_size, "batch_size", minimum=1, where=w)
        check_int(self.k_seed, "k_seed", minimum=1, where=w)
        check_int(self.k_machine, "k_machine", minimum=0, where=w)
        check_int(self.min_chars, "min_chars", minimum=1, where=w)
        check_int(self.max_chars, "max_chars", minimum=self.min_chars, where=w)
        self.blacklist = _str_list(self.blacklist, "blacklist", w)
        self.plugin_blacklist = _str_list(self.plugin_blacklist, "plugin_blacklist", w)
        self.reject_patterns = _str_list(self.reject_patterns, "reject_patterns", w)
        for i, pattern in enumerate(self.reject_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"not a valid regex: {exc}", field=f"{w}.reject_patterns.{i}") from None
        if self.near_dup_method not in ("rouge", "minhash"):
            raise ConfigError(
                f"must be rouge or minhash, got {self.near_dup_method!r}", field=f"{w}.near_dup_method"
            )
        if self.near_dup_threshold is not None:
            _num(self.near_dup_threshold, "near_dup_threshold", w)
            if not 0 < self.near_dup_threshold <= 1:
                raise ConfigError(
                    f"must be in (0, 1], got {self.near_dup_threshold}", field=f"{w}.near_dup_threshold"
                )
        check_int(self.parallel, "parallel", minimum=1, where=w)
        if self.max_requests is not None:
            check_int(self.max_requests, "max_requests", minimum=1, where=w)
        check_int(self.max_idle_rounds, "max_idle_rounds", minimum=1, where=w)
        _num(self.temperature, "temperature", w)
        _num(self.top_p, "top_p", w)
        check_int(self.max_tokens, "max_tokens", minimum=16, where=w)
        if self.template_version is not None:
            check_int(self.template_version, "template_version", minimum=1, where=w)
        check_int(self.seed, "seed", minimum=0, where=w)
        if not isinstance(self.check_language, bool):
            raise ConfigError(
                f"must be true or false, got {self.check_language!r}", field=f"{w}.check_language"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ExpandConfig:
        """Build from the `expand:` section of a run config; unknown keys raise ConfigError."""
        return cls(**_reject_unknown(cls, d, "expand"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def target_for(self, category: str | None, language: str | None) -> int:
        """The target of one (category, language) cell."""
        v = lookup(self.targets, category, language)
        return int(v) if v is not None else 0


# --------------------------------------------------------------------------- dialogues


@dataclass(slots=True)
class DialogueConfig:
    """HHH or plugin dialogue generation.

    Args:
        kind: `hhh` or `plugin`.
        turns: per-category turn-count distributions (see `TurnDistribution`); keys as in
            `ExpandConfig.targets`. A mapping overrides the defaults per key; a single spec (`4`,
            `"2-4"`, `[3, 4]`) applies to every category. Defaults: hhh `{default: [5, 6], harmless: [2, 3, 4], honest: [2, 3, 4]}`,
            plugin `{default: [1, 2, 3]}`.
        concurrency: dialogues in progress at once (each makes its calls one after another; the
            teacher engine caps requests in flight separately). None: the teacher's concurrency,
            which keeps the engine busy.
        max_tokens, user_max_tokens, plan_max_tokens: completion limits of MOSS's answers, the
            simulated user's messages and the plugin planning call.
        temperature, top_p, user_temperature: sampling of the assistant and the simulated user.
        plugins: plugins enabled in plugin dialogues whose prompt names none (default: all four).
        content_retries: re-asks of a turn whose reply is unusable (empty, cut off at max_tokens,
            wrong language, no parseable commands, a copied example, an echo of the prompt), each
            with the rejection reason added to the prompt (for a cut-off reply, a word budget
            derived from max_tokens). A reply still cut off is never kept.
        keep_partial: when a later turn stays unusable, keep the dialogue with the turns done
            (at least `min_turns`) instead of failing it. Transient API failures always fail it so
            that a rerun finishes it.
        check_language: check the simulated user writes in the dialogue's language.
        templates_dir, template_versions: a folder of user templates; pinned versions by template name.
        seed: run seed; turn counts are drawn from an RNG seeded by (seed, dialogue id).
    """

    kind: str = "hhh"
    turns: dict[str, Any] | None = None
    concurrency: int | None = None
    max_tokens: int = 1024
    user_max_tokens: int = 256
    plan_max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    user_temperature: float = 0.9
    plugins: list[str] = field(default_factory=lambda: list(PLUGIN_COMMANDS))
    content_retries: int = 1
    keep_partial: bool = True
    min_turns: int = 1
    check_language: bool = True
    templates_dir: str | None = None
    template_versions: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    _dists: dict[str, TurnDistribution] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = "dialogues"
        if self.kind not in ("hhh", "plugin"):
            raise ConfigError(f"must be hhh or plugin, got {self.kind!r}", field=f"{w}.kind")
        if self.turns is None:
            self.turns = dict(DEFAULT_TURNS[self.kind])
        elif not isinstance(self.turns, dict):
            self.turns = {"default": self.turns}  # one distribution for every category
        else:
            self.turns = {**DEFAULT_TURNS[self.kind], **self.turns}  # per-category, over the defaults
        self._dists = {k: TurnDistribution.parse(v, f"{w}.turns.{k}") for k, v in self.turns.items()}
        if self.concurrency is not None:
            check_int(self.concurrency, "concurrency", minimum=1, where=w)
        for name in ("max_tokens", "user_max_tokens", "plan_max_tokens"):
            check_int(getattr(self, name), name, minimum=1, where=w)
        for name in ("temperature", "top_p", "user_temperature"):
            _num(getattr(self, name), name, w)
        self.plugins = _str_list(self.plugins, "plugins", w)
        bad = sorted(set(self.plugins) - set(PLUGIN_COMMANDS))
        if bad:
            raise ConfigError(
                f"unknown plugin {bad[0]!r} (known: {', '.join(PLUGIN_COMMANDS)})", field=f"{w}.plugins"
            )
        check_int(self.content_retries, "content_retries", minimum=0, where=w)
        check_int(self.min_turns, "min_turns", minimum=1, where=w)
        check_int(self.seed, "seed", minimum=0, where=w)
        for name in ("keep_partial", "check_language"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"must be true or false, got {getattr(self, name)!r}", field=f"{w}.{name}")
        if not isinstance(self.template_versions, dict):
            raise ConfigError("must be a mapping of template name -> version", field=f"{w}.template_versions")
        for k, v in self.template_versions.items():
            check_int(v, f"template_versions.{k}", minimum=1, where=w)

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any] | None,
        *,
        kind: str | None = None,
        where: str = "dialogues",
        path: str | None = None,
    ) -> DialogueConfig:
        """Build from a dict (the `options` of a `dialogues.<kind>` section); unknown keys raise
        ConfigError. `kind` fills in the kind when the dict does not name it; `where` and `path`
        name the section and file in error messages (e.g. `dialogues.hhh.options`, `run.yaml`)."""
        try:
            data = _reject_unknown(cls, d, "dialogues")
            if kind is not None:
                if data.get("kind", kind) != kind:
                    raise ConfigError(
                        f"kind {data['kind']!r} does not match {kind!r}", field="dialogues.kind"
                    )
                data["kind"] = kind
            return cls(**data)
        except ConfigError as exc:
            f = exc.field or ""
            if f == "dialogues" or f.startswith("dialogues."):
                f = where + f[len("dialogues") :]
            raise ConfigError(exc.reason, path=path or exc.path, line=exc.line, field=f or None) from None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        return d

    def turn_distribution(self, category: str | None, language: str | None = None) -> TurnDistribution:
        """The turn-count distribution of a category."""
        v = lookup(self._dists, category, language)
        assert v is not None  # "default" always exists
        return v
