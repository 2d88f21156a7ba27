"""The dataset card (`README.md`) of a published datagen dataset: YAML metadata plus a body written
from the run itself.

`DatasetStats` is filled one conversation at a time while the parquet shards are written (so a
million-row dataset is described in the same pass); `render_card` turns it, the run manifest and the
funnel into Markdown: what made the data (teacher models, sampling settings, templates, cost), what
was filtered (the funnel and every filter threshold), what is inside (counts per config, split,
category, language and plugin; turn and length distributions; scores), its known limitations and how
to load it.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import yaml

from datagen.errors import ConfigError
from datagen.record import Conversation
from datagen.yamlfile import load_yaml

#: The Hub's size buckets, smallest first: (upper bound exclusive, label).
SIZE_CATEGORIES: list[tuple[float, str]] = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (math.inf, "n>1T"),
]

#: Config keys whose values must never reach a card, even if a user put them in the run config. Whole
#: key names (after `_key_words`) or suffixes, never substrings: `max_tokens` or `plan_max_tokens` are
#: settings to publish, and `api_key_env` only names an environment variable.
SECRET_KEYS = frozenset({
    "api_key", "apikey", "key", "token", "api_token", "hf_token", "hub_token", "huggingface_token",
    "access_token", "auth_token", "bearer_token", "refresh_token", "id_token", "session_token",
    "github_token", "openai_api_key", "secret", "secrets", "client_secret", "secret_key", "secret_access_key",
    "aws_secret_access_key", "private_key", "password", "passwd", "passphrase", "authorization", "auth",
    "credentials", "cookie", "cookies",
})
#: ... and any key ending in one of these (`openai_api_key`, `azure_secret`, `proxy_password`).
SECRET_SUFFIXES = ("_api_key", "_apikey", "_secret", "_secret_key", "_password", "_access_token",
                   "_auth_token", "_private_key")
#: Keys ending in `_token` or `_key` are credentials too (`hf_write_token`, `wandb_token`, `x-api-token`,
#: `access_key`, `subscription_key`), except these settings that merely look like one: tokenizer
#: special tokens and lookup keys. (`max_tokens` and `sort_keys` end in an `s` and never match.)
NOT_SECRET_KEYS = frozenset({
    "eos_token", "bos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token", "stop_token",
    "start_token", "end_token", "eom_token", "eoh_token", "eot_token", "image_token",
    "sort_key", "primary_key", "foreign_key", "public_key", "cache_key", "group_key", "partition_key",
    "shard_key", "split_key", "dedup_key", "hash_key", "id_key", "text_key", "join_key", "lookup_key",
    "index_key", "order_key", "field_key", "column_key", "label_key", "dict_key", "made_key", "request_key",
    "body_key", "band_key", "metric_key", "score_key", "message_key", "content_key", "role_key",
})
#: Query parameters that carry a credential without a credential-like name (Azure SAS, presigned URLs).
SECRET_QUERY_PARAMS = frozenset({"sig", "signature", "x_amz_signature", "x_amz_credential", "x_goog_signature",
                                 "x_goog_credential"})

#: License ids the Hub's metadata validation knows (huggingface.co/docs/hub/repositories-licenses);
#: another id still builds, with a warning that the Hub may reject the card.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail openrail++ bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0
cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0
cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
mpl-2.0 odc-by odbl osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma other
""".split())
#: Values that name no license at all: publishing with one of them is refused like a missing license.
NOT_A_LICENSE = frozenset({"unknown", "none", "n/a", "unlicensed", "tbd"})


def normalize_license(value: str | None) -> tuple[str | None, list[str]]:
    """(license id for the card, warnings). Lowercases; None/empty and placeholders such as
    `unknown` give None (no license: datagen never fills one in). Raises ValueError on text that
    cannot be a license id."""
    if value is None or not str(value).strip():
        return None, []
    lic = str(value).strip().lower()
    if lic in NOT_A_LICENSE:
        return None, [f"{value!r} is not a license; the card gets none"]
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", lic):
        raise ValueError(f"{value!r} is not a license id (e.g. apache-2.0, cc-by-4.0, mit, other)")
    warnings = []
    if lic not in HUB_LICENSES:
        warnings.append(f"license {lic!r} is not one the Hub knows; it may reject the card (use `other` for a "
                        "custom license)")
    return lic, warnings


