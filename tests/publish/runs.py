"""Tiny run directories for the publish tests, built from datagen.record types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datagen.io import write_jsonl_atomic
from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn, Usage


def _lineage(template: str, seed: str) -> Lineage:
    return Lineage(
        seed_id=seed,
        teacher_model="teacher-7b-chat",
        template_version=template,
        params={"temperature": 0.7, "top_p": 0.8},
        run="fp-test",
    )


def hhh(i: int, *, language: str = "en", turns: int = 1, category: str = "writing") -> Conversation:
    if language == "zh":
        pairs = [
            (f"请写一首关于秋天的短诗，第{i}首。", f"秋风起，落叶黄，第{i}首诗送给你。"),
            ("再短一点。", "秋叶落，风微凉。"),
        ]
    else:
        pairs = [
            (
                f"Write a two-line poem about autumn, number {i}.",
                f"Leaves drift down, poem {i} of the fall,\nthe year exhales and gathers all.",
            ),
            (
                "Now make it rhyme differently.",
                "Gold leaves spin in the evening light,\nthe trees let go and say goodnight.",
            ),
            ("Thanks! One word summary?", "Letting go."),
        ]
    return Conversation(
        id=f"hhh-{i}",
        category=category,
        language=language,
        turns=[Turn(human=h, assistant=a) for h, a in pairs[:turns]],
        lineage=_lineage("hhh-v2", f"seed-{i}"),
        usage=Usage(prompt_tokens=100 + i, completion_tokens=50 + i, cost=0.001, calls=2),
        scores={"moss_loss": 1.0 + i / 10, "moss_ppl": 2.7 + i / 10},
        tags={"language": "ok"},
    )


def plugin_search(i: int) -> Conversation:
    results = [
        ToolResult(
            name="Search",
            arg=f"tallest building {i}",
            output="",
            snippets=["The Burj Khalifa is 828 m tall.", "It opened in 2010."],
            first_index=1,
        )
    ]
    return Conversation(
        id=f"plugin-search-{i}",
        category="tool",
        language="en",
        plugins=["search"],
        inner_thoughts=True,
        turns=[
            Turn(
                human=f"What is the tallest building in the world? ({i})",
                thoughts="I should search for the current tallest building.",
                calls=[ToolCall(name="Search", arg=f"tallest building {i}")],
                results=results,
                assistant="The Burj Khalifa, at 828 m<sup><|1|></sup>, opened in 2010<sup><|2|></sup>.",
            )
        ],
        lineage=_lineage("plugin-v1", f"seed-p{i}"),
        usage=Usage(prompt_tokens=300, completion_tokens=120, cost=0.004, calls=3),
        scores={"moss_loss": 0.9},
    )


def plugin_calc(i: int, *, fail: bool = False) -> Conversation:
    result = ToolResult(
        name="Calculate", arg=f"23*47+{i}", ok=not fail, output="No result." if fail else str(23 * 47 + i)
    )
    return Conversation(
        id=f"plugin-calc-{i}",
        category="tool",
        language="en",
        plugins=["calculator", "solver"],
        inner_thoughts=True,
        turns=[
            Turn(
                human=f"What is 23*47+{i}?",
                thoughts="Use the calculator.",
                calls=[ToolCall(name="Calculate", arg=f"23*47+{i}")],
                results=[result],
                assistant="I could not compute it." if fail else f"23*47+{i} = {23 * 47 + i}.",
            ),
            Turn(human="Thanks!", thoughts=None, assistant="You're welcome."),
        ],
        lineage=_lineage("plugin-v1", f"seed-c{i}"),
        usage=Usage(prompt_tokens=200, completion_tokens=80, cost=0.002, calls=2),
    )


def sample_conversations() -> list[Conversation]:
    """Six hhh (en and zh, 1-3 turns) and four plugin dialogues (search, calculator, a failed call)."""
    return [
        hhh(1),
        hhh(2, turns=2),
        hhh(3, turns=3, category="code"),
        hhh(4, language="zh"),
        hhh(5, language="zh", turns=2, category="harmless_zh"),
        hhh(6),
        plugin_search(1),
        plugin_search(2),
        plugin_calc(1),
        plugin_calc(2, fail=True),
    ]


def manifest(
    name: str = "demo",
    *,
    license: str | None = "apache-2.0",
    repo_id: str | None = None,
    validation_fraction: float = 0.3,
) -> dict[str, Any]:
    publish: dict[str, Any] = {"private": False, "pretty_name": "Demo MOSS dialogues"}
    if license:
        publish["license"] = license
    if repo_id:
        publish["repo_id"] = repo_id
    return {
        "name": name,
        "fingerprint": "0123456789abcdef",
        "config": {
            "name": name,
            "teacher": {
                "model": "teacher-7b-chat",
                "base_url": "https://user:secret@api.example.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "params": {"temperature": 0.7, "top_p": 0.8},
            },
            "filters": {
                "language": {"enabled": True, "min_confidence": 0.8},
                "near_dup": {"threshold": 0.85, "num_perm": 128},
                "refusal": {"enabled": True},
            },
            "dataset": {"validation_fraction": validation_fraction},
            "publish": publish,
        },
        "versions": {"datagen": "0.1.0", "datasets": "5.x"},
        "stages": {
            "expand": {
                "status": "done",
                "count": 40,
                "started": "2026-01-01T00:00:00+00:00",
                "finished": "2026-01-01T00:05:00+00:00",
                "cost": 0.12,
            },
            "dialogues": {"status": "done", "count": 14, "cost": 0.5},
            "filter": {"status": "done", "count": 10, "cost": 0.0},
        },
        "created": "2026-01-01T00:00:00+00:00",
    }


FUNNEL = {
    "input": 40,
    "kept": 10,
    "steps": [
        {
            "step": "expand",
            "in": 40,
            "kept": 20,
            "dropped": 20,
            "tagged": 0,
            "reasons": {"near_duplicate": 15, "too_short": 5},
        },
        {"step": "dialogues", "in": 20, "kept": 14, "dropped": 6, "tagged": 0, "reasons": {"parse_error": 6}},
        {
            "step": "language",
            "in": 14,
            "kept": 12,
            "dropped": 2,
            "tagged": 1,
            "reasons": {"wrong_language": 2},
        },
        {"step": "refusal", "in": 12, "kept": 10, "dropped": 2, "tagged": 0, "reasons": {"refusal": 2}},
    ],
}


def make_run_dir(root: Path, convs: list[Conversation] | None = None, **manifest_kwargs: Any) -> Path:
    """A finished run directory: manifest.json, funnel.json, final.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    convs = sample_conversations() if convs is None else convs
    (root / "manifest.json").write_text(json.dumps(manifest(**manifest_kwargs), indent=2), encoding="utf-8")
    (root / "funnel.json").write_text(json.dumps(FUNNEL, indent=2), encoding="utf-8")
    write_jsonl_atomic(root / "final.jsonl", convs)
    return root
