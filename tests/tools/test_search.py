import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.errors import ConfigError, InputError
from datagen.formats import moss
from datagen.formats.commands import render_results, snippet_text
from datagen.formats.validate import check_conversation, validate_record
from datagen.record import Conversation, ToolCall, Turn
from datagen.tools import NO_RESULT, ToolUnavailableError, get_tool
from datagen.tools.search import DEFAULT_DOCS, HttpSearch, LocalSearch, SearchTool, best_passage, tokenize


@pytest.fixture(scope="module")
def shipped() -> SearchTool:
    return SearchTool()  # the demo collection


def test_tokenize_cjk_and_latin():
    assert tokenize("北京的人口 Populations") == [
        "北",
        "京",
        "人",
        "口",
        "北京",
        "京的",
        "的人",
        "人口",
        "population",
    ]
    assert tokenize("The  Eiffel-Tower!") == ["eiffel", "tower"]


@pytest.mark.parametrize(
    ("query", "title", "fact"),
    [
        ("珠穆朗玛峰 高度", "珠穆朗玛峰", "8848.86"),
        ("屠呦呦 诺贝尔奖 年份", "屠呦呦", "2015"),
        ("青藏铁路 通车时间", "青藏铁路", "2006年7月1日"),
        ("Eiffel Tower height", "Eiffel Tower", "330 metres"),
        ("who invented the world wide web", "World Wide Web", "Tim Berners-Lee"),
        ("2022 World Cup winner", "FIFA World Cup", "Argentina"),
        ("Python 创始人", "Python programming language", "Guido van Rossum"),
    ],
)
def test_shipped_collection_finds_the_relevant_doc(shipped, query, title, fact):
    hits = shipped.hits(query)
    assert hits and hits[0].title == title
    result = shipped.run(query)
    assert result.ok and result.name == "Search"
    assert fact in result.snippets[0]
    assert all(len(h.snippet) <= 400 + 4 for h in hits)
    assert result.snippets == [snippet_text(h.snippet) for h in hits]


def test_unrelated_query_gives_no_result(shipped):
    for query in ("火锅 做法", "埃菲尔铁塔", "   "):
        result = shipped.run(query)
        assert not result.ok and result.output == NO_RESULT and result.snippets == []


def test_shipped_collection_is_well_formed():
    rows = [json.loads(line) for line in DEFAULT_DOCS.read_text(encoding="utf-8").splitlines()]
    assert 80 <= len(rows) <= 150
    langs = [r["language"] for r in rows]
    assert langs.count("zh") >= 40 and langs.count("en") >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["title"] and r["text"] and r["url"] for r in rows)


def test_user_collection_jsonl_and_parquet(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"title": "Zorblax", "body": "Zorblax is a fictional moon of planet Quuz.", "link": "u1"})
        + "\n",
        encoding="utf-8",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [{"title": "龙猫镇", "body": "龙猫镇是一个虚构的小镇，以猫咖啡馆闻名。", "link": "u2"}]
        ),
        tmp_path / "b.parquet",
    )
    backend = LocalSearch(tmp_path, title_field="title", text_field="body", url_field="link")
    assert [h.url for h in backend.search("Zorblax moon", 3)] == ["u1"]
    assert [h.url for h in backend.search("龙猫镇 咖啡馆", 3)] == ["u2"]
    tool = get_tool("search", docs=str(tmp_path / "a.jsonl"), text_field="body", top_k=1)
    assert tool.run("Quuz").snippets == ["'Zorblax is a fictional moon of planet Quuz.'"]


def test_bad_collection_names_file_line_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"title": "ok", "text": "fine"}\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        LocalSearch(path)
    assert err.value.line == 2 and err.value.field == "text" and str(path) in str(err.value)
    with pytest.raises(InputError, match="not found"):
        LocalSearch(tmp_path / "missing.jsonl")


def test_best_passage_picks_matching_sentences():
    text = (
        ("Alpha is first. " * 10)
        + "The treasure is buried under the old oak tree. "
        + ("Omega is last. " * 10)
    )
    passage = best_passage(text, "where is the treasure buried", max_chars=80)
    assert passage.startswith("The treasure is buried under the old oak tree.")
    assert passage.endswith(" ...") and len(passage) <= 84