PLUGIN_LABELS = {
    "search": "web search", "calculator": "calculator", "solver": "equation solver",
    "text2image": "text-to-image",
}


def size_category(n: int) -> str:
    """The Hub `size_categories` label for n rows (e.g. 1234 -> `1K<n<10K`)."""
    for bound, label in SIZE_CATEGORIES:
        if n < bound:
            return label
    return SIZE_CATEGORIES[-1][1]


def base_language(code: str | None) -> str | None:
    """`zh-cn` / `zh_TW` -> `zh`; `en` -> `en`; None or `unknown` -> None (the Hub wants ISO 639-1)."""
    if not code:
        return None
    base = re.split(r"[-_]", code.strip().lower())[0]
    return base if re.fullmatch(r"[a-z]{2,3}", base) and base not in ("und", "unk") else None


def _key_words(key: Any) -> str:
    """`apiKey`, `API-Key`, `api key` -> `api_key`."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key).strip())
    return re.sub(r"[\s.-]+", "_", text).lower()


def is_secret_key(key: Any) -> bool:
    """True when a config key names a credential, case-insensitive: a whole name in `SECRET_KEYS`,
    a suffix in `SECRET_SUFFIXES`, or any name ending in `_token`/`-token` or `_key`/`-key` that is
    not in `NOT_SECRET_KEYS`."""
    words = _key_words(key)
    if words in SECRET_KEYS or words.endswith(SECRET_SUFFIXES):
        return True
    return words.endswith(("_token", "_key")) and words not in NOT_SECRET_KEYS


def _secret_query_param(param: str) -> bool:
    name = unquote_plus(param.split("=", 1)[0])
    return is_secret_key(name) or _key_words(name) in SECRET_QUERY_PARAMS


def redact_url(value: str) -> str:
    """`value` without user:password in its authority and without query parameters whose names are
    secret (`?api_key=...`, `&access_token=...`, `&sig=...`); the other parameters keep their exact
    text. A string that is not a URL is returned unchanged."""
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    changed = False
    if parts.username or parts.password:
        host = f"[{host}]" if host and ":" in host else (host or "")
        parts = parts._replace(netloc=host + (f":{port}" if port else ""))
        changed = True
    if parts.query:
        params = parts.query.split("&")
        kept = [p for p in params if not _secret_query_param(p)]
        if len(kept) != len(params):
            parts = parts._replace(query="&".join(kept))
            changed = True
    return parts.geturl() if changed else value


def redact(value: Any) -> Any:
    """A copy of a config value with secret keys (`is_secret_key`) dropped and credentials removed
    from URLs (`redact_url`)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


