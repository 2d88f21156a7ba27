"""On-policy candidates: the local model's own answers, sampled in MOSS's format with the token
stream fine-tuning trains on, and judged like any other."""

from __future__ import annotations

import json

import pytest

from datagen.formats.moss import to_sft
from datagen.model.tokenize import tokenize_record
from datagen.preference import PreferenceConfig, make_preference
from datagen.preference.prompts import head_of
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.preference.conftest import calc_dialogue, hhh_dialogue
from tests.preference.scripted import Script


@pytest.fixture(scope="module")
def sampler(tiny_model):
    from datagen.preference.local import LocalSampler

    return LocalSampler(str(tiny_model), device="cpu")


def test_the_prompt_is_finetunings_token_stream_up_to_the_answer(sampler):
    tok = sampler.loaded.tokenizer
    for conv, index in ((hhh_dialogue(1), 1), (calc_dialogue(1), 0)):
        ids = sampler.prompt_ids(head_of(conv, index), conv.turns[index])
        whole = tokenize_record(to_sft(head_of(conv, index + 1)), tok, max_length=4096)
        answer = next(s for s in whole.segments if s.turn == index and s.key == "MOSS")
        prefix = tok("<|MOSS|>:", add_special_tokens=False)["input_ids"]
        assert ids == whole.input_ids[: answer.start] + prefix
        assert whole.input_ids[answer.start : answer.start + len(prefix)] == prefix


def test_samples_are_seeded_and_stop_at_eom(sampler):
    conv = hhh_dialogue(1)
    a = sampler.sample(
        head_of(conv, 0), conv.turns[0], temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7
    )
    b = sampler.sample(
        head_of(conv, 0), conv.turns[0], temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7
    )
    c = sampler.sample(
        head_of(conv, 0), conv.turns[0], temperature=1.0, top_p=0.95, max_new_tokens=12, seed=8
    )
    assert a == b != c and "<eom>" not in a
    assert (
        sampler.sample(
            head_of(conv, 0), conv.turns[0], temperature=0.0, top_p=1.0, max_new_tokens=10**6, seed=0
        )
        is None
    )  # no room left in the context


def test_local_candidates_are_judged_with_the_others(fake_openai, tmp_path, tiny_model):
    fake_openai.set_responder(Script())
    config = PreferenceConfig.from_dict(
        {
            "sources": [
                "original",
                {
                    "kind": "local",
                    "model": str(tiny_model),
                    "name": "tiny",
                    "temperatures": [1.0],
                    "samples": 2,
                    "max_tokens": 12,
                },
            ],
            "turns": "first",
            "contrastive": [],
        }
    )
    stats = make_preference(
        [hhh_dialogue(1)], config, make_teacher_config_for(fake_openai), tmp_path, progress=False
    )
    sources = [
        json.loads(line)["source"] for line in (tmp_path / "candidates.jsonl").read_text().splitlines()
    ]
    assert sources[0] == "original" and {s for s in sources[1:]} <= {"tiny@1#0", "tiny@1#1"}
    assert stats.counts["candidates_local"] == len(sources) - 1 >= 1
    assert stats.counts["judged"] == len(sources) * (len(sources) - 1) // 2
    assert fake_openai.requests == 2 * stats.counts["judged"]  # only the judge went to the server
