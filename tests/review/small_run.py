"""A tiny run directory written by hand (no teacher, no model): enough rows of every kind for the
fast index, server and apply tests. The full pipeline run is in conftest.py (`review_run`)."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.io import write_jsonl_atomic
from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn
from datagen.teacher.journal import Journal, JournalEntry

XSS = "<script>alert('pwned')</script>"


def hhh(
    id_: str,
    human: str,
    answer: str,
    *,
    language: str = "en",
    category: str = "writing",
    loss: float | None = None,
    turns: int = 1,
) -> Conversation:
    conv = Conversation(
        id=id_,
        category=category,
        language=language,
        turns=[
            Turn(
                human=human if i == 0 else f"{human} (more {i})",
                assistant=answer if i == 0 else f"{answer} ({i})",
            )
            for i in range(turns)
        ],
        lineage=Lineage(seed_id=id_, teacher_model="m", template_version="hhh_assistant.v2+hhh_user.v1"),
    )
    if loss is not None:
        conv.scores["moss_loss"] = loss
    return conv


def calc(id_: str, *, ok: bool = True) -> Conversation:
    return Conversation(
        id=id_,
        category="tool",
        language="en",
        plugins=["calculator"],
        inner_thoughts=True,
        turns=[
            Turn(
                human="What is 23*47+12?",
                thoughts="The user needs a calculation.",
                calls=[ToolCall("Calculate", "23*47+12")],
                results=[ToolResult("Calculate", "23*47+12", ok=ok, output="1093" if ok else "No result.")],
                assistant="23*47+12 = 1093.",
            ),
            Turn(human="And divided by 3?", thoughts="No tool is needed here.", assistant="About 364.33."),
        ],
        lineage=Lineage(
            seed_id="s-calc",
            teacher_model="m",
            template_version="plugin_commands.v2+plugin_answer.v1+hhh_user.v1",
        ),
    )


def rejected(conv: Conversation, step: str, reason: str, evidence: object, **more: object) -> dict:
    d = conv.to_dict()
    d["rejected"] = {"step": step, "reason": reason, "evidence": evidence, **more}
    return d


def make_small_run(run: Path) -> Path:
    """Write the run; returns its folder."""
    run.mkdir(parents=True, exist_ok=True)
    kept = [
        hhh("hhh-a", "Write a poem about the sea at night.", "Waves hum.", loss=1.2, turns=2),
        hhh(
            "hhh-b",
            "长城有多长？请详细介绍。",
            "长城全长两万多公里。",
            language="zh",
            category="knowledge",
            loss=2.5,
        ),
        hhh("hhh-xss", f"What does {XSS} do?", f"It runs {XSS} in the page.", category="code", loss=1.9),
        calc("plugin-calc"),
    ]
    write_jsonl_atomic(run / "final.jsonl", kept)
    write_jsonl_atomic(
        run / "filtered" / "rejected.jsonl",
        [
            rejected(
                hhh("hhh-dup", "Write a poem about the sea at night!", "Waves hum."),
                "near_dedup",
                "near_dup",
                {"similarity": 0.93},
                duplicate_of="hhh-a",
            ),
            rejected(
                hhh("hhh-mixed", "Tell me a joke.", "这是一个笑话。"),
                "language",
                "language_drift",
                {"language": "zh"},
            ),
        ],
    )
    write_jsonl_atomic(
        run / "checked" / "rejected.jsonl",
        [
            rejected(
                hhh(
                    "hhh-weak",
                    "Explain recursion simply.",
                    "Recursion is recursion.",
                    category="code",
                    loss=4.0,
                ),
                "moss_check",
                "loss_above_percentile",
                {"moss_loss": 4.0, "cutoff": 3.0},
            ),
        ],
    )
    write_jsonl_atomic(
        run / "dialogues" / "hhh.failed.jsonl",
        [
            {
                "id": "hhh-silent",
                "prompt_id": "silent",
                "reason": "empty_text",
                "role": "assistant",
                "detail": "the answer has no text",
                "turn": 1,
                "permanent": True,
            },
        ],
    )
    write_jsonl_atomic(
        run / "prompts" / "expanded.rejected.jsonl",
        [
            {
                "text": "Draw a picture of a tiger on a bridge.",
                "reason": "blacklist",
                "detail": "draw",
                "cell": "writing/en",
                "request": 0,
            },
        ],
    )
    write_jsonl_atomic(
        run / "seeds.jsonl",
        [
            {
                "id": "silent",
                "text": "Do you remember what we talked about yesterday?",
                "language": "en",
                "category": "honest",
                "plugins": [],
            },
        ],
    )
    funnel = {
        "input": 8,
        "kept": 4,
        "steps": [
            {"step": "seeds", "in": 8, "kept": 8, "dropped": 0, "reasons": {}},
            {"step": "expand", "in": 3, "kept": 2, "dropped": 1, "reasons": {"blacklist": 1}},
            {"step": "dialogues.hhh", "in": 7, "kept": 6, "dropped": 1, "reasons": {"empty_text": 1}},
            {"step": "dialogues.plugin", "in": 1, "kept": 1, "dropped": 0, "reasons": {}},
            {"step": "language", "in": 7, "kept": 6, "dropped": 1, "reasons": {"language_drift": 1}},
            {"step": "near_dedup", "in": 6, "kept": 5, "dropped": 1, "reasons": {"near_dup": 1}},
            {"step": "moss_check", "in": 5, "kept": 4, "dropped": 1, "reasons": {"loss_above_percentile": 1}},
        ],
    }
    (run / "funnel.json").write_text(json.dumps(funnel), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({"name": "small", "stages": {}}), encoding="utf-8")
    with Journal(run / "journal.sqlite") as j:
        for i, (template, text) in enumerate(
            [
                ("plugin_commands.v2", "What is 23*47+12?"),
                ("plugin_answer.v1", "Tool results: 1093\nWhat is 23*47+12?"),
                ("hhh_assistant.v2", "Write a poem about the sea at night."),
                # An expansion call quotes prompts as examples: it made none of these dialogues.
                ("expand.v1", "Examples:\n1. Write a poem about the sea at night.\n2. What is 23*47+12?"),
            ]
        ):
            j.put(
                JournalEntry(
                    key=f"k{i}",
                    status="ok",
                    model="m",
                    response=f"reply {i}",
                    prompt_tokens=10 + i,
                    completion_tokens=5,
                    cost=0.001,
                    paid_cost=0.001,
                    attempts=1,
                    latency=0.5,
                    request={
                        "model": "m",
                        "params": {},
                        "template_version": template,
                        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": text}],
                    },
                )
            )
        j.flush()
    return run