@dataclass(slots=True)
class Summary:
    """Order statistics of a list of numbers."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: array | list[float]) -> Summary | None:
        finite = sorted(v for v in values if math.isfinite(v))
        if not finite:
            return None

        def q(p: float) -> float:
            return finite[min(len(finite) - 1, int(p * (len(finite) - 1) + 0.5))]

        return cls(count=len(finite), mean=sum(finite) / len(finite), min=finite[0], p50=q(0.5), p90=q(0.9),
                   p99=q(0.99), max=finite[-1])


@dataclass(slots=True)
class DatasetStats:
    """Counts and distributions over the published rows, filled by `add` while shards are written."""

    rows: int = 0
    splits: dict[str, Counter] = field(default_factory=dict)  # config -> split -> rows
    categories: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    plugins: Counter = field(default_factory=Counter)  # plugin -> conversations that enable it
    tool_calls: Counter = field(default_factory=Counter)  # MOSS command -> calls
    failed_calls: int = 0
    inner_thoughts: int = 0
    turns: Counter = field(default_factory=Counter)  # number of turns -> conversations
    dialogue_chars: array = field(default_factory=lambda: array("q"))
    reply_chars: array = field(default_factory=lambda: array("q"))
    teacher_models: Counter = field(default_factory=Counter)
    template_versions: Counter = field(default_factory=Counter)
    sampling: Counter = field(default_factory=Counter)  # JSON of lineage params -> conversations
    scores: dict[str, array] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, conv: Conversation, config: str, split: str) -> None:
        self.rows += 1
        self.splits.setdefault(config, Counter())[split] += 1
        self.categories[conv.category or "(none)"] += 1
        self.languages[conv.language or "(unknown)"] += 1
        for p in conv.plugins or ["(none)"]:
            self.plugins[p] += 1
        self.inner_thoughts += bool(conv.inner_thoughts)
        self.turns[len(conv.turns)] += 1
        self.dialogue_chars.append(sum(len(t) for t in conv.texts()))
        for t in conv.turns:
            self.reply_chars.append(len(t.assistant))
            for c in t.calls:
                self.tool_calls[c.name] += 1
            self.failed_calls += sum(1 for r in t.results if not r.ok)
        lin = conv.lineage
        self.teacher_models[lin.teacher_model or "(unknown)"] += 1
        self.template_versions[lin.template_version or "(unknown)"] += 1
        if lin.params:
            self.sampling[json.dumps(lin.params, sort_keys=True, default=str)] += 1
        for key, value in conv.scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.scores.setdefault(key, array("d")).append(float(value))
        self.prompt_tokens += conv.usage.prompt_tokens
        self.completion_tokens += conv.usage.completion_tokens
        self.cost += conv.usage.cost


@dataclass(slots=True)
class SentSampling:
    """Sampling parameters the teacher was actually sent: one parameter set of one prompt template
    (`hhh_assistant.v2`, `expand.v3`, ...) and model, and how many answered calls used it."""

    template: str
    model: str
    params: dict[str, Any]
    calls: int


@dataclass(slots=True)
class CardContext:
    """Everything the card is written from. `manifest`/`funnel` are None when the dataset was built
    from a plain conversations file instead of a run directory."""

    stats: DatasetStats
    license: str | None
    repo_id: str | None = None
    pretty_name: str | None = None
    manifest: dict[str, Any] | None = None
    funnel: dict[str, Any] | None = None
    source: str = ""
    validation_fraction: float = 0.05
    data_files: dict[str, dict[str, str]] = field(default_factory=dict)  # config -> split -> glob
    dataset_info: Any = None  # datasets.DatasetInfosDict, written into the YAML
    extras: list[str] = field(default_factory=list)  # extra files shipped beside the parquet
    datagen_version: str = ""
    sent: list[SentSampling] | None = None  # from the run's journal; None when it had none

    @property
    def run_config(self) -> dict[str, Any]:
        return (self.manifest or {}).get("config") or {}

    @property
    def name(self) -> str:
        if self.pretty_name:
            return self.pretty_name
        if self.repo_id:
            return self.repo_id.split("/")[-1]
        return (self.manifest or {}).get("name") or "datagen dataset"


# --------------------------------------------------------------------------------------- metadata

def card_metadata(ctx: CardContext) -> dict[str, Any]:
    """The card's YAML metadata. `license` is left out (not defaulted) when none was given."""
    s = ctx.stats
    langs = sorted({b for code in s.languages if (b := base_language(code))})
    tags = ["synthetic", "datagen", "moss", "multi-turn", "conversational", "sft"]
    if any(p != "(none)" for p in s.plugins):
        tags.append("tool-use")
    meta: dict[str, Any] = {}
    if ctx.license:
        meta["license"] = ctx.license
    meta["pretty_name"] = ctx.name
    if langs:
        meta["language"] = langs
        meta["multilinguality"] = ["multilingual" if len(langs) > 1 else "monolingual"]
    meta["task_categories"] = ["text-generation"]
    meta["task_ids"] = ["dialogue-modeling"]
    meta["size_categories"] = [size_category(s.rows)]
    meta["annotations_creators"] = ["machine-generated"]
    meta["language_creators"] = ["machine-generated"]
    meta["source_datasets"] = ["original"]
    meta["tags"] = tags
    # The first config is the default, so `load_dataset(repo)` needs no config name.
    meta["configs"] = [
        {"config_name": config, **({"default": True} if i == 0 else {}),
         "data_files": [{"split": split, "path": glob} for split, glob in splits.items()]}
        for i, (config, splits) in enumerate(ctx.data_files.items())
    ]
    if ctx.dataset_info:
        ctx.dataset_info.to_dataset_card_data(meta)
    return meta


