"""The `preference` config of a published dataset: the run's preference pairs, one row each.

Rows come from `RUN_DIR/preference/pairs.jsonl` (`datagen preference`: judged pairs) and
`RUN_DIR/review/pairs.jsonl` (a reviewer's edits: edited answer chosen, original rejected). A row's
split is its source dialogue's (`split_for(source_id)`), so a pair never trains on a dialogue the
SFT configs hold out. Columns are plain Arrow types, like the other configs (`datasets` 3.6 to 5.x
load them): `prompt`, `chosen`, `rejected` are OpenAI messages (the `messages` struct of the
dialogue configs; tool-call arguments as JSON strings) and `tools` one JSON string, so TRL takes
the config as it is; `prompt_text`, `chosen_text`, `rejected_text` are the same pair as MOSS 003
text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.io import iter_json_lines
from datagen.paths import portable
from datagen.preference.export import conversations_of, moss_texts, review_row
from datagen.publish.rows import MESSAGE_FIELDS, message_row
from datagen.splits import split_for

CONFIG = "preference"
#: Where a run directory keeps its pairs: (file, origin).
PAIR_FILES = (("preference/pairs.jsonl", "judge"), ("review/pairs.jsonl", "review"))
STATS_FILE = "preference/stats.json"


def preference_features():
    """The `datasets.Features` of the preference config (plain Arrow types only)."""
    from datasets import Features, List, Value

    string = Value("string")
    tool_call = {"id": string, "type": string, "function": {"name": string, "arguments": string}}
    message = {
        "role": string,
        "content": string,
        "reasoning_content": string,
        "tool_calls": List(tool_call),
        "tool_call_id": string,
    }
    assert tuple(message) == MESSAGE_FIELDS
    return Features(
        {
            "id": string,
            "source_id": string,
            "turn": Value("int32"),
            "kind": string,
            "language": string,
            "category": string,
            "origin": string,
            "prompt": List(message),
            "chosen": List(message),
            "rejected": List(message),
            "tools": string,
            "margin": Value("float64"),
            "chosen_source": string,
            "rejected_source": string,
            "contrastive": string,
            "judge_model": string,
            "judge_template": string,
            "judge_scores": List({"first": string, "score_a": Value("float64"), "score_b": Value("float64")}),
            "reviewer": string,
            "reviewed_at": string,
            "prompt_text": string,
            "chosen_text": string,
            "rejected_text": string,
        }
    )


def pair_to_row(pair: dict[str, Any]) -> dict[str, Any]:
    """One exported pair (`datagen.preference.export` schema) as a parquet row. A model served
    under its path (judge, local source) keeps only the file name, as lineage does."""
    info = pair.get("datagen") or {}
    judge = info.get("judge") or {}
    prompt, chosen, rejected = moss_texts(*conversations_of(pair))
    where = f"pair {pair.get('id')!r}"
    who = info.get("who")
    return {
        "id": str(pair["id"]),
        "source_id": str(info.get("source_id") or ""),
        "turn": info.get("turn"),
        "kind": info.get("kind"),
        "language": info.get("language"),
        "category": info.get("category"),
        "origin": info.get("origin"),
        "prompt": [message_row(m, f"{where} prompt") for m in pair["prompt"]],
        "chosen": [message_row(m, f"{where} chosen") for m in pair["chosen"]],
        "rejected": [message_row(m, f"{where} rejected") for m in pair["rejected"]],
        "tools": pair.get("tools"),
        "margin": pair.get("margin"),
        "chosen_source": _portable(info.get("chosen_source")),
        "rejected_source": _portable(info.get("rejected_source")),
        "contrastive": info.get("contrastive"),
        "judge_model": _portable(judge.get("model")),
        "judge_template": judge.get("template"),
        "judge_scores": [
            {"first": f, "score_a": s[0], "score_b": s[1]}
            for f, s in zip(judge.get("first") or [], judge.get("scores") or [], strict=False)
            if s
        ],
        "reviewer": ", ".join(who) if isinstance(who, list) else who,
        "reviewed_at": info.get("when"),
        "prompt_text": prompt,
        "chosen_text": chosen,
        "rejected_text": rejected,
    }


def _portable(value: Any) -> Any:
    return portable(value) if isinstance(value, str) else value


def row_to_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A published row back as a TRL conversational pair (null message fields left out)."""

    def clean(m: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in m.items() if v is not None or k == "content"}
        if out.get("tool_calls"):
            out["tool_calls"] = [{k: v for k, v in c.items() if v is not None} for c in out["tool_calls"]]
        return out

    return {
        "id": row["id"],
        "prompt": [clean(m) for m in row["prompt"]],
        "chosen": [clean(m) for m in row["chosen"]],
        "rejected": [clean(m) for m in row["rejected"]],
        "tools": row.get("tools"),
        "margin": row.get("margin"),
    }


def has_pairs(run_dir: str | Path) -> bool:
    """True when the preference stage left pairs in this run directory."""
    path = Path(run_dir) / PAIR_FILES[0][0]
    return path.is_file() and path.stat().st_size > 0


