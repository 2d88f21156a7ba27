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
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from datagen.errors import ConfigError
from datagen.funnel import _md_table, _pct, funnel_markdown
from datagen.publish.redact import redact
from datagen.publish.stats import DatasetStats, Summary, base_language, size_category
from datagen.yamlfile import load_yaml

PLUGIN_LABELS = {
    "search": "web search",
    "calculator": "calculator",
    "solver": "equation solver",
    "text2image": "text-to-image",
}


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
    preference: Any = None  # datagen.publish.preference.PreferenceStats when the folder has pairs
    judge: dict[str, Any] | None = None  # the run's judge report (publish/card_judge.py); None: no judge

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
    if ctx.preference is not None:
        tags += ["preference", "dpo"]
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
        {
            "config_name": config,
            **({"default": True} if i == 0 else {}),
            "data_files": [{"split": split, "path": glob} for split, glob in splits.items()],
        }
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
    return meta, text[m.end() :]


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
    return _md_table(
        ["setting", "value"],
        [[f"`{k}`", f"`{json.dumps(v, ensure_ascii=False, default=str)}`"] for k, v in pairs],
        "ll",
    )


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
        'print(ds[0]["messages"])  # the dialogue as OpenAI chat messages',
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
        lines += [
            "",
            "`moss/train.jsonl` and `moss/val.jsonl` hold the same dialogues as MOSS SFT records "
            "(one JSON object per line, the schema of MOSS's `SFT_data`), ready for `finetune_moss.py`.",
        ]
    return "\n".join(lines)


def _sampling(ctx: CardContext) -> str:
    """What the teacher was sent, per prompt template: from the journal when the run had one, else
    the dialogue settings each row's lineage recorded. Each stage sets its own temperature, top_p
    and max_tokens on every call, so `teacher.params` alone would not say what was sent."""
    s = ctx.stats
    out: list[str] = []
    if ctx.sent:
        out.append(
            "Parameters sent to the teacher, from the run's journal (answered calls per prompt template "
            "and parameter set):"
        )
        out.append("")
        out.append(
            _md_table(
                ["prompt template", "model", "parameters sent", "calls"],
                [
                    [
                        f"`{x.template}`",
                        f"`{x.model}`",
                        f"`{json.dumps(x.params, sort_keys=True, ensure_ascii=False, default=str)}`",
                        x.calls,
                    ]
                    for x in ctx.sent
                ],
                "lllr",
            )
        )
    elif ctx.manifest:
        out.append(
            "_The run's journal was not available, so the parameters of each call are not listed; the "
            "dialogue settings recorded on the rows follow._"
        )
    if s.sampling:
        out.append("")
        out.append(
            "Dialogue settings recorded on the rows (`lineage.params`: `temperature`, `top_p` and "
            "`max_tokens` of the assistant's calls, `user_temperature` and `user_max_tokens` of the simulated "
            "user's):"
        )
        out.append("")
        out.append(
            _md_table(
                ["parameters", "dialogues"], [[f"`{k}`", n] for k, n in s.sampling.most_common(10)], "lr"
            )
        )
    teacher = ctx.run_config.get("teacher")
    shared = teacher.get("params") if isinstance(teacher, dict) else None
    if shared:
        out.append("")
        out.append(
            "`teacher.params` of the run config, joined to every call; a stage's own `temperature`, "
            "`top_p` and `max_tokens` win over these:"
        )
        out.append("")
        out.append(_settings_table(shared, ""))
    return "\n".join(out).strip("\n") or "_No sampling settings recorded._"