def split_card(text: str, *, path: str = "README.md") -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of a card; ({}, text) when it has no front matter. Goes through the one
    bounded YAML loader, so a hostile card cannot expand without limit. Raises ConfigError (naming
    `path` and the line) on malformed YAML or metadata that is not a mapping."""
    m = re.match(r"^---\n(.*?\n)?---\n", text, re.S)
    if not m:
        return {}, text
    meta = load_yaml(m.group(1) or "", path=path).data or {}
    if not isinstance(meta, dict):
        raise ConfigError("card metadata must be a mapping", path=path, line=2)
    return meta, text[m.end():]


# ------------------------------------------------------------------------------------------ body

def _md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _counts_table(title: str, counter: Counter, total: int, limit: int = 30) -> str:
    items = counter.most_common()
    rows = [[k, n, _pct(n, total)] for k, n in items[:limit]]
    if len(items) > limit:
        rest = sum(n for _, n in items[limit:])
        rows.append([f"({len(items) - limit} more)", rest, _pct(rest, total)])
    return _md_table([title, "dialogues", "share"], rows)


def _summary_rows(label: str, s: Summary | None, unit: str = "") -> list[Any]:
    if s is None:
        return [label, 0, "-", "-", "-", "-", "-", "-"]
    return [label + unit, s.count, s.mean, s.min, s.p50, s.p90, s.p99, s.max]


def funnel_markdown(funnel: dict[str, Any] | None) -> str:
    """The run's funnel as a Markdown table (step, in, kept, dropped, tagged, kept share, reasons)."""
    if not funnel or not funnel.get("steps"):
        return ("**Funnel unknown.** This dataset was published from a plain conversations file, not a "
                "datagen run directory, so the steps that produced and filtered it are not recorded here.")
    rows = []
    for step in funnel["steps"]:
        n_in, kept = int(step.get("in", 0)), int(step.get("kept", 0))
        reasons = sorted((step.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        why = ", ".join(f"{r} ({n:,})" for r, n in reasons[:5])
        if len(reasons) > 5:
            why += f", {len(reasons) - 5} more"
        rows.append([step.get("step", "?"), n_in, kept, int(step.get("dropped", 0)), int(step.get("tagged", 0)),
                     _pct(kept, n_in), why])
    table = _md_table(["step", "in", "kept", "dropped", "tagged", "kept share", "drop reasons"], rows,
                      "lrrrrrl")
    n_in, kept = int(funnel.get("input", 0)), int(funnel.get("kept", 0))
    return f"{table}\n\nOverall: {n_in:,} in, {kept:,} kept ({_pct(kept, n_in)})."


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, value)]


def _settings_table(section: Any, empty: str) -> str:
    pairs = [(k, v) for k, v in _flatten(redact(section)) if k]
    if not pairs:
        return empty
    return _md_table(["setting", "value"], [[f"`{k}`", f"`{json.dumps(v, ensure_ascii=False, default=str)}`"]
                                            for k, v in pairs], "ll")


def _load_snippet(ctx: CardContext) -> str:
    repo = ctx.repo_id or "ORG/NAME"
    configs = list(ctx.data_files) or ["hhh"]
    first = configs[0]
    lines = [
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo}", split="train")  # the default config, `{first}`',
    ]
    lines += [f'{c} = load_dataset("{repo}", "{c}", split="train")' for c in configs[1:]]
    lines += [
        "print(ds[0][\"messages\"])  # the dialogue as OpenAI chat messages",
        "```",
        "",
        "Every column is a plain Arrow type (strings, numbers, lists, structs), so any `datasets` from 3.6 on,",
        "pandas or any parquet reader loads the files as they are.",
        "",
        "Each row also keeps the full MOSS 003 record (`meta_instruction`, `turns`), so the exact MOSS",
        "training text can be rebuilt with datagen:",
        "",
        "```python",
        "from datagen.publish import row_to_conversation",
        "from datagen.formats.moss import render_text",
        "",
        "text = render_text(row_to_conversation(ds[0]))",
        "```",
    ]
    if any(e.startswith("moss/") for e in ctx.extras):
        lines += ["", "`moss/train.jsonl` and `moss/val.jsonl` hold the same dialogues as MOSS SFT records "
                  "(one JSON object per line, the schema of MOSS's `SFT_data`), ready for `finetune_moss.py`."]
    return "\n".join(lines)


