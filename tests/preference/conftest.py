"""Dialogues for the preference tests: plain chat, a calculator turn that worked, one that failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn


def hhh_dialogue(i: int = 1) -> Conversation:
    return Conversation(
        id=f"hhh-{i}",
        category="writing",
        language="en",
        lineage=Lineage(seed_id=f"s{i}"),
        turns=[
            Turn(human=f"Write a line about autumn, number {i}.", assistant=f"[good] Leaves fall {i}."),
            Turn(human="Shorter, please.", assistant="[good] Leaves fall."),
        ],
    )


def calc_dialogue(i: int = 1, *, fail: bool = False) -> Conversation:
    arg = f"23*47+{i}"
    result = ToolResult(
        name="Calculate", arg=arg, ok=not fail, output="No result." if fail else str(23 * 47 + i)
    )
    answer = (
        "[good] The calculator gave no result, so I cannot tell the value."
        if fail
        else f"[good] {arg} = {23 * 47 + i}."
    )
    return Conversation(
        id=f"plugin-calc{'-fail' if fail else ''}-{i}",
        category="tool",
        language="en",
        plugins=["calculator", "solver"],
        inner_thoughts=True,
        lineage=Lineage(seed_id=f"p{i}"),
        turns=[
            Turn(
                human=f"What is {arg}?",
                thoughts="I should use the calculator.",
                calls=[ToolCall(name="Calculate", arg=arg)],
                results=[result],
                assistant=answer,
                flags=["tool_failed"] if fail else [],
            )
        ],
    )


@pytest.fixture
def dialogues() -> list[Conversation]:
    return [hhh_dialogue(1), calc_dialogue(1), calc_dialogue(2, fail=True)]


def make_pairs(out: Path, dialogues: list[Conversation] | None = None, data: dict | None = None) -> Path:
    """Run the preference stage on its own fake teacher (scripted) and return its output folder."""
    from datagen.preference import PreferenceConfig, make_preference
    from tests.fakes.openai_fixtures import make_teacher_config_for
    from tests.fakes.openai_server import FakeOpenAI
    from tests.preference.scripted import Script

    fake = FakeOpenAI().start()
    try:
        fake.set_responder(Script())
        data = data or {"sources": ["original", {"kind": "teacher", "temperatures": [0.3, 1.0]}]}
        dialogues = (
            dialogues
            if dialogues is not None
            else [hhh_dialogue(1), hhh_dialogue(2), calc_dialogue(1), calc_dialogue(2, fail=True)]
        )
        make_preference(
            dialogues, PreferenceConfig.from_dict(data), make_teacher_config_for(fake), out, progress=False
        )
    finally:
        fake.stop()
    return out


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory) -> Path:
    """The preference stage's output for the four sample dialogues (read-only)."""
    return make_pairs(tmp_path_factory.mktemp("pairs") / "preference")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, moss_samples) -> Path:
    """A tiny MOSS-layout checkpoint (see tests/moss/conftest.py), read-only."""
    from tests.moss.conftest import build_tiny_moss, corpus, sample_records

    folder = tmp_path_factory.mktemp("tiny-moss")
    build_tiny_moss(folder, corpus(sample_records(moss_samples)))
    return folder
