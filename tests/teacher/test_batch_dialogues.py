"""Dialogues in batch mode go round by round with every unfinished dialogue in each round, whatever
`teacher.concurrency` says (it caps sockets online; in batch mode requests wait in files)."""

from __future__ import annotations

import sqlite3

from datagen.generate.common import PromptRow
from datagen.generate.config import DialogueConfig
from datagen.generate.dialogues import generate_dialogues
from datagen.io import iter_conversations
from tests.fakes.batch_server import FakeBatchOpenAI
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import scripted_teacher

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.05, "settle_seconds": 0.01, "linger_seconds": 5.0}


def test_six_dialogues_at_teacher_concurrency_two_take_one_round_per_call(tmp_path):
    fake = FakeBatchOpenAI(completion_delay=0.02).start()
    try:
        fake.set_responder(scripted_teacher)
        teacher = make_teacher_config_for(fake, mode="batch", concurrency=2, batch=FAST)
        prompts = [
            PromptRow(id=f"s{i}", text=f"Tell me about the number {i}.", language="en", category="writing")
            for i in range(6)
        ]
        out = tmp_path / "hhh.jsonl"
        stats = generate_dialogues(
            prompts,
            "hhh",
            DialogueConfig.from_dict({"turns": 2}, kind="hhh"),
            teacher,
            out,
            tmp_path / "journal.sqlite",
        )
    finally:
        fake.stop()
    assert stats.counts.get("made", len(list(iter_conversations(out)))) == 6
    assert len(list(iter_conversations(out))) == 6
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    try:
        rounds = conn.execute("SELECT COUNT(DISTINCT round) FROM batches").fetchone()[0]
    finally:
        conn.close()
    # two turns: answer 1, the simulated user's turn 2, answer 2 -> 3 calls, so 3 rounds (not 9 at 2 a time)
    assert rounds == 3
    assert fake.duplicates() == [] and fake.requests == 0
