"""The judge's structured outputs: the JSON schema derived from a rubric, replies a server constrained
to that schema, the fallback (once per endpoint, remembered) when an endpoint refuses the format,
and the format in the journal key. The fake server stands in for each kind of endpoint; the schema
also goes through llama-cpp-python's own schema-to-grammar converter, the embedded teacher's."""

from __future__ import annotations

import json
import re

import pytest

from datagen.errors import ConfigError
from datagen.filters.config import FilterConfig
from datagen.filters.judge_format import LADDER, response_format
from datagen.filters.rubric import GRAMMAR_REASON_CHARS, MAX_REASON_CHARS, load_rubric, parse_judgment
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.fakes.openai_server import Fault
from tests.filters.conftest import conv, tool_turn


def _objects(schema):
    """Every object schema inside `schema`."""
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for v in schema.values():
            yield from _objects(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _objects(v)


@pytest.mark.parametrize("rubric_id", ["hhh.v1", "grounded.v1"])
def test_the_schema_has_exactly_the_rubrics_keys_scores_and_asked_turns(rubric_id):
    rubric = load_rubric(rubric_id)
    schema = rubric.schema([2, 5])
    assert schema["required"] == ["turns", "dialogue"]
    graded = schema["properties"]["turns"]
    assert graded["minItems"] == graded["maxItems"] == 2
    item = graded["items"]["properties"]
    assert list(item) == ["turn", *rubric.criteria]
    assert item["turn"] == {"type": "integer", "enum": [2, 5]}
    assert list(schema["properties"]["dialogue"]["properties"]) == list(rubric.criteria)
    for mark in [item[c] for c in rubric.criteria] + list(
        schema["properties"]["dialogue"]["properties"].values()
    ):
        assert mark["properties"]["score"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
        assert mark["properties"]["reason"] == {"type": "string"}  # strict mode refuses lengths
    # what strict structured outputs demand of every object: closed, every property required
    for obj in _objects(schema):
        assert obj["additionalProperties"] is False and obj["required"] == list(obj["properties"])


def test_the_grammar_schema_fixes_the_turns_and_bounds_each_reason_to_one_short_json_safe_line():
    rubric = load_rubric("grounded")
    schema = rubric.schema([2, 5], grammar=True)
    tuple_ = schema["properties"]["turns"]["prefixItems"]
    assert [t["properties"]["turn"]["const"] for t in tuple_] == [2, 5]
    assert [list(t["properties"]) for t in tuple_] == [["turn", "grounded"]] * 2
    for obj in _objects(schema):
        assert obj["additionalProperties"] is False and obj["required"] == list(obj["properties"])
    pattern = re.compile(
        schema["properties"]["dialogue"]["properties"]["grounded"]["properties"]["reason"]["pattern"]
    )
    assert pattern.match("Uses the 1081 the tool returned.")
    assert pattern.match("x" * GRAMMAR_REASON_CHARS) and not pattern.match("x" * (GRAMMAR_REASON_CHARS + 1))
    assert GRAMMAR_REASON_CHARS <= MAX_REASON_CHARS  # what a grammar lets through, the reader accepts
    for bad in ["", " leading space", "two\nlines", 'a "quote"', "back\\slash"]:
        assert not pattern.match(bad), bad


def test_llama_cpp_compiles_the_schema_into_the_rubrics_grammar():
    """The embedded teacher falls back to any-JSON when a schema does not convert; this one does."""
    from llama_cpp import llama_grammar

    rf = response_format("json_object_schema", load_rubric("hhh"), [1, 3])
    assert rf["type"] == "json_object"
    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(rf["schema"]))
    assert '"\\"follows_meta\\""' in gbnf
    assert 'turns ::= "[" space turns-tuple-0 "," space turns-tuple-1 "]" space' in gbnf
    assert 'turns-tuple-0-turn ::= "1"' in gbnf and 'turns-tuple-1-turn ::= "3"' in gbnf
    assert '[^"\\\\\\x00-\\x1f]' in gbnf  # the reason's character class: no raw newline
    assert llama_grammar.LlamaGrammar.from_json_schema(json.dumps(rf["schema"])) is not None


# -- against the fake server ---------------------------------------------------------------------------


def _fill(schema, *, score=4):
    """What a server constraining decoding to `schema` answers: built from the schema alone."""
    graded = schema["properties"]["turns"]
    if "prefixItems" in graded:  # the grammar form: one entry per asked turn, in order
        turns = [t["properties"]["turn"]["const"] for t in graded["prefixItems"]]
    else:
        turns = graded["items"]["properties"]["turn"]["enum"]
    criteria = list(schema["properties"]["dialogue"]["properties"])
    assert score in schema["properties"]["dialogue"]["properties"][criteria[0]]["properties"]["score"]["enum"]
    mark = {"score": score, "reason": "Fits the schema."}
    return json.dumps(
        {
            "turns": [{"turn": n, **dict.fromkeys(criteria, mark)} for n in turns],
            "dialogue": dict.fromkeys(criteria, mark),
        }
    )


def _rows():
    plugin = conv(("What is 23*47?", "Let me compute it."), id="p1", plugins=["calculator"])
    plugin.turns.append(tool_turn("And 2*3?", "It is 6.", arg="2*3", output="6"))
    plugin.turns.append(tool_turn("And 4*5?", "It is 20.", arg="4*5", output="20"))
    return [plugin, conv(("Hi", "Hello!"), id="a"), conv(("Thanks", "You're welcome."), id="b")]


def _step(fake, tmp_path, **params):
    teacher = make_teacher_config_for(fake, params={}).to_dict()
    step = {"name": "judge", "teacher": teacher, "journal": str(tmp_path / "judge.sqlite"), **params}
    return FilterConfig.from_dict({"steps": [step], "workers": 1}).build_steps()[0]


def _judge(step, rows):
    return step.decide_batch([(r, None) for r in rows])


def _kinds(fake):
    """The response_format kind of each request received: its type (+schema), or None."""
    out = []
    for body in fake.received:
        rf = body.get("response_format")
        out.append(None if rf is None else rf["type"] + ("+schema" if "schema" in rf else ""))
    return out


def test_a_reply_constrained_to_the_schema_parses(fake_openai, tmp_path):
    def structured_server(body):
        rf = body.get("response_format") or {}
        if rf.get("type") != "json_schema" or not rf["json_schema"]["strict"]:
            return "I think it is fine, 4/5."  # what an unconstrained small model says
        return _fill(rf["json_schema"]["schema"])

    fake_openai.set_responder(structured_server)
    verdicts = _judge(_step(fake_openai, tmp_path), _rows())
    assert [v.keep for v in verdicts] == [True, True, True]
    grounded = verdicts[0].updates["tags"]["judge.rubrics"]["grounded.v1"]
    assert [t["turn"] for t in grounded["turns"]] == [2, 3]  # the turns that made calls
    assert verdicts[1].updates["scores"]["judge_helpful"] == 4.0
    assert set(_kinds(fake_openai)) == {"json_schema"} and fake_openai.requests == 4


def _llama_cpp_like(body):
    """llama-cpp-python 0.3's server: `json_schema` fails its request validation (answered with a
    500 naming response_format); `{"type": "json_object", "schema": ...}` constrains decoding."""
    rf = body.get("response_format") or {}
    if rf.get("type") not in (None, "text", "json_object"):
        return Fault(
            "500",
            message="1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', "
            "'type'), 'msg': \"Input should be 'text' or 'json_object'\"}",
        )
    if "schema" in rf:
        return _fill(rf["schema"], score=5)
    return "Looks grounded to me."


def test_an_endpoint_refusing_json_schema_gets_its_own_form_once_and_it_is_remembered(fake_openai, tmp_path):
    fake_openai.set_responder(_llama_cpp_like)
    step = _step(fake_openai, tmp_path)
    verdicts = _judge(step, _rows())
    assert all(v.keep for v in verdicts) and verdicts[2].updates["scores"]["judge_honest"] == 5.0
    # one call probed alone: refused (the engine tries a 500 again), then the llama.cpp form,
    # which every later call starts with
    kinds = _kinds(fake_openai)
    refused = kinds.count("json_schema")
    assert refused >= 1 and kinds[:refused] == ["json_schema"] * refused
    assert kinds[refused:] == ["json_object+schema"] * 4
    assert step.calls.refused_formats == 1 and step.formats.settled == {
        (fake_openai.base_url, fake_openai.model): "json_object_schema"
    }
    # the next batch of rows asks in the remembered format straight away
    fake_openai.reset()
    fake_openai.set_responder(_llama_cpp_like)
    _judge(step, [conv(("Bye", "Goodbye!"), id="c")])
    assert _kinds(fake_openai) == ["json_object+schema"]
    # so does a new judge in the same process (the next wave of a run in waves)
    fake_openai.reset()
    fake_openai.set_responder(_llama_cpp_like)
    (tmp_path / "next-wave").mkdir()
    again = _step(fake_openai, tmp_path / "next-wave")
    _judge(again, [conv(("Hi", "Hello!"), id="d")])
    assert _kinds(fake_openai) == ["json_object+schema"] and again.calls.refused_formats == 0


def test_an_endpoint_refusing_every_response_format_falls_back_to_the_prompt_alone(fake_openai, tmp_path):
    def plain_only(body):
        if "response_format" in body:
            return Fault("400", message="Unsupported parameter: 'response_format'")
        user = body["messages"][1]["content"]
        skeleton = json.loads(user[user.index('{"turns"') :])
        criteria = list(skeleton["dialogue"])
        mark = {"score": 3, "reason": "From the prompt's skeleton."}
        return json.dumps(
            {
                "turns": [{"turn": t["turn"], **dict.fromkeys(criteria, mark)} for t in skeleton["turns"]],
                "dialogue": dict.fromkeys(criteria, mark),
            }
        )

    fake_openai.set_responder(plain_only)
    step = _step(fake_openai, tmp_path)
    verdicts = _judge(step, _rows())
    assert all(v.keep for v in verdicts)
    assert _kinds(fake_openai) == ["json_schema", "json_object+schema", "json_object", None, None, None, None]
    assert step.calls.refused_formats == 3 and step.calls.errors == 0


def test_a_request_refused_in_every_format_fails_and_settles_nothing(fake_openai, tmp_path):
    fake_openai.inject("400", times=4, message="This model's maximum context length is 8192 tokens")
    step = _step(fake_openai, tmp_path)
    (v,) = _judge(step, [conv(("Hi", "Hello!"), id="x")])
    assert v.reason == "judge_error" and "context length" in v.evidence["detail"]
    assert len(fake_openai.received) == len(LADDER) and step.formats.settled == {}


def test_a_named_format_is_sent_as_is_and_a_refusal_is_an_error(fake_openai, tmp_path):
    fake_openai.set_responder(_llama_cpp_like)
    step = _step(fake_openai, tmp_path, structured="json_schema", max_tokens=100)
    (v,) = _judge(step, [conv(("Hi", "Hello!"), id="x")])
    assert v.reason == "judge_unavailable" and "response_format" in v.evidence["detail"]
    assert set(_kinds(fake_openai)) == {"json_schema"} and step.calls.refused_formats == 0
    fake_openai.reset()
    fake_openai.set_responder(_llama_cpp_like)
    (v,) = _judge(
        _step(fake_openai, tmp_path, structured="json_object_schema"), [conv(("Hi", "Hello!"), id="x")]
    )
    assert v.keep and _kinds(fake_openai) == ["json_object+schema"]


def test_the_format_is_part_of_the_journal_key(fake_openai, tmp_path):
    def answers_any(body):
        rf = body.get("response_format") or {}
        schema = rf.get("schema") or rf.get("json_schema", {}).get("schema")
        if schema:
            return _fill(schema, score=5)
        return _fill(load_rubric("hhh").schema([1]), score=2)  # unconstrained: a different judgment

    fake_openai.set_responder(answers_any)
    row = [conv(("Hi", "Hello!"), id="x")]
    (plain,) = _judge(_step(fake_openai, tmp_path, structured="off"), row)
    assert plain.updates["scores"]["judge_helpful"] == 2.0
    # the same journal: the unconstrained reply is not taken for a structured one
    (structured,) = _judge(_step(fake_openai, tmp_path), row)
    assert structured.updates["scores"]["judge_helpful"] == 5.0 and fake_openai.requests == 2
    (again,) = _judge(_step(fake_openai, tmp_path), row)
    assert again.updates["scores"]["judge_helpful"] == 5.0 and fake_openai.requests == 2  # cached


def test_an_unknown_structured_setting_names_its_key(fake_openai, tmp_path):
    with pytest.raises(ConfigError) as exc:
        _step(fake_openai, tmp_path, structured="grammar")
    assert exc.value.field == "steps.0.structured" and "json_object_schema" in str(exc.value)


def test_a_reply_outside_the_schema_is_still_refused_by_the_reader():
    """A server that ignores the schema cannot slip a wrong turn number past the strict reader."""
    rubric = load_rubric("grounded")
    reply = json.loads(_fill(rubric.schema([2])))
    reply["turns"][0]["turn"] = 7
    with pytest.raises(ValueError, match="one of \\[2\\]"):
        parse_judgment(json.dumps(reply), rubric, [2])


@pytest.mark.slow
def test_the_embedded_teacher_answers_the_grounded_rubric_in_its_grammar(tmp_path):
    """llama-cpp-python's server refuses `json_schema` and decodes `json_object` + schema with a
    grammar: even SmolLM2-135M's judgment then has the asked shape."""
    import socket

    from datagen.filters.judge import JudgeFilter
    from datagen.teacher.local_server import start_local_teacher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    row = _rows()[0]
    row.turns = row.turns[:2]  # one graded turn keeps the completion short
    with start_local_teacher(port=port, log_path=tmp_path / "teacher.log", ready_timeout=300) as teacher:
        config = {
            "base_url": teacher.base_url,
            "model": teacher.model_alias,
            "max_attempts": 1,
            "progress": False,
        }
        step = JudgeFilter(
            teacher=config, rubrics=["grounded"], journal=str(tmp_path / "j.sqlite"), max_tokens=400
        )
        (v,) = step.decide_batch([(row, None)])
    assert step.formats.settled == {(teacher.base_url, teacher.model_alias): "json_object_schema"}
    assert step.calls.refused_formats == 1 and step.calls.unparseable == 0, v.evidence
    marks = v.updates["tags"]["judge.rubrics"]["grounded.v1"]
    assert [t["turn"] for t in marks["turns"]] == [2] and 1 <= marks["dialogue"]["grounded"]["score"] <= 5
