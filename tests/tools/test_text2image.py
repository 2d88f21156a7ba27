import pytest

from datagen.tools import ToolUnavailableError, get_tool
from datagen.tools.text2image import SUCCESS, ImageResult


def test_records_success_without_an_api():
    result = get_tool("text2image").run("a fox holding a card")
    assert result.ok and result.output == SUCCESS == "Image generated successfully."
    assert result.name == "Text2Image" and result.arg == "a fox holding a card"
    assert "image_url" not in result.to_dict()
    assert not get_tool("text2image").run("  ").ok


def test_calls_the_configured_api(json_server, monkeypatch):
    monkeypatch.setenv("TEST_IMAGE_KEY", "img-secret")
    json_server.respond = lambda seen: (
        200,
        {"data": [{"url": f"http://img/{len(seen.body['prompt'])}.png"}]},
    )
    tool = get_tool(
        "text2image",
        url=json_server.url + "/v1/images/generations",
        params={"model": "tiny-diffusion", "size": "256x256"},
        headers_env={"Authorization": "Bearer $TEST_IMAGE_KEY"},
    )
    result = tool.run("a black cat")
    assert isinstance(result, ImageResult)
    assert result.ok and result.output == SUCCESS and result.image_url == "http://img/11.png"
    assert result.to_dict()["image_url"] == "http://img/11.png"
    seen = json_server.requests[0]
    assert seen.method == "POST" and seen.path == "/v1/images/generations"
    assert seen.body == {"n": 1, "model": "tiny-diffusion", "size": "256x256", "prompt": "a black cat"}
    assert seen.headers["authorization"] == "Bearer img-secret"


def test_api_failure_is_not_a_fake_success(json_server):
    json_server.respond = lambda seen: (200, {"data": []})
    tool = get_tool("text2image", url=json_server.url, retries=0)
    with pytest.raises(ToolUnavailableError, match="data.0.url"):
        tool.run("a dog")
    json_server.respond = lambda seen: (400, {"error": "content policy"})
    with pytest.raises(ToolUnavailableError, match="HTTP 400"):
        tool.run("a dog")
