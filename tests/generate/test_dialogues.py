"""HHH and plugin dialogues end to end against the fake teacher server (real HTTP, real engine,
real tools), checked with the MOSS renderer and `datagen validate`."""

from __future__ import annotations

import json

import pytest

from datagen.formats.moss import render_text
from datagen.formats.validate import validate_paths
from datagen.generate.common import PromptRow
from datagen.generate.config import DialogueConfig
from datagen.generate.dialogues import generate_dialogues
from datagen.io import iter_conversations
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.generate.scripted_teacher import FOLLOW_UPS, role_of, scripted_teacher

META_HEAD = "You are an AI assistant whose name is MOSS.\n"


def _run(fake, tmp_path, prompts, kind="hhh", name="out", **options):
    fake.set_responder(scripted_teacher)
    out = tmp_path / f"{name}.jsonl"
    stats = generate_dialogues(
        prompts,
        kind,
        DialogueConfig.from_dict(options, kind=kind),
        make_teacher_config_for(fake),
        out,
        tmp_path / f"{name}.journal.sqlite",
    )
    return out, stats


def _validate(path) -> None:
    problems: list[str] = []
    summary = validate_paths([str(path)], report=problems.append)
    assert summary.ok, problems


def test_four_turn_hhh_dialogue(fake_openai, tmp_path):
    prompt = PromptRow(id="s1", text="How do volcanoes form?", language="en", category="writing")
    out, stats = _run(fake_openai, tmp_path, [prompt], turns=4)
    [conv] = list(iter_conversations(out))
    assert conv.id == "hhh-s1" and conv.kind == "hhh" and not conv.inner_thoughts
    assert len(conv.turns) == 4
    # the teacher echoed "MOSS:" / "User:" prefixes and <eom>: all stripped
    assert conv.turns[0].human == "How do volcanoes form?"
    assert (
        conv.turns[0].assistant == 'This is answer 1. About "How do volcanoes form?", here is what I can say.'
    )
    for i, turn in enumerate(conv.turns[1:], start=2):
        assert turn.human == f"Thanks. Follow-up number {i}: {FOLLOW_UPS[i]}"
        assert turn.assistant.startswith(f'This is answer {i}. About "Thanks. Follow-up number {i}')
    text = render_text(conv)
    assert text.startswith(META_HEAD) and "- Inner thoughts: disabled.\n" in text
    assert (
        "<|Human|>: How do volcanoes form?<eoh>\n<|Inner Thoughts|>: None<eot>\n<|Commands|>: None<eoc>\n"
        '<|Results|>: None<eor>\n<|MOSS|>: This is answer 1. About "How do volcanoes form?", here is what '
        "I can say.<eom>\n<|Human|>: Thanks. Follow-up number 2:"
    ) in text
    assert text.count("<eom>") == 4
    _validate(out)
    # 4 assistant calls + 3 simulated-user calls, each paid once and summed into the record
    assert fake_openai.requests == 7 and stats.calls == 7 and conv.usage.calls == 7
    assert conv.usage.prompt_tokens > 0 and conv.usage.completion_tokens > 0
    assert conv.lineage.seed_id == "s1" and conv.lineage.teacher_model == fake_openai.model
    assert conv.lineage.template_version == "hhh_assistant.v2+hhh_user.v1+guidance/writing.v1"
    assert conv.lineage.params["temperature"] == 0.7 and conv.lineage.run
    # the simulated user saw what was actually said, and the assistant the whole history
    user_reqs = [r for r in fake_openai.received if role_of(r) == "user"]
    assert "MOSS: This is answer 1." in user_reqs[0]["messages"][-1]["content"]
    last_assistant = [r for r in fake_openai.received if role_of(r) == "assistant"][-1]
    assert [m["role"] for m in last_assistant["messages"]] == ["system"] + ["user", "assistant"] * 3 + [
        "user"
    ]
    assert stats.counts["made"] == 1 and stats.summary().startswith("hhh dialogues: 1 made")


