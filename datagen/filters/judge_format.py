"""How the judge asks for its JSON: the `structured` setting of the `judge` step.

- `json_schema`: OpenAI structured outputs, `{"type": "json_schema", "json_schema": {"name", "schema",
  "strict": true}}` with the rubric's schema (`Rubric.schema`). OpenAI, vLLM, SGLang and llama.cpp's
  own server constrain decoding to it.
- `json_object_schema`: `{"type": "json_object", "schema": ...}`, the shape llama-cpp-python's server
  (the embedded teacher) and Anyscale-style endpoints take. These servers compile the schema into a
  grammar, so it says more (`Rubric.schema(grammar=True)`): the asked turns in order, short reasons.
- `json_object`: JSON mode, any JSON object; `off`: no `response_format`, the prompt alone.
- `auto` (the default): the first of those four the endpoint accepts. Its first call goes alone; an
  endpoint that refuses the format (HTTP 400/422, or llama-cpp-python's validation error, which it
  answers with a 500 naming `response_format`) is asked again with the next one, and the first
  format that gets an answer is remembered for every later call to that endpoint and model in this
  process (so the waves of a run probe once). A call refused in every format is a plain failure (the
  request itself was bad) and settles nothing.

The format is part of each request's params, so of its journal key: a reply cached without a schema
is never taken for one asked with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from datagen.filters.rubric import Rubric

Structured = Literal["auto", "json_schema", "json_object_schema", "json_object", "off"]
#: The formats `auto` tries, in order.
LADDER: tuple[str, ...] = ("json_schema", "json_object_schema", "json_object", "off")


def response_format(kind: str, rubric: Rubric, turns: list[int]) -> dict[str, Any] | None:
    """The `response_format` asking for a judgment of `turns` under `rubric` (None: send none)."""
    if kind == "json_schema":
        name = "judge_" + rubric.id.replace(".", "_")
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": rubric.schema(turns), "strict": True},
        }
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": rubric.schema(turns, grammar=True)}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "off":
        return None
    raise ValueError(f"unknown structured output kind {kind!r}")


def refused(error: str | None, detail: str | None) -> bool:
    """Whether a failed call may have been refused for its `response_format` (so a plainer format
    is worth one try): a 4xx other than auth, not-found and rate limits, or a server error that names
    the field (llama-cpp-python answers request validation errors with a 500)."""
    if error == "bad_request":
        return True
    return error == "server_error" and "response_format" in (detail or "")


#: What `auto` found out this process: (base_url, model) -> the format that endpoint answered.
SETTLED: dict[tuple[str, str], str] = {}


@dataclass(slots=True)
class Formats:
    """The format each endpoint gets: the configured one, or under `auto` the one it accepted."""

    structured: str = "auto"
    #: (base_url, model) -> the format that endpoint answered (auto only); shared by every judge of
    #: this process unless one is given.
    settled: dict[tuple[str, str], str] = field(default_factory=lambda: SETTLED)

    def __post_init__(self) -> None:
        if self.structured != "auto" and self.structured not in LADDER:
            raise ValueError(
                f"structured must be auto or one of {', '.join(LADDER)}, got {self.structured!r}"
            )

    def first(self, endpoint: tuple[str, str]) -> str:
        """The format a call to `endpoint` starts with."""
        if self.structured != "auto":
            return self.structured
        return self.settled.get(endpoint, LADDER[0])

    def probing(self, endpoint: tuple[str, str]) -> bool:
        """Whether calls to `endpoint` still have to find their format (auto, none accepted yet)."""
        return self.structured == "auto" and endpoint not in self.settled

    def fallback(self, endpoint: tuple[str, str], kind: str) -> str | None:
        """The next format to try after `endpoint` refused `kind` (None: nothing left to try)."""
        if not self.probing(endpoint) or kind not in LADDER or kind == LADDER[-1]:
            return None
        return LADDER[LADDER.index(kind) + 1]

    def settle(self, endpoint: tuple[str, str], kind: str) -> bool:
        """Remember that `endpoint` answered in `kind`; True the first time (auto only)."""
        if not self.probing(endpoint):
            return False
        self.settled[endpoint] = kind
        return True