def iter_pairs(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The run's pairs (the preference stage's, then the reviewers'), in the exported schema."""
    for name, origin in PAIR_FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        for line, obj in iter_json_lines(path):
            if origin == "review":
                yield review_row(obj, path=str(path), line=line)
            elif not isinstance(obj, dict) or "id" not in obj:
                raise InputError("a pair must be a JSON object with an id", path=str(path), line=line)
            else:
                yield obj


@dataclass(slots=True)
class PreferenceStats:
    """What the card says about the pairs."""

    splits: Counter = field(default_factory=Counter)
    origins: Counter = field(default_factory=Counter)
    contrastive: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)  # "chosen > rejected" source kinds
    kinds: Counter = field(default_factory=Counter)
    judges: Counter = field(default_factory=Counter)
    margins: list[float] = field(default_factory=list)
    stage: dict[str, Any] | None = None  # RUN_DIR/preference/stats.json

    def add(self, row: dict[str, Any], split: str) -> None:
        self.splits[split] += 1
        self.origins[row["origin"] or "?"] += 1
        self.kinds[row["kind"] or "?"] += 1
        if row["contrastive"]:
            self.contrastive[row["contrastive"]] += 1
        self.sources[f"{_source_kind(row['chosen_source'])} > {_source_kind(row['rejected_source'])}"] += 1
        if row["judge_model"]:
            self.judges[f"{row['judge_model']} ({row['judge_template']})"] += 1
        if row["margin"] is not None:
            self.margins.append(float(row["margin"]))

    @property
    def rows(self) -> int:
        return sum(self.splits.values())


def _source_kind(source: str | None) -> str:
    """`teacher:gpt-4o@0.7#1` -> `teacher`."""
    return (source or "?").split("@")[0].split(":")[0]


def read_stage_stats(run_dir: str | Path) -> dict[str, Any] | None:
    """The preference stage's stats.json (None when absent or unreadable)."""
    path = Path(run_dir) / STATS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_preference_split(ds: Any, where: str, fraction: float | None, seen: dict[str, str]) -> list[str]:
    """What is wrong with the rows of one split of the preference config: each converts back to a
    pair whose two dialogues part only in their last turn and render to the row's MOSS text, its
    sides differ, it sits in its source dialogue's split, and its id is unique."""
    problems = []
    for i, row in enumerate(ds):
        at = f"{where} row {i} (id {row.get('id')!r})"
        try:
            pair = row_to_pair(row)
            texts = moss_texts(*conversations_of(pair))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{at}: not a preference pair: {type(exc).__name__}: {exc}")
            continue
        if texts != (row["prompt_text"], row["chosen_text"], row["rejected_text"]):
            problems.append(f"{at}: the MOSS text columns do not match the messages")
        if row["chosen"] == row["rejected"]:
            problems.append(f"{at}: chosen and rejected are the same")
        split = where.rsplit("/", 1)[-1]
        if fraction is not None and split_for(row["source_id"], fraction) != split:
            problems.append(
                f"{at}: belongs in {split_for(row['source_id'], fraction)!r} by its dialogue's id hash"
            )
        if row["id"] in seen:
            problems.append(f"{at}: duplicate id (also in {seen[row['id']]})")
        else:
            seen[row["id"]] = where
    return problems


def card_section(stats: PreferenceStats, repo: str) -> str:
    """The card's `Preference pairs` section."""
    from datagen.funnel import _md_table, _pct

    n = stats.rows
    out = [
        f"The `{CONFIG}` config holds {n:,} preference pairs (chosen and rejected answers to the same turn of a "
        "published dialogue), in TRL's conversational preference format: `prompt`, `chosen` and `rejected` are "
        "chat messages, `tools` the enabled tools' schemas as one JSON string. `prompt_text`, `chosen_text` and "
        "`rejected_text` hold the same pair as MOSS 003 text. A pair's split is its dialogue's.",
        "",
    ]
    out.append(
        _md_table(["origin", "pairs", "share"], [[k, v, _pct(v, n)] for k, v in stats.origins.most_common()])
    )
    out += [
        "",
        "`judge`: candidates judged pairwise, each pair twice with the answers swapped (the scores of both "
        "orders are averaged, which cancels a preference for a position; pairs whose orders disagree, ties and "
        "close calls were dropped). `review`: a reviewer's edit (chosen) against the original answer.",
        "",
    ]
    out.append(
        _md_table(
            ["chosen > rejected (source)", "pairs", "share"],
            [[f"`{k}`", v, _pct(v, n)] for k, v in stats.sources.most_common(15)],
        )
    )
    if stats.contrastive:
        out += [
            "",
            "Pairs against a contrastive answer (made to misuse the tools: a failed tool answered as if it had "
            "worked, the results ignored, a wrong command): "
            + ", ".join(f"`{k}` {v:,}" for k, v in stats.contrastive.most_common())
            + ".",
        ]
    if stats.margins:
        m = sorted(stats.margins)
        out += [
            "",
            f"Judge margins (score points out of 10, both orders averaged): min {m[0]:g}, median "
            f"{m[len(m) // 2]:g}, max {m[-1]:g}. Judges: " + ", ".join(f"`{k}`" for k in stats.judges) + ".",
        ]
    drops = ((stats.stage or {}).get("funnel_step") or {}).get("reasons") or {}
    if drops:
        judged = (stats.stage or {}).get("judged", 0)
        out += [
            "",
            f"Of {judged:,} pairs judged, dropped: "
            + ", ".join(f"{k} {v:,}" for k, v in drops.items() if v)
            + ".",
        ]
    out += [
        "",
        "```python",
        "from datasets import load_dataset",
        "from trl import DPOConfig, DPOTrainer",
        "",
        f'pairs = load_dataset("{repo}", "{CONFIG}", split="train")',
        'trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), train_dataset=pairs,',
        "                     processing_class=tokenizer)  # a tokenizer with a chat template",
        "```",
        "",
        "`datagen dpo` trains a MOSS model on the same pairs in MOSS's own format, with its loss masks.",
    ]
    return "\n".join(out)