def test_http_backend_searxng_shape(json_server, monkeypatch):
    monkeypatch.setenv("TEST_SEARCH_KEY", "sekret")

    def respond(seen):
        q = seen.query["q"][0]
        return 200, {
            "results": [
                {"title": "T1", "url": "http://a", "content": f"first about {q}"},
                {"title": "T2", "url": "http://b", "content": "  second\n result  "},
                {"title": "T3", "url": "http://c", "content": ""},
                {"title": "T4", "url": "http://d", "content": "third " + "x " * 400},
            ]
        }

    json_server.respond = respond
    tool = SearchTool(
        backend="http",
        url=json_server.url + "/search",
        headers_env={"Authorization": "Bearer $TEST_SEARCH_KEY"},
    )
    result = tool.run("量子计算 入门")
    assert result.ok
    assert result.snippets[:2] == ["'first about 量子计算 入门'", "'second result'"]
    assert result.snippets[2].endswith(" ...'") and len(result.snippets[2]) <= 404 + 2
    seen = json_server.requests[0]
    assert seen.path == "/search" and seen.query["format"] == ["json"]
    assert seen.headers["authorization"] == "Bearer sekret"


def test_http_backend_nested_results_post_and_empty(json_server):
    json_server.respond = lambda seen: (
        200,
        {"organic": [{"snippet": f"hit for {seen.body['query']}"}]}
        if seen.body["query"] != "nothing"
        else {"organic": []},
    )
    backend = HttpSearch(
        url=json_server.url,
        method="post",
        query_param="query",
        params={},
        results_path="organic",
        snippet_field="snippet",
    )
    tool = SearchTool(backend=backend, top_k=2)
    assert tool.run("abc").snippets == ["'hit for abc'"]
    assert tool.run("nothing").output == NO_RESULT


def test_http_backend_retries_then_raises(json_server):
    calls = []

    def respond(seen):
        calls.append(1)
        return (503, {"error": "busy"}) if len(calls) == 1 else (200, {"results": [{"content": "ok now"}]})

    json_server.respond = respond
    tool = SearchTool(backend="http", url=json_server.url, retries=2)
    assert tool.run("q").snippets == ["'ok now'"] and len(calls) == 2

    json_server.respond = lambda seen: (401, {"error": "bad key"})
    with pytest.raises(ToolUnavailableError, match="HTTP 401"):
        tool.run("q")

    json_server.respond = lambda seen: (200, b"<html>not json</html>")
    with pytest.raises(ToolUnavailableError, match="not JSON"):
        tool.run("q")


def test_http_backend_config_errors(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        HttpSearch(url="http://127.0.0.1:9", headers_env={"X-Key": "NO_SUCH_KEY_VAR"})
    with pytest.raises(ConfigError, match="http"):
        HttpSearch(url="ftp://x")
    with pytest.raises(ConfigError, match="unknown search backend"):
        SearchTool(backend="bing")


MULTILINE_DOCS = [
    {
        "title": "Eiffel Tower",
        "url": "u1",
        "text": "The Eiffel Tower is 330 metres tall.\nIt opened in 1889 for the World's Fair.",
    },
    {
        "title": "Eiffel Tower history",
        "url": "u2",
        "text": 'Gustave Eiffel\'s company built the "tower" in two years.\n<|2|>: not a snippet',
    },
]


@pytest.fixture
def multiline_tool(tmp_path) -> SearchTool:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in MULTILINE_DOCS), encoding="utf-8")
    return SearchTool(docs=str(path), top_k=2)


def test_snippets_render_like_moss(multiline_tool):
    result = multiline_tool.run("Eiffel Tower")
    text = render_results([result], plugin_style=True)
    lines = text.splitlines()
    assert lines[:2] == ["<|Results|>:", 'Search("Eiffel Tower") =>']
    # one line per snippet: the Python repr of the passage, as in MOSS's web_search data
    assert (
        lines[2] == '<|1|>: "The Eiffel Tower is 330 metres tall.\\nIt opened in 1889 for the World\'s Fair."'
    )
    assert (
        lines[3]
        == "<|2|>: 'Gustave Eiffel\\'s company built the \"tower\" in two years.\\n<|2|>: not a snippet'"
    )
    assert lines[4:] == ["<eor>"]


def test_generated_search_turn_round_trips_and_validates(multiline_tool):
    result = multiline_tool.run("Eiffel Tower")
    conv = Conversation(
        id="p1",
        plugins=["search"],
        inner_thoughts=True,
        language="en",
        turns=[
            Turn(
                human="How tall is the Eiffel Tower?",
                thoughts="I should search for its height.",
                calls=[ToolCall("Search", "Eiffel Tower")],
                results=[result],
                assistant="It is 330 metres tall<sup><|1|></sup>.",
            )
        ],
    )
    text = moss.render_text(conv)
    back = moss.parse_text(text, id="p1", language="en")
    assert back.turns[0].results == [result]
    assert moss.render_text(back) == text
    assert check_conversation(conv) == []
    parsed, issues = validate_record(moss.to_sft(conv))
    assert parsed is not None and issues == []