def _made_section(ctx: CardContext) -> str:
    s = ctx.stats
    m = ctx.manifest or {}
    cfg = ctx.run_config
    out: list[str] = []
    if m:
        out.append(
            f"Made by datagen {m.get('versions', {}).get('datagen', ctx.datagen_version)} in run "
            f"`{m.get('name', '?')}` (fingerprint `{m.get('fingerprint', '?')}`, "
            f"created {m.get('created', '?')})."
        )
    else:
        out.append(
            f"Built by datagen {ctx.datagen_version} from `{ctx.source}`; the run that made the "
            "conversations is not recorded beyond the per-row lineage below."
        )
    out.append("")
    out.append("### Teacher models")
    out.append("")
    out.append(
        _md_table(
            ["teacher model (from row lineage)", "dialogues", "share"],
            [[k, n, _pct(n, s.rows)] for k, n in s.teacher_models.most_common()],
        )
    )
    teacher = cfg.get("teacher")
    if isinstance(teacher, dict):
        out.append("")
        url = teacher.get("base_url")
        host = urlsplit(url).hostname if isinstance(url, str) else None
        out.append(
            f"Configured teacher: `{teacher.get('model', '?')}`" + (f" at `{host}`" if host else "") + "."
        )
    out.append("")
    out.append(
        "Prompt template versions: "
        + ", ".join(f"`{k}` ({n:,})" for k, n in s.template_versions.most_common())
        + "."
    )
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
        rows = [
            [
                name,
                st.get("status", "?"),
                st.get("count", ""),
                float(st.get("cost") or 0.0),
                st.get("started", ""),
                st.get("finished", ""),
            ]
            for name, st in costs
        ]
        out.append(
            _md_table(["stage", "status", "rows", "cost (USD)", "started", "finished"], rows, "llrrll")
        )
    out.append("")
    out.append(
        f"Teacher usage on the published rows: {s.prompt_tokens:,} prompt tokens, "
        f"{s.completion_tokens:,} completion tokens, ${s.cost:,.2f}"
        + (f"; whole run: ${float(m['cost']):,.2f}" if m.get("cost") is not None else "")
        + "."
    )
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
        out.append(
            "Tool calls: "
            + ", ".join(f"`{k}` {n:,}" for k, n in s.tool_calls.most_common())
            + f"; {s.failed_calls:,} returned `No result.`"
        )
    out.append("")
    out.append(f"Inner thoughts enabled in {s.inner_thoughts:,} of {s.rows:,} dialogues.")
    out.append("")
    out.append("### Turns and lengths")
    out.append("")
    out.append(
        _md_table(
            ["turns", "dialogues", "share"], [[k, n, _pct(n, s.rows)] for k, n in sorted(s.turns.items())]
        )
    )
    out.append("")
    head = ["length (characters)", "count", "mean", "min", "p50", "p90", "p99", "max"]
    out.append(
        _md_table(
            head,
            [
                _summary_rows("whole dialogue (human + assistant)", Summary.of(s.dialogue_chars)),
                _summary_rows("one assistant reply", Summary.of(s.reply_chars)),
            ],
        )
    )
    if s.scores:
        out.append("")
        out.append("### Scores")
        out.append("")
        out.append(
            "Numbers later stages attached to each row (`scores` column), e.g. the local model's loss on "
            "the assistant tokens:"
        )
        out.append("")
        out.append(
            _md_table(
                ["score", "count", "mean", "min", "p50", "p90", "p99", "max"],
                [_summary_rows(f"`{k}`", Summary.of(v)) for k, v in sorted(s.scores.items())],
            )
        )
    return "\n".join(out)