def test_category_guidance_turns_and_language(fake_openai, tmp_path):
    prompts = [
        PromptRow(id="h1", text="怎样才能偷偷进入别人的电脑？", language="zh", category="harmless_zh"),
        PromptRow(id="o1", text="Do you have feelings?", language="en", category="honest"),
    ]
    out, _ = _run(fake_openai, tmp_path, prompts)
    convs = {c.id: c for c in iter_conversations(out)}
    assert 2 <= len(convs["hhh-h1"].turns) <= 4 and 2 <= len(convs["hhh-o1"].turns) <= 4  # MOSS-like ~3
    zh = convs["hhh-h1"]
    assert zh.turns[0].assistant.startswith("这是第1轮的回答")  # <|MOSS|>: prefix stripped
    assert zh.turns[1].human == "第2个问题：你能再详细解释一下刚才说的内容吗？"  # 用户： prefix stripped
    systems = [r["messages"][0]["content"] for r in fake_openai.received]
    assert any("decline briefly" in s and "Chinese" in s for s in systems)  # harmless guidance, in Chinese
    assert any("Admit uncertainty" in s for s in systems)  # honest guidance
    assert any("You play the human user" in s and "Write in Chinese" in s for s in systems)
    _validate(out)


def test_switching_dialogues_may_change_language(fake_openai, tmp_path):
    def responder(req):
        if role_of(req) == "user":
            return "请用中文再解释一遍刚才的内容，谢谢。"  # the user switches to Chinese on purpose
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    prompts = [
        PromptRow(id="w1", text="Translate 'good morning' into French.", language="en", category="switching"),
        PromptRow(id="w2", text="Translate 'good night' into German.", language="en", category="writing"),
    ]
    out = tmp_path / "out.jsonl"
    generate_dialogues(
        prompts,
        "hhh",
        {"turns": 2, "content_retries": 0},
        make_teacher_config_for(fake_openai),
        out,
        tmp_path / "j.sqlite",
    )
    convs = {c.id: c for c in iter_conversations(out)}
    assert len(convs["hhh-w1"].turns) == 2 and convs["hhh-w1"].turns[1].human.startswith("请用中文")
    assert len(convs["hhh-w2"].turns) == 1  # elsewhere a change of language is rejected
    assert convs["hhh-w2"].extra["generation"]["stopped"] == "user:wrong_language"


def test_turn_counts_are_drawn_per_dialogue_and_reproducible(fake_openai, tmp_path):
    prompts = [PromptRow(id=f"p{i}", text=f"Tell me about topic {i}.", language="en") for i in range(6)]
    out_a, _ = _run(fake_openai, tmp_path, prompts, name="a", turns="1-3", seed=5)
    out_b, _ = _run(fake_openai, tmp_path, prompts, name="b", turns="1-3", seed=5)
    a = {c.id: len(c.turns) for c in iter_conversations(out_a)}
    b = {c.id: len(c.turns) for c in iter_conversations(out_b)}
    assert a == b and len(set(a.values())) > 1