def _sampling(ctx: CardContext) -> str:
    """What the teacher was sent, per prompt template: from the journal when the run had one, else
    the dialogue settings each row's lineage recorded. Each stage sets its own temperature, top_p
    and max_tokens on every call, so `teacher.params` alone would not say what was sent."""
    s = ctx.stats
    out: list[str] = []
    if ctx.sent:
        out.append("Parameters sent to the teacher, from the run's journal (answered calls per prompt template "
                   "and parameter set):")
        out.append("")
        out.append(_md_table(["prompt template", "model", "parameters sent", "calls"],
                             [[f"`{x.template}`", f"`{x.model}`",
                               f"`{json.dumps(x.params, sort_keys=True, ensure_ascii=False, default=str)}`", x.calls]
                              for x in ctx.sent], "lllr"))
    elif ctx.manifest:
        out.append("_The run's journal was not available, so the parameters of each call are not listed; the "
                   "dialogue settings recorded on the rows follow._")
    if s.sampling:
        out.append("")
        out.append("Dialogue settings recorded on the rows (`lineage.params`: `temperature`, `top_p` and "
                   "`max_tokens` of the assistant's calls, `user_temperature` and `user_max_tokens` of the simulated "
                   "user's):")
        out.append("")
        out.append(_md_table(["parameters", "dialogues"],
                             [[f"`{k}`", n] for k, n in s.sampling.most_common(10)], "lr"))
    teacher = ctx.run_config.get("teacher")
    shared = teacher.get("params") if isinstance(teacher, dict) else None
    if shared:
        out.append("")
        out.append("`teacher.params` of the run config, joined to every call; a stage's own `temperature`, "
                   "`top_p` and `max_tokens` win over these:")
        out.append("")
        out.append(_settings_table(shared, ""))
    return "\n".join(out).strip("\n") or "_No sampling settings recorded._"


