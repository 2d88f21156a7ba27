"""Dialogues for the preference tests: plain chat, a calculator turn that worked, one that failed."""

from __future__ import annotations

import pytest

from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn


def hhh_dialogue(i: int = 1) -> Conversation:
    return Conversation(id=f"hhh-{i}", category="writing", language="en", lineage=Lineage(seed_id=f"s{i}"),
                        turns=[Turn(human=f"Write a line about autumn, number {i}.", assistant=f"[good] Leaves fall {i}."),
                               Turn(human="Shorter, please.", assistant="[good] Leaves fall.")])


def calc_dialogue(i: int = 1, *, fail: bool = False) -> Conversation:
    arg = f"23*47+{i}"
    result = ToolResult(name="Calculate", arg=arg, ok=not fail, output="No result." if fail else str(23 * 47 + i))
    answer = ("[good] The calculator gave no result, so I cannot tell the value." if fail
              else f"[good] {arg} = {23 * 47 + i}.")
    return Conversation(id=f"plugin-calc{'-fail' if fail else ''}-{i}", category="tool", language="en",
                        plugins=["calculator", "solver"], inner_thoughts=True, lineage=Lineage(seed_id=f"p{i}"),
                        turns=[Turn(human=f"What is {arg}?", thoughts="I should use the calculator.",
                                    calls=[ToolCall(name="Calculate", arg=arg)], results=[result], assistant=answer,
                                    flags=["tool_failed"] if fail else [])])


@pytest.fixture
def dialogues() -> list[Conversation]:
    return [hhh_dialogue(1), calc_dialogue(1), calc_dialogue(2, fail=True)]