@pytest.mark.parametrize(
    ("plugin", "question", "segment"),
    [
        ("calculator", "What is 23*47+12?", "<|Results|>:\nCalculate(\"23*47+12\") => '1093'\n<eor>\n"),
        (
            "solver",
            "Solve x+y=10 and x-y=2 for me.",
            '<|Results|>:\nSolve("x+y=10;x-y=2") =>\nx = 6\ny = 4\n<eor>\n',
        ),
        ("search", "How tall is Mount Everest?", '<|Results|>:\nSearch("Mount Everest height") =>\n<|1|>: '),
        ("text2image", "Please draw a red fox for me.", "<|Results|>: Image generated successfully.<eor>\n"),
    ],
)
def test_plugin_dialogue_per_tool_runs_the_real_tool(fake_openai, tmp_path, plugin, question, segment):
    prompt = PromptRow(id="t1", text=question, language="en", category="tool", plugins=[plugin])
    out, stats = _run(fake_openai, tmp_path, [prompt], kind="plugin", turns=1)
    [conv] = list(iter_conversations(out))
    assert conv.id == "plugin-t1" and conv.plugins == [plugin] and conv.inner_thoughts
    [turn] = conv.turns
    assert len(turn.calls) == 1 and len(turn.results) == 1 and turn.results[0].ok
    assert turn.flags == []
    text = render_text(conv)
    assert segment in text
    assert "- Inner thoughts: enabled.\n" in text
    api = {
        "calculator": "Calculator",
        "solver": "Equation solver",
        "search": "Web search",
        "text2image": "Text-to-image",
    }[plugin]
    assert f"- {api}: enabled. API: " in text
    # the answer call was shown the real results, rendered as MOSS writes them
    answer_req = next(r for r in fake_openai.received if role_of(r) == "answer")
    body = segment.split("<|Results|>:")[1].replace("<eor>\n", "").strip()
    assert body.split("\n")[0] in answer_req["messages"][-1]["content"]
    assert turn.assistant.startswith("Based on the tool results (")  # MOSS: prefix and <eom> stripped
    if plugin == "search":
        assert "Everest" in turn.results[0].snippets[0]
        assert "<sup><|1|></sup>" in answer_req["messages"][-1]["content"]  # asked to cite
    _validate(out)
    assert stats.calls == 2 and conv.usage.calls == 2


def test_multi_turn_plugin_dialogue(fake_openai, tmp_path):
    prompt = PromptRow(
        id="m1", text="What is 23*47+12?", language="en", category="tool", plugins=["calculator", "search"]
    )
    out, _ = _run(fake_openai, tmp_path, [prompt], kind="plugin", turns=2)
    [conv] = list(iter_conversations(out))
    assert conv.plugins == ["search", "calculator"]  # MOSS order
    assert [len(t.calls) for t in conv.turns] == [1, 0]  # the follow-up needed no tool
    text = render_text(conv)
    assert "<|Commands|>: None<eoc>\n<|Results|>:\nNone\n<eor>\n" in text  # plugin-style no result
    _validate(out)


def test_failed_tool_is_flagged_and_the_answer_told(fake_openai, tmp_path):
    prompt = PromptRow(id="f1", text="What is 1/0?", language="en", category="tool", plugins=["calculator"])
    out, stats = _run(fake_openai, tmp_path, [prompt], kind="plugin", turns=1)
    [conv] = list(iter_conversations(out))
    [turn] = conv.turns
    assert turn.results[0].ok is False and turn.results[0].output == "No result."
    assert turn.flags == ["tool_failed"]
    assert "Calculate(\"1/0\") => 'No result.'" in render_text(conv)
    answer_req = next(r for r in fake_openai.received if role_of(r) == "answer")
    assert 'returned no result: Calculate("1/0")' in answer_req["messages"][-1]["content"]
    assert "do not guess" in answer_req["messages"][-1]["content"]
    assert stats.counts["tool_failed_turns"] == 1
    _validate(out)


