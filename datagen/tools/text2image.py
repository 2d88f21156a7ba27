"""Text2Image(description): MOSS records `Image generated successfully.`; datagen can also call a
real image API.

Without a `url` the tool only records the success message, which is all MOSS's training data
contains. With a `url` it POSTs the description (OpenAI images API shape by default:
`{"prompt": ..., "n": 1, **params}`) and keeps the returned image URL on the result's
`image_url` (also in `to_dict()`), while `output` stays MOSS's message so rendered dialogues do not
change. An API failure raises `ToolUnavailableError` rather than pretending an image exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from datagen.errors import ConfigError
from datagen.record import ToolResult
from datagen.tools.base import Bounds, Tool, ToolUnavailableError, register_tool
from datagen.tools.http import env_headers, get_path, request_json, request_time_limit

SUCCESS = "Image generated successfully."


@dataclass(slots=True)
class ImageResult(ToolResult):
    """A Text2Image result; `image_url` is set when an image API produced an image."""

    image_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = ToolResult.to_dict(self)
        if self.image_url:
            d["image_url"] = self.image_url
        return d


@register_tool
class Text2ImageTool(Tool):
    """The `text2image` plugin.

    Args:
        url: image API endpoint (e.g. `http://host/v1/images/generations`); None: record only.
        prompt_field: body field carrying the description.
        params: fixed extra body fields (`{"model": "...", "size": "512x512"}`).
        headers_env: headers read from environment variables (`{"Authorization": "Bearer $IMAGE_KEY"}`).
        image_path: dotted path of the image URL in the response (`data.0.url`).
        timeout, retries: per request.
        concurrency: image requests in flight at once across all dialogues.
    """

    name: ClassVar[str] = "Text2Image"
    plugin: ClassVar[str] = "text2image"
    bounds: ClassVar[dict[str, Bounds]] = {
        "timeout": Bounds(above=0, high=3600),
        "retries": Bounds(low=0, high=10),
        "concurrency": Bounds(low=1, high=64),
    }

    def __init__(
        self,
        *,
        url: str | None = None,
        prompt_field: str = "prompt",
        params: dict[str, Any] | None = None,
        headers_env: dict[str, str] | None = None,
        image_path: str = "data.0.url",
        timeout: float = 120.0,
        retries: int = 2,
        concurrency: int = 4,
    ):
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"text2image url must start with http:// or https://, got {url!r}", field="url")
        self.url = url
        self.prompt_field = prompt_field
        self.params = {"n": 1, **(params or {})}
        self.headers_env = dict(headers_env or {})
        self.image_path = image_path
        self.timeout = timeout
        self.retries = retries
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(
                f"concurrency must be a positive integer, got {concurrency!r}", field="concurrency"
            )
        self.concurrency = concurrency if url else 1  # without an API there is nothing to wait for
        if url:
            self.time_limit = request_time_limit(timeout, retries)
        env_headers(self.headers_env)  # a missing variable fails now, not mid-run

    def run(self, arg: str) -> ToolResult:
        description = arg.strip()
        if not description:
            return self.no_result(arg)
        image_url = None
        if self.url:
            data = request_json(
                self.url,
                method="POST",
                body={**self.params, self.prompt_field: description},
                headers=env_headers(self.headers_env),
                timeout=self.timeout,
                retries=self.retries,
            )
            image_url = get_path(data, self.image_path)
            if not isinstance(image_url, str) or not image_url:
                raise ToolUnavailableError(f"image API response has no string at {self.image_path!r}")
        return ImageResult(name=self.name, arg=arg, ok=True, output=SUCCESS, image_url=image_url)
