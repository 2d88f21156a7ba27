"""The Self-Instruct loop end to end against the fake teacher, and its candidate filters."""

from __future__ import annotations

import json

import pytest

from datagen.generate.common import PromptRow
from datagen.generate.config import ExpandConfig
from datagen.generate.expand import Blacklist, candidate_reason, expand
from datagen.seeds.record import read_seeds
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import role_of, scripted_teacher

SEEDS = [
    PromptRow(
        id="en-1", text="What are good habits for learning a new language?", language="en", category="advice"
    ),
    PromptRow(
        id="en-2",
        text="How should I prepare for a job interview at a bank?",
        language="en",
        category="advice",
    ),
    PromptRow(
        id="en-3", text="Which houseplants survive in a dark apartment?", language="en", category="advice"
    ),
    PromptRow(id="zh-1", text="写一首关于秋天的现代诗。", language="zh", category="writing"),
    PromptRow(id="zh-2", text="以“家乡的河”为题写一篇散文。", language="zh", category="writing"),
]


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_expansion_reaches_targets_and_rejects_with_reasons(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    out = tmp_path / "prompts.jsonl"
    config = ExpandConfig(targets={"default": 12}, batch_size=5, k_seed=2, k_machine=2, parallel=4)
    stats = expand(SEEDS, config, make_teacher_config_for(fake_openai), out, tmp_path / "j.sqlite")
    kept = _jsonl(out)
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for row in kept:
        by_cell.setdefault((row["category"], row["language"]), []).append(row)
    assert {k: len(v) for k, v in by_cell.items()} == {("advice", "en"): 12, ("writing", "zh"): 12}
    assert len({r["id"] for r in kept}) == len(kept) == stats.counts["count"] == 24

    rejected = _jsonl(tmp_path / "prompts.rejected.jsonl")
    reasons = {r["reason"] for r in rejected}
    assert {"near_dup", "blacklist"} <= reasons
    blacklisted = [r for r in rejected if r["reason"] == "blacklist"]
    assert {r["detail"] for r in blacklisted} <= {"draw", "picture", "画一", "图片"} and len(blacklisted) >= 2
    # the near duplicates copy an example: the detail names the pool id they duplicate
    pool = {s.id for s in SEEDS} | {r["id"] for r in kept}
    assert all(r["detail"] in pool for r in rejected if r["reason"] == "near_dup")
    assert stats.counts["rejected_near_dup"] == sum(1 for r in rejected if r["reason"] == "near_dup")
    # the truncated last item of each batch never became a candidate
    assert not any(r["text"].endswith("How would the") for r in rejected + kept)

    # parents: the examples each request showed; later requests show earlier machine prompts
    for row in kept:
        parents = row["extra"]["parents"]
        assert parents and set(parents) <= pool
        assert row["source"] == "expand"
        assert row["extra"]["lineage"]["template_version"] == "expand.v1"
        assert row["extra"]["lineage"]["teacher_model"] == fake_openai.model
        seed_langs = {s.language for s in SEEDS if s.id in parents}
        assert seed_langs <= {row["language"]}  # examples come from the same cell
    assert any(p.startswith("exp-") for row in kept for p in row["extra"]["parents"])
    # the seeds reader reads expanded prompts back, parents included
    back = [PromptRow.of(s) for s in read_seeds(out)]
    assert [p.parents for p in back] == [r["extra"]["parents"] for r in kept]
    # the requests asked for the cell's language and showed k_seed + k_machine examples at most
    expand_reqs = [r for r in fake_openai.received if role_of(r) == "expand"]
    assert len(expand_reqs) == stats.counts["requests"]
    assert any("written in Chinese" in r["messages"][1]["content"] for r in expand_reqs)
    stats_file = json.loads((tmp_path / "prompts.stats.json").read_text())
    assert stats_file["per_cell"]["writing/zh"]["stopped"] == "target"


def test_expansion_rerun_replays_from_the_journal(fake_openai, tmp_path):
    fake_openai.set_responder(scripted_teacher)
    out = tmp_path / "prompts.jsonl"
    config = ExpandConfig(targets={"default": 6}, batch_size=5, parallel=2)
    teacher = make_teacher_config_for(fake_openai)
    expand(SEEDS[:3], config, teacher, out, tmp_path / "j.sqlite")
    first = out.read_text()
    paid = fake_openai.requests
    stats = expand(SEEDS[:3], config, teacher, out, tmp_path / "j.sqlite")
    assert fake_openai.requests == paid  # nothing paid again
    assert out.read_text() == first  # the same pool, rebuilt
    assert stats.cached_calls == stats.calls > 0
    # raising the target continues from there, paying only for the new requests
    more = ExpandConfig(targets={"default": 10}, batch_size=5, parallel=2)
    expand(SEEDS[:3], more, teacher, out, tmp_path / "j.sqlite")
    rows = _jsonl(out)
    assert len(rows) == 10 and out.read_text().startswith(first)
    assert paid < fake_openai.requests <= paid + 2 * 2


def test_expansion_stops_idle_cells_and_respects_the_request_cap(fake_openai, tmp_path):
    fake_openai.set_responder(lambda req: "I'm sorry, I can't help with that.")
    out = tmp_path / "prompts.jsonl"
    config = ExpandConfig(targets={"default": 50}, batch_size=5, parallel=1, max_idle_rounds=2)
    stats = expand(SEEDS[:3], config, make_teacher_config_for(fake_openai), out, tmp_path / "j.sqlite")
    assert stats.counts["requests"] == 2 and stats.counts["failed_unparseable"] == 2
    assert stats.counts["cells_short_idle"] == 1 and _jsonl(out) == []
    capped = ExpandConfig(targets={"default": 50}, batch_size=5, parallel=3, max_requests=4)
    stats = expand(
        SEEDS[:3], capped, make_teacher_config_for(fake_openai), tmp_path / "p2.jsonl", tmp_path / "j2.sqlite"
    )
    assert stats.counts["requests"] == 4 and stats.counts["cells_short_max_requests"] == 1


def test_a_failed_request_stops_the_run_so_the_rerun_repays_nothing(fake_openai, tmp_path):
    from datagen.teacher.failures import RETRYABLE
    from tests.fakes.openai_server import Fault

    served: list[str] = []
    faulted: list[str] = []

    def failing_fifth(req):  # the fifth request fails once (a 500, with no retry left)
        body = json.dumps(req["messages"], sort_keys=True)
        if len(served) + len(faulted) == 4 and not faulted:
            faulted.append(body)
            return Fault("500")
        served.append(body)
        return scripted_teacher(req)

    config = ExpandConfig(targets={"default": 16}, batch_size=4, parallel=2)
    teacher = make_teacher_config_for(fake_openai, max_attempts=1)
    fake_openai.set_responder(failing_fifth)
    out = tmp_path / "prompts.jsonl"
    stats1 = expand(SEEDS, config, teacher, out, tmp_path / "j.sqlite")
    assert faulted and stats1.counts["failed_server_error"] == 1 and stats1.retryable_failed == 1
    assert stats1.to_dict()["retryable_failed"] == 1  # what the pipeline reads to ask for a rerun
    assert "server_error" in RETRYABLE
    # it stopped after the failed request's round: 3 rounds of 2 requests
    assert stats1.counts["requests"] == len(served) + 1 == 6
    info = json.loads((tmp_path / "prompts.stats.json").read_text())
    assert {c["stopped"] for c in info["per_cell"].values()} == {"retryable_failure"}

    # the rerun: every request answered in run 1 comes from the journal; only the failed one and
    # those after it are paid
    answered_in_run1 = set(served)
    served.clear()
    stats2 = expand(SEEDS, config, teacher, out, tmp_path / "j.sqlite")
    assert stats2.retryable_failed == 0 and stats2.counts.get("failed_server_error", 0) == 0
    assert stats2.cached_calls == len(answered_in_run1) == 5
    assert not answered_in_run1 & set(served)
    assert faulted[0] in served  # the failed request was asked again, unchanged
    assert stats2.calls - stats2.cached_calls == len(served)
    # and the pool is the one an uninterrupted run builds
    fake_openai.set_responder(scripted_teacher)
    clean = tmp_path / "clean.jsonl"
    expand(SEEDS, config, teacher, clean, tmp_path / "clean.sqlite")
    assert out.read_text() == clean.read_text()


@pytest.mark.parametrize(
    ("text", "language", "reason"),
    [
        ("Hi", "en", "too_short"),
        ("x" * 2000, "en", "too_long"),
        ("Draw a diagram of the water cycle.", "en", "blacklist"),
        ("请帮我剪辑一段视频。", "zh", "blacklist"),
        ("，然后呢？你觉得怎么样", "zh", "bad_start"),
        ("Comment puis-je apprendre la guitare rapidement et bien ?", "en", "language"),
        ("How do I improve my handwriting quickly?", "en", None),
        ("Explain the mapping between keys and values in a dict.", "en", None),  # "map" is a whole word only
    ],
)
def test_candidate_filters(text, language, reason):
    config = ExpandConfig()
    verdict = candidate_reason(text, config, Blacklist(config.blacklist), language)
    assert (verdict[0] if verdict else None) == reason


def test_plugin_cells_use_their_own_blacklist():
    config = ExpandConfig()
    assert Blacklist(config.blacklist).find("Draw a cat wearing a hat") == "draw"
    assert Blacklist(config.plugin_blacklist).find("Draw a cat wearing a hat") is None


@pytest.mark.parametrize(
    "text",
    [
        "Here are another two messages in different categories",
        "Example 1: How do I bake bread at home?",
        "The user's message to the assistant: I need help with taxes.",
        "[My Response](#example).",
        "以下是一些新的用户消息",
        "Sure, here is a new one: how do I fix a bike?",
    ],
)
def test_teacher_commentary_is_rejected_as_meta(text):
    config = ExpandConfig()
    assert (
        candidate_reason(text, config, Blacklist(config.blacklist), "en" if text.isascii() else "zh")[0]
        == "meta"
    )


def test_bad_reject_pattern_is_a_config_error():
    from datagen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"expand\.reject_patterns\.0"):
        ExpandConfig(reject_patterns=["(unclosed"])