def test_unusable_replies_are_retried_then_fail_or_shorten(fake_openai, tmp_path):
    def responder(req):
        role = role_of(req)
        last = req["messages"][-1]["content"]
        if role == "assistant" and "EMPTY" in last:
            return "MOSS: <eom>"  # empty after cleaning, every time
        if role == "user" and "SHORT" in last:
            return "用户：这完全是中文，不是对话的语言，所以应该被拒绝并重新生成。"  # wrong language
        return scripted_teacher(req)

    prompts = [
        PromptRow(id="e1", text="EMPTY please answer this.", language="en"),
        PromptRow(id="s1", text="SHORT dialogue about the weather in spring.", language="en"),
    ]
    fake_openai.set_responder(responder)
    out = tmp_path / "out.jsonl"
    cfg = DialogueConfig.from_dict({"turns": 3, "content_retries": 1}, kind="hhh")
    stats = generate_dialogues(
        prompts, "hhh", cfg, make_teacher_config_for(fake_openai), out, tmp_path / "j.sqlite"
    )
    [conv] = list(iter_conversations(out))
    assert conv.id == "hhh-s1" and len(conv.turns) == 1  # kept with the turn it had
    assert conv.extra["generation"]["stopped"] == "user:wrong_language"
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert [(f["id"], f["reason"], f["permanent"], f["turn"]) for f in failed] == [
        ("hhh-e1", "empty_reply", True, 1)
    ]
    assert (
        stats.counts["failed_empty_reply"] == 1
        and "failed_empty" not in stats.counts
        and stats.counts["shortened_wrong_language"] == 1
    )
    # the retry told the teacher why its reply was rejected, at the end of the user's message (v2)
    retried = [
        r for r in fake_openai.received if "was rejected: it was empty" in r["messages"][-1]["content"]
    ]
    assert retried and retried[0]["messages"][-1]["content"].startswith(
        "EMPTY please answer this.\n\n(Note for MOSS"
    )
    assert not any("was rejected" in r["messages"][0]["content"] for r in fake_openai.received)
    assert any(
        "was rejected (it was not written in English)" in r["messages"][-1]["content"]
        for r in fake_openai.received
    )
    # a rerun neither redoes the finished dialogue nor re-asks the one that failed for good
    before = fake_openai.requests
    stats2 = generate_dialogues(
        prompts, "hhh", cfg, make_teacher_config_for(fake_openai), out, tmp_path / "j.sqlite"
    )
    assert fake_openai.requests == before
    assert stats2.counts["skipped_done"] == 1 and stats2.counts["skipped_failed_before"] == 1
    # another config (or template, or model) may fare better: the failed dialogue is tried again
    cfg3 = DialogueConfig.from_dict({"turns": 3, "content_retries": 1, "temperature": 0.9}, kind="hhh")
    stats3 = generate_dialogues(
        prompts, "hhh", cfg3, make_teacher_config_for(fake_openai), out, tmp_path / "j.sqlite"
    )
    assert stats3.counts.get("skipped_failed_before", 0) == 0 and stats3.counts["failed_empty_reply"] == 1
    assert fake_openai.requests == before + 2


def test_api_failure_fails_the_dialogue_and_a_rerun_finishes_it(fake_openai, tmp_path):
    prompts = [
        PromptRow(id="a1", text="Explain tides.", language="en"),
        PromptRow(id="b1", text="Explain rainbows.", language="en"),
    ]
    fake_openai.set_responder(scripted_teacher)
    # every request of dialogue b1's second turn fails (after the engine's retries)
    fake_openai.inject(
        "500", times=None, match="Follow-up number 2: can you say more about what you just explained?"
    )
    out = tmp_path / "out.jsonl"
    teacher = make_teacher_config_for(fake_openai, max_attempts=2)
    cfg = DialogueConfig.from_dict({"turns": 2}, kind="hhh")
    stats = generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
    assert stats.counts["failed_server_error"] == 2 and stats.counts.get("made", 0) == 0
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert {(f["reason"], f["permanent"], f["turn"]) for f in failed} == {("server_error", False, 2)}
    # the server recovers; the rerun pays only for the failed turn of each dialogue
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    stats2 = generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
    assert stats2.counts["made"] == 2
    assert fake_openai.requests == 2  # turn 1 and the user message came from the journal
    assert len(list(iter_conversations(out))) == 2
    _validate(out)