def _made_section(ctx: CardContext) -> str:
    s = ctx.stats
    m = ctx.manifest or {}
    cfg = ctx.run_config
    out: list[str] = []
    if m:
        out.append(f"Made by datagen {m.get('versions', {}).get('datagen', ctx.datagen_version)} in run "
                   f"`{m.get('name', '?')}` (fingerprint `{m.get('fingerprint', '?')}`, "
                   f"created {m.get('created', '?')}).")
    else:
        out.append(f"Built by datagen {ctx.datagen_version} from `{ctx.source}`; the run that made the "
                   "conversations is not recorded beyond the per-row lineage below.")
    out.append("")
    out.append("### Teacher models")
    out.append("")
    out.append(_md_table(["teacher model (from row lineage)", "dialogues", "share"],
                         [[k, n, _pct(n, s.rows)] for k, n in s.teacher_models.most_common()]))
    teacher = cfg.get("teacher")
    if isinstance(teacher, dict):
        out.append("")
        url = teacher.get("base_url")
        host = urlsplit(url).hostname if isinstance(url, str) else None
        out.append(f"Configured teacher: `{teacher.get('model', '?')}`" + (f" at `{host}`" if host else "") + ".")
    out.append("")
    out.append("Prompt template versions: " + ", ".join(f"`{k}` ({n:,})" for k, n in s.template_versions.most_common())
               + ".")
    out.append("")
    out.append("### Sampling")
    out.append("")
    out.append(_sampling(ctx))
    stages = m.get("stages") or {}
    costs = [(name, st) for name, st in stages.items() if isinstance(st, dict)]
    if costs:
        out.append("")
        out.append("### Stages")
        out.append("")
        rows = [[name, st.get("status", "?"), st.get("count", ""), float(st.get("cost") or 0.0),
                 st.get("started", ""), st.get("finished", "")] for name, st in costs]
        out.append(_md_table(["stage", "status", "rows", "cost (USD)", "started", "finished"], rows, "llrrll"))
    out.append("")
    out.append(f"Teacher usage on the published rows: {s.prompt_tokens:,} prompt tokens, "
               f"{s.completion_tokens:,} completion tokens, ${s.cost:,.2f}"
               + (f"; whole run: ${float(m['cost']):,.2f}" if m.get("cost") is not None else "") + ".")
    versions = m.get("versions")
    if versions:
        out.append("")
        out.append("Library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return "\n".join(out)


def _composition_section(ctx: CardContext) -> str:
    s = ctx.stats
    out: list[str] = []
    out.append(_counts_table("category", s.categories, s.rows))
    out.append("")
    out.append(_counts_table("language", s.languages, s.rows))
    out.append("")
    plugin_rows = Counter({PLUGIN_LABELS.get(k, k): n for k, n in s.plugins.items()})
    out.append(_counts_table("plugin enabled", plugin_rows, s.rows))
    if s.tool_calls:
        out.append("")
        out.append("Tool calls: " + ", ".join(f"`{k}` {n:,}" for k, n in s.tool_calls.most_common())
                   + f"; {s.failed_calls:,} returned `No result.`")
    out.append("")
    out.append(f"Inner thoughts enabled in {s.inner_thoughts:,} of {s.rows:,} dialogues.")
    out.append("")
    out.append("### Turns and lengths")
    out.append("")
    out.append(_md_table(["turns", "dialogues", "share"],
                         [[k, n, _pct(n, s.rows)] for k, n in sorted(s.turns.items())]))
    out.append("")
    head = ["length (characters)", "count", "mean", "min", "p50", "p90", "p99", "max"]
    out.append(_md_table(head, [_summary_rows("whole dialogue (human + assistant)", Summary.of(s.dialogue_chars)),
                                _summary_rows("one assistant reply", Summary.of(s.reply_chars))]))
    if s.scores:
        out.append("")
        out.append("### Scores")
        out.append("")
        out.append("Numbers later stages attached to each row (`scores` column), e.g. the local model's loss on "
                   "the assistant tokens:")
        out.append("")
        out.append(_md_table(["score", "count", "mean", "min", "p50", "p90", "p99", "max"],
                             [_summary_rows(f"`{k}`", Summary.of(v)) for k, v in sorted(s.scores.items())]))
    return "\n".join(out)


def _limitations(ctx: CardContext) -> str:
    s = ctx.stats
    review = next((st for st in (ctx.funnel or {}).get("steps", []) if st.get("step") == "review"), None)
    if review is None:
        reviewed = "nobody reviewed rows by hand."
    else:
        reviewed = (f"people reviewed some rows by hand (`datagen review`): {int(review.get('dropped', 0))} "
                    f"rejected, {int(review.get('edited', 0))} edited, {int(review.get('accepted', 0))} "
                    "accepted; the rest were not looked at.")
    items = [
        "Every assistant turn, and every prompt after the seeds, was written by a language model. Expect "
        "confident factual errors, dated knowledge and the teacher's own biases; " + reviewed,
        "The teacher model's terms of use may restrict what you may train with its outputs; check them "
        "before using this data commercially. The license above covers the dataset as published, not the "
        "teacher's terms.",
        "The filters are heuristics with the thresholds listed above: they remove the failures they target "
        "(refusals, wrong language, duplicates, broken format, ...), not every low-quality row.",
        "Languages come from automatic detection and can be wrong on short or mixed-language dialogues.",
        f"`validation` is {ctx.validation_fraction:.1%} of dialogues chosen by a hash of the dialogue id: stable "
        "across rebuilds but not stratified; near-duplicates of a training prompt can still appear in it.",
    ]
    if any(p != "(none)" for p in s.plugins):
        items.append("Tool results (search snippets, calculator and solver outputs, image messages) come from "
                     "the tool backends configured for the run (see the run config), which may be simulated "
                     "rather than live services; search snippets are not a snapshot of the web.")
    if not ctx.manifest:
        items.append("Built from a plain conversations file: the funnel, filters and sampling settings of the "
                     "run that made them are unknown.")
    return "\n".join(f"- {x}" for x in items)


_FIELDS = """\
| column | type | meaning |
|---|---|---|
| `id` | string | the dialogue id (stable across stages; decides the split) |
| `category` | string | seed category (e.g. `writing`, `code`, `harmless_en`) |
| `language` | string | detected language code |
| `plugins` | list of string | enabled tools: `search`, `calculator`, `solver`, `text2image` |
| `inner_thoughts` | bool | whether the meta instruction enables inner thoughts |
| `meta_instruction` | string | the exact MOSS 003 meta instruction |
| `num_turns` | int | number of turns |
| `turns` | list of struct | per turn: `human`, `thoughts`, `calls` (`name`, `arg`), `results` (`name`, `arg`, `ok`, `output`, `snippets`, `first_index`), `assistant`, `flags`, `raw` (verbatim MOSS segments where the source differs from the canonical rendering) |
| `messages` | list of struct | the same dialogue as OpenAI chat messages: `role`, `content`, `reasoning_content`, `tool_calls` (`id`, `type`, `function`: `name`, `arguments` as a JSON string), `tool_call_id`; null where a message has no such field |
| `tools` | list of string | OpenAI function schemas of the enabled plugins, one JSON object each (empty for `hhh`) |
| `lineage` | struct | `teacher_model`, `template_version`, `params` (sampling parameters, a JSON string), `seed_id`, `source`, `source_id`, `parents`, `run` |
| `usage` | struct | teacher tokens and cost spent on this dialogue |
| `scores` | struct | numbers added by later stages (e.g. `moss_loss`, `moss_ppl`; null where a row has none) |
| `tags` | string | filter verdicts kept on the row (JSON object: step -> reason) |
| `extra` | string | fields of the source kept verbatim (JSON object) |"""


def render_card(ctx: CardContext) -> str:
    """The whole `README.md`: YAML front matter, then the body."""
    meta = card_metadata(ctx)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    s = ctx.stats
    cfg = ctx.run_config
    parts: list[str] = [f"---\n{front}---\n", f"# {ctx.name}\n"]
    if not ctx.license:
        parts.append("> **No license set.** datagen does not choose a license for you. Set `publish.license` in "
                     "the run config or pass `--license` before publishing; `datagen publish` refuses to upload "
                     "without one.\n")
    kinds = ", ".join(f"`{c}` {sum(v.values()):,}" for c, v in ctx.stats.splits.items())
    how = ("generated with datagen from seed user prompts by a teacher LLM, filtered, and checked before upload"
           if ctx.manifest else f"published with datagen from `{ctx.source}` and checked before upload")
    parts.append(
        f"{s.rows:,} multi-turn dialogues in the [MOSS 003](https://github.com/OpenLMLab/MOSS) format "
        f"({kinds}), {how}. Every row carries its lineage (teacher model, template version, sampling "
        "parameters, where known) and the scores later stages gave it.\n")
    parts.append("## Load it\n")
    parts.append(_load_snippet(ctx) + "\n")
    parts.append("## Configs and splits\n")
    rows = []
    for config, counter in ctx.stats.splits.items():
        rows.append([f"`{config}`", counter.get("train", 0), counter.get("validation", 0), sum(counter.values())])
    rows.append(["**total**", sum(c.get("train", 0) for c in s.splits.values()),
                 sum(c.get("validation", 0) for c in s.splits.values()), s.rows])
    parts.append(_md_table(["config", "train", "validation", "total"], rows) + "\n")
    parts.append("`hhh`: plain helpful/honest/harmless chat, no tools. `plugin`: dialogues with tools enabled "
                 "(web search, calculator, equation solver, text-to-image), with the commands and results.\n")
    parts.append("## How it was made\n")
    parts.append(_made_section(ctx) + "\n")
    parts.append("## Funnel\n")
    parts.append("Rows in and out of every step of the run, from prompt expansion to the local-model check:\n")
    parts.append(funnel_markdown(ctx.funnel) + "\n")
    parts.append("## Filters and thresholds\n")
    if ctx.manifest:
        parts.append(_settings_table(cfg.get("filters"), "_The run config set no filter options; defaults apply._")
                     + "\n")
        check = cfg.get("check")
        if isinstance(check, dict) and check.get("enabled"):
            parts.append("Local-model check:\n")
            parts.append(_settings_table(check, "") + "\n")
    else:
        parts.append("_Unknown: not built from a datagen run directory._\n")
    parts.append("## Composition\n")
    parts.append(_composition_section(ctx) + "\n")
    parts.append("## Fields\n")
    parts.append(_FIELDS + "\n")
    parts.append("## Known limitations\n")
    parts.append(_limitations(ctx) + "\n")
    parts.append("## Provenance files\n")
    parts.append("`datagen/build.json` records how this folder was built (source, counts, files); "
                 + ("`datagen/manifest.json` and `datagen/funnel.json` are the run's own records (secrets "
                    "removed)." if ctx.manifest else "no run manifest was available.") + "\n")
    parts.append("## Credits\n")
    parts.append("The dialogue format is MOSS 003's (OpenLMLab/MOSS, Fudan University).\n")
    return "\n".join(parts)