def _limitations(ctx: CardContext) -> str:
    s = ctx.stats
    review = next((st for st in (ctx.funnel or {}).get("steps", []) if st.get("step") == "review"), None)
    if review is None:
        reviewed = "nobody reviewed rows by hand."
    else:
        reviewed = (
            f"people reviewed some rows by hand (`datagen review`): {int(review.get('dropped', 0))} "
            f"rejected, {int(review.get('edited', 0))} edited, {int(review.get('accepted', 0))} "
            "accepted; the rest were not looked at."
        )
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
        items.append(
            "Tool results (search snippets, calculator and solver outputs, image messages) come from "
            "the tool backends configured for the run (see the run config), which may be simulated "
            "rather than live services; search snippets are not a snapshot of the web."
        )
    if not ctx.manifest:
        items.append(
            "Built from a plain conversations file: the funnel, filters and sampling settings of the "
            "run that made them are unknown."
        )
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
        parts.append(
            "> **No license set.** datagen does not choose a license for you. Set `publish.license` in "
            "the run config or pass `--license` before publishing; `datagen publish` refuses to upload "
            "without one.\n"
        )
    kinds = ", ".join(f"`{c}` {sum(v.values()):,}" for c, v in ctx.stats.splits.items())
    how = (
        "generated with datagen from seed user prompts by a teacher LLM, filtered, and checked before upload"
        if ctx.manifest
        else f"published with datagen from `{ctx.source}` and checked before upload"
    )
    parts.append(
        f"{s.rows:,} multi-turn dialogues in the [MOSS 003](https://github.com/OpenLMLab/MOSS) format "
        f"({kinds}), {how}. Every row carries its lineage (teacher model, template version, sampling "
        "parameters, where known) and the scores later stages gave it.\n"
    )
    parts.append("## Load it\n")
    parts.append(_load_snippet(ctx) + "\n")
    parts.append("## Configs and splits\n")
    rows = []
    for config, counter in ctx.stats.splits.items():
        rows.append(
            [f"`{config}`", counter.get("train", 0), counter.get("validation", 0), sum(counter.values())]
        )
    rows.append(
        [
            "**total**",
            sum(c.get("train", 0) for c in s.splits.values()),
            sum(c.get("validation", 0) for c in s.splits.values()),
            s.rows,
        ]
    )
    if ctx.preference is not None:
        pairs = ctx.preference.splits
        rows.append(
            ["`preference` (pairs)", pairs.get("train", 0), pairs.get("validation", 0), ctx.preference.rows]
        )
    parts.append(_md_table(["config", "train", "validation", "total"], rows) + "\n")
    parts.append(
        "`hhh`: plain helpful/honest/harmless chat, no tools. `plugin`: dialogues with tools enabled "
        "(web search, calculator, equation solver, text-to-image), with the commands and results."
        + (" `preference`: chosen/rejected answer pairs (below)." if ctx.preference is not None else "")
        + "\n"
    )
    parts.append("## How it was made\n")
    parts.append(_made_section(ctx) + "\n")
    parts.append("## Funnel\n")
    parts.append(
        "Rows in and out of every step of the run, from prompt expansion to the local-model check:\n"
    )
    parts.append(funnel_markdown(ctx.funnel) + "\n")
    parts.append("## Filters and thresholds\n")
    if ctx.manifest:
        parts.append(
            _settings_table(cfg.get("filters"), "_The run config set no filter options; defaults apply._")
            + "\n"
        )
        check = cfg.get("check")
        if isinstance(check, dict) and check.get("enabled"):
            parts.append("Local-model check:\n")
            parts.append(_settings_table(check, "") + "\n")
    else:
        parts.append("_Unknown: not built from a datagen run directory._\n")
    if ctx.judge:
        from datagen.publish.card_judge import judge_section

        parts.append("## Judge scores\n")
        parts.append(judge_section(ctx.judge, cfg, ctx.funnel) + "\n")
    parts.append("## Composition\n")
    parts.append(_composition_section(ctx) + "\n")
    if ctx.preference is not None:
        from datagen.publish.preference import card_section

        parts.append("## Preference pairs\n")
        parts.append(card_section(ctx.preference, ctx.repo_id or "ORG/NAME") + "\n")
    parts.append("## Fields\n")
    parts.append(_FIELDS + "\n")
    parts.append("## Known limitations\n")
    parts.append(_limitations(ctx) + "\n")
    parts.append("## Provenance files\n")
    parts.append(
        "`datagen/build.json` records how this folder was built (source, counts, files); "
        + (
            "`datagen/manifest.json` and `datagen/funnel.json` are the run's own records (secrets removed)."
            if ctx.manifest
            else "no run manifest was available."
        )
        + "\n"
    )
    parts.append("## Credits\n")
    parts.append("The dialogue format is MOSS 003's (OpenLMLab/MOSS, Fudan University).\n")
    return "\n".join(parts)