@pytest.mark.parametrize("fault", ["400", "422"])
def test_bad_request_fails_for_good_within_the_run(fake_openai, tmp_path, fault):
    # A 400/422 (a prompt past the context, a parameter the server refuses) is not fixed by
    # asking again: it must not block the run as "retryable", nor be re-asked by a plain rerun.
    fake_openai.set_responder(scripted_teacher)
    prompts = [
        PromptRow(id="ok", text="Explain tides.", language="en"),
        PromptRow(id="big", text=f"Explain rainbows. FAULT:{fault}", language="en"),
    ]
    out = tmp_path / "out.jsonl"
    cfg = DialogueConfig.from_dict({"turns": 2}, kind="hhh")
    teacher = make_teacher_config_for(fake_openai)
    stats = generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
    assert stats.counts["made"] == 1 and stats.counts["failed_bad_request"] == 1
    assert stats.retryable_failed == 0 and "to retry" not in stats.summary()
    assert json.loads((tmp_path / "out.stats.json").read_text())["retryable_failed"] == 0
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert [(f["id"], f["reason"], f["permanent"]) for f in failed] == [("hhh-big", "bad_request", True)]
    # the next run asks a refused request again once (the user may have fixed the server), and it
    # is ledgered again for the run after
    before = fake_openai.requests
    stats2 = generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
    assert fake_openai.requests == before + 1 and stats2.counts.get("skipped_failed_before", 0) == 0
    assert stats2.counts["failed_bad_request"] == 1 and stats2.retry_next_run == 1
    # other teacher parameters may be what the server refused: another fingerprint, asked again
    teacher3 = make_teacher_config_for(fake_openai, params={"temperature": 0.7, "presence_penalty": 0.1})
    stats3 = generate_dialogues(prompts, "hhh", cfg, teacher3, out, tmp_path / "j.sqlite")
    assert stats3.counts.get("skipped_failed_before", 0) == 0 and stats3.counts["failed_bad_request"] == 1
    assert fake_openai.requests > before


def test_bad_request_on_a_later_turn_keeps_the_turns_made(fake_openai, tmp_path):
    # The usual 400 mid-dialogue: the history grew past the model's context.
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject(
        "400", times=None, match="Follow-up number 2: can you say more about what you just explained?"
    )
    out = tmp_path / "out.jsonl"
    stats = generate_dialogues(
        [PromptRow(id="a1", text="Explain tides.", language="en")],
        "hhh",
        {"turns": 3},
        make_teacher_config_for(fake_openai),
        out,
        tmp_path / "j.sqlite",
    )
    [conv] = list(iter_conversations(out))
    assert len(conv.turns) == 1 and conv.extra["generation"]["stopped"] == "assistant:bad_request"
    assert stats.counts["shortened_bad_request"] == 1 and stats.retryable_failed == 0


def test_account_wide_failure_stops_the_stage(fake_openai, tmp_path):
    from datagen.errors import TeacherError

    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject("401", times=None)
    prompts = [PromptRow(id=f"p{i}", text=f"Tell me about topic {i}.", language="en") for i in range(20)]
    out = tmp_path / "out.jsonl"
    with pytest.raises(TeacherError, match="auth"):
        generate_dialogues(
            prompts,
            "hhh",
            {"turns": 2, "concurrency": 4},
            make_teacher_config_for(fake_openai),
            out,
            tmp_path / "j.sqlite",
        )
    assert fake_openai.requests <= 4  # stopped at once, not one 401 per dialogue
    assert not out.read_text()
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert failed and all(f["reason"] == "auth" and not f["permanent"] for f in failed)


@pytest.mark.parametrize("mode", ["repeat", "echo"])
def test_simulated_user_copying_is_rejected(fake_openai, tmp_path, mode):
    def responder(req):
        if role_of(req) == "user":
            transcript = req["messages"][-1]["content"]
            said = transcript.split("MOSS: ", 1)[1].split("\n\nWrite the user's")[0]
            return "User: How do volcanoes form, exactly?" if mode == "repeat" else said
        return scripted_teacher(req)

    fake_openai.set_responder(responder)
    out = tmp_path / "out.jsonl"
    stats = generate_dialogues(
        [PromptRow(id="v1", text="How do volcanoes form exactly?", language="en")],
        "hhh",
        {"turns": 3, "content_retries": 1},
        make_teacher_config_for(fake_openai),
        out,
        tmp_path / "j.sqlite",
    )
    [conv] = list(iter_conversations(out))
    assert len(conv.turns) == 1 and conv.extra["generation"]["stopped"] == f"user:{mode}"
    assert stats.counts[f"shortened_{mode}"] == 1


def test_tool_backend_down_is_a_retryable_failure(fake_openai, tmp_path):
    from datagen.teacher.failures import RETRYABLE
    from datagen.tools.base import ToolUnavailableError
    from datagen.tools.search import SearchTool

    class DownBackend:
        up = False

        def search(self, query, k=3):
            if not self.up:
                raise ToolUnavailableError("search API: HTTP 503")
            from datagen.tools.search import SearchHit

            return [SearchHit(snippet="Mount Everest is 8,849 metres tall.", title="Everest", url="")]

    backend = DownBackend()
    fake_openai.set_responder(scripted_teacher)
    prompts = [
        PromptRow(
            id="t1", text="How tall is Mount Everest?", language="en", category="tool", plugins=["search"]
        ),
        PromptRow(id="e1", text="MOSS, please answer with nothing.", language="en", category="tool"),
    ]
    out = tmp_path / "out.jsonl"
    cfg = DialogueConfig.from_dict({"turns": 1}, kind="plugin")
    tools = {"search": SearchTool(backend=backend)}
    stats = generate_dialogues(
        prompts[:1],
        "plugin",
        cfg,
        make_teacher_config_for(fake_openai),
        out,
        tmp_path / "j.sqlite",
        tools=tools,
    )
    assert stats.counts["failed_tool_unavailable"] == 1 and "tool_unavailable" not in RETRYABLE
    assert stats.retryable_failed == 1
    info = json.loads((tmp_path / "out.stats.json").read_text())
    assert info["retryable_failed"] == 1  # the pipeline reads this to mark the stage incomplete
    assert "1 to retry" in stats.summary()

    # a failure a rerun cannot fix is not counted as retryable
    def empty_answers(req):
        return "MOSS: <eom>" if role_of(req) == "answer" else scripted_teacher(req)

    fake_openai.set_responder(empty_answers)
    stats_e = generate_dialogues(
        prompts[1:],
        "plugin",
        {"turns": 1, "content_retries": 0, "plugins": ["calculator"]},
        make_teacher_config_for(fake_openai),
        tmp_path / "e.jsonl",
        tmp_path / "e.sqlite",
    )
    assert stats_e.by_prefix("failed_") == {"empty_reply": 1} and stats_e.retryable_failed == 0
    # the backend is back: the rerun makes the dialogue and reports nothing left to retry
    backend.up = True
    fake_openai.set_responder(scripted_teacher)
    stats2 = generate_dialogues(
        prompts[:1],
        "plugin",
        cfg,
        make_teacher_config_for(fake_openai),
        out,
        tmp_path / "j.sqlite",
        tools=tools,
    )
    assert stats2.counts["made"] == 1 and stats2.retryable_failed == 0


def test_a_prompt_without_language_gets_the_seed_detector_verdict(fake_openai, tmp_path):
    prompts = [
        PromptRow(id="z1", text="你好"),
        PromptRow(id="h1", text="Hola amigo"),
        PromptRow(id="e1", text="How do volcanoes form?"),
    ]
    out, _ = _run(fake_openai, tmp_path, prompts, turns=1)
    langs = {c.id: c.language for c in iter_conversations(out)}
    # short CJK by its script, short Latin left undecided rather than called English
    assert langs == {"hhh-z1": "zh", "hhh-h1": None, "hhh-e1": "en"}


class _SlowSearchServer:
    """A search API on 127.0.0.1 that holds each request until `expect` requests have been in
    flight together (or `hold` seconds pass) and records the most it saw at once."""

    def __init__(self, expect: int, hold: float):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.expect, self.hold = expect, hold
        self.in_flight = self.max_in_flight = self.requests = 0
        self.cond = threading.Condition()
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                with server_self.cond:
                    server_self.requests += 1
                    server_self.in_flight += 1
                    server_self.max_in_flight = max(server_self.max_in_flight, server_self.in_flight)
                    server_self.cond.notify_all()
                    server_self.cond.wait_for(
                        lambda: server_self.max_in_flight >= server_self.expect, timeout=server_self.hold
                    )
                body = json.dumps(
                    {
                        "results": [
                            {
                                "content": "Mount Everest is 8,849 metres tall.",
                                "title": "Everest",
                                "url": "https://example.org/everest",
                            }
                        ]
                    }
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())
                with server_self.cond:
                    server_self.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/search"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_search_calls_of_concurrent_dialogues_overlap_up_to_the_tool_concurrency(
    fake_openai, tmp_path, concurrency
):
    from datagen.generate.maker import tool_concurrency
    from datagen.tools.search import SearchTool

    n = 4
    # with room for all four, the server answers as soon as they are all in flight; serialised
    # calls each wait out `hold` (short, so the serialised case stays quick)
    search = _SlowSearchServer(expect=n if concurrency > 1 else 2, hold=5.0 if concurrency > 1 else 0.2)
    try:
        tool = SearchTool(backend="http", url=search.url, timeout=10.0, retries=0, concurrency=concurrency)
        assert tool_concurrency(tool) == concurrency
        prompts = [
            PromptRow(
                id=f"s{i}",
                text=f"How tall is Mount Everest? (asked {i})",
                language="en",
                category="tool",
                plugins=["search"],
            )
            for i in range(n)
        ]
        fake_openai.set_responder(scripted_teacher)
        out = tmp_path / "out.jsonl"
        stats = generate_dialogues(
            prompts,
            "plugin",
            {"turns": 1, "concurrency": n},
            make_teacher_config_for(fake_openai),
            out,
            tmp_path / "j.sqlite",
            tools={"search": tool},
        )
    finally:
        search.stop()
    assert stats.counts["made"] == n and search.requests == n
    assert search.max_in_flight == concurrency  # overlapped up to the tool's limit, never past it
    convs = list(iter_conversations(out))
    assert all("8,849" in c.turns[0].results[0].snippets[0] for c in convs)


def test_failure_ledger_keeps_the_latest_row_per_dialogue_across_reruns(fake_openai, tmp_path):
    prompts = [
        PromptRow(id="a1", text="Explain tides.", language="en"),
        PromptRow(id="b1", text="Explain rainbows.", language="en"),
    ]
    fake_openai.set_responder(scripted_teacher)
    fake_openai.inject(
        "500", times=None, match="Follow-up number 2: can you say more about what you just explained?"
    )
    out, ledger = tmp_path / "out.jsonl", tmp_path / "out.failed.jsonl"
    teacher = make_teacher_config_for(fake_openai, max_attempts=1)
    cfg = DialogueConfig.from_dict({"turns": 2}, kind="hhh")

    def rows():
        return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]

    for _ in range(3):  # the API keeps failing: three reruns, one row per failed dialogue
        generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
        assert sorted((r["id"], r["reason"]) for r in rows()) == [
            ("hhh-a1", "server_error"),
            ("hhh-b1", "server_error"),
        ]
    # the server recovers: the rerun finishes both and the ledger names neither
    fake_openai.reset()
    fake_openai.set_responder(scripted_teacher)
    stats = generate_dialogues(prompts, "hhh", cfg, teacher, out, tmp_path / "j.sqlite")
    assert stats.counts["made"] == 2 and rows() == []


def test_compact_failures_keeps_latest_rows_in_order(tmp_path):
    from datagen.generate.dialogues import compact_failures

    ledger = tmp_path / "x.failed.jsonl"
    lines = [
        {"id": "x", "reason": "timeout"},
        {"id": "y", "reason": "empty"},
        {"note": "no id"},
        {"id": "x", "reason": "server_error"},
        {"id": "done", "reason": "timeout"},
    ]
    ledger.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert compact_failures(ledger, {"done"}) == 2
    assert [json.loads(line) for line in ledger.read_text().splitlines()] == [
        {"id": "y", "reason": "empty"},
        {"note": "no id"},
        {"id": "x", "reason": "server_error"},
    ]
    before = ledger.stat().st_mtime_ns
    assert compact_failures(ledger, {"done"}) == 0 and ledger.stat().st_mtime_ns == before  # untouched
