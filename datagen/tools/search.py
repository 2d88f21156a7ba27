"""Search(query): web-search snippets from a pluggable backend.

Two backends implement `SearchBackend.search(query, k) -> list[SearchHit]`:

- `LocalSearch` (the default, offline): BM25 (bm25s) over a document collection the user points at
  (JSONL or Parquet files, or folders of them, with `title`, `text`, `url` fields). The tokenizer
  is CJK-aware: Han/kana runs become character unigrams plus bigrams, Latin text becomes lower-case
  words. With no `docs` it searches the small demo collection shipped in `datagen/tools/data/`.
- `HttpSearch`: any JSON search API configured by URL (SearxNG's `?q=...&format=json` by default;
  the result list path and snippet field are options, so Brave/Serper-style APIs fit too).

`SearchTool` turns hits into MOSS snippets (`ToolResult.snippets`, numbered `<|1|>`, `<|2|>`, ...
when rendered): the passage of each document that best matches the query, at most `max_chars`
characters, cut at a sentence or word boundary and ended with ` ...` when shortened. As in MOSS's
own data, a snippet is stored and rendered as the Python repr of that passage
(`<|1|>: 'line one\\nline two'`, `datagen.formats.commands.snippet_text`): one line per snippet, so
a generated Search turn renders and parses back unchanged. `SearchHit.snippet` keeps the plain text.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from datagen.errors import ConfigError, InputError
from datagen.formats.commands import snippet_text
from datagen.record import ToolResult
from datagen.text.script import HAN_BMP, HANGUL_SYLLABLES, KANA_BASIC
from datagen.tools.base import Bounds, SettingsSchema, Tool, constructor_settings, register_tool
from datagen.tools.http import env_headers, get_path, request_json, request_time_limit

DEFAULT_DOCS = Path(__file__).parent / "data" / "search_docs.jsonl"

_CJK = KANA_BASIC + HAN_BMP + HANGUL_SYLLABLES
_TOKEN_RE = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_CJK_RE = re.compile(rf"[{_CJK}]")
_SENTENCE_RE = re.compile(r"[^。！？!?；;\n.]+(?:[。！？!?；;\n]+|\.(?=\s|$)|$)")
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how i in is it its me of on or "
    "that the their there this to was were what when where which who whom why will with you your "
    "的 了 是 在 和 吗 呢 吧 啊 么".split()
)


def tokenize(text: str) -> list[str]:
    """Search tokens: CJK runs -> characters and character bigrams; other scripts -> lower-case
    words (stop words dropped, a plural `s` stripped). `"北京的人口 population"` ->
    `['北', '京', '人', '口', '北京', '京的', '的人', '人口', 'population']`."""
    out: list[str] = []
    for run in _TOKEN_RE.findall(text.lower()):
        if _CJK_RE.match(run):
            out.extend(ch for ch in run if ch not in _STOPWORDS)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in _STOPWORDS:
            if len(run) > 3 and run.endswith("s") and not run.endswith("ss"):
                run = run[:-1]
            out.append(run)
    return out


@dataclass(slots=True)
class SearchHit:
    """One search result: the snippet shown to the model, plus where it came from."""

    snippet: str
    title: str = ""
    url: str = ""
    score: float = 0.0


@runtime_checkable
class SearchBackend(Protocol):
    """Anything with `search(query, k)` returning ranked SearchHits (best first)."""

    def search(self, query: str, k: int) -> list[SearchHit]: ...


def best_passage(text: str, query: str, max_chars: int = 400) -> str:
    """The run of consecutive sentences of `text`, at most `max_chars` long, that covers the most
    distinct query tokens (on ties: one that starts with a matching sentence, then the earliest). A single sentence longer than `max_chars` is cut at a
    word boundary; a passage that leaves text out after it ends with ` ...`."""
    text = re.sub(r"[ \t]+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    sentences = [s for s in _SENTENCE_RE.findall(text) if s.strip()] or [text]
    q = set(tokenize(query))
    sent_tokens = [q.intersection(tokenize(s)) for s in sentences]
    best = (-1, False, 0, 1)  # (covered, starts on a match, start, end)
    for start in range(len(sentences)):
        covered: set[str] = set()
        length, end = 0, start
        while end < len(sentences) and (end == start or length + len(sentences[end]) <= max_chars):
            covered |= sent_tokens[end]
            length += len(sentences[end])
            end += 1
        if (len(covered), bool(sent_tokens[start])) > best[:2]:
            best = (len(covered), bool(sent_tokens[start]), start, end)
    _, _, start, end = best
    out = "".join(sentences[start:end]).strip()
    if len(out) > max_chars:  # one long sentence
        out = out[:max_chars]
        cut = out.rfind(" ")
        if cut > max_chars // 2:
            out = out[:cut]
        out = out.rstrip()
        return out + " ..."
    if end < len(sentences):
        out += " ..."
    return out


def load_documents(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    title_field: str = "title",
    text_field: str = "text",
    url_field: str = "url",
) -> list[dict[str, str]]:
    """Read documents from JSONL (`.jsonl`/`.json` lines) or Parquet files, or folders of them.

    Each row needs a non-empty text field; InputError names the file, line and field otherwise.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".jsonl", ".parquet")))
        elif p.exists():
            files.append(p)
        else:
            raise InputError("document collection not found", path=str(p))
    docs: list[dict[str, str]] = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows: Iterable[tuple[int, Any]] = enumerate(pq.read_table(f).to_pylist(), start=1)
        else:
            from datagen.io import iter_json_lines

            rows = iter_json_lines(f)
        for line, row in rows:
            if not isinstance(row, Mapping):
                raise InputError("a document must be a JSON object", path=str(f), line=line)
            text = row.get(text_field)
            if not isinstance(text, str) or not text.strip():
                raise InputError("missing or empty text", path=str(f), line=line, field=text_field)
            docs.append(
                {"title": str(row.get(title_field) or ""), "text": text, "url": str(row.get(url_field) or "")}
            )
    if not docs:
        raise InputError("no documents in the collection", path=", ".join(map(str, paths)))
    return docs


class LocalSearch:
    """BM25 over a local document collection (see module docstring).

    Args:
        docs: JSONL/Parquet file(s) or folder(s); default: the shipped demo collection.
        title_field, text_field, url_field: field names in the documents.
        max_chars: snippet length.
        min_score: hits scoring at or below this BM25 score are dropped.
        min_relative_score: hits scoring below this fraction of the best hit's score are dropped,
            so a precise query returns one good snippet rather than three weak ones.
    """

    bounds: ClassVar[dict[str, Bounds]] = {
        "max_chars": Bounds(low=20),
        "min_relative_score": Bounds(low=0, high=1),
    }

    def __init__(
        self,
        docs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        *,
        title_field: str = "title",
        text_field: str = "text",
        url_field: str = "url",
        max_chars: int = 400,
        min_score: float = 0.0,
        min_relative_score: float = 0.3,
    ):
        import bm25s

        self.docs = load_documents(
            docs if docs is not None else DEFAULT_DOCS,
            title_field=title_field,
            text_field=text_field,
            url_field=url_field,
        )
        self.max_chars = max_chars
        self.min_score = min_score
        self.min_relative_score = min_relative_score
        self._index = bm25s.BM25()
        # the title counts twice: it names what the document is about
        corpus = [tokenize(f"{d['title']} {d['title']} {d['text']}") or ["<empty>"] for d in self.docs]
        self._index.index(corpus, show_progress=False)
        self._lock = threading.Lock()

    def search(self, query: str, k: int = 3) -> list[SearchHit]:
        tokens = tokenize(query)
        # A hit must share a word or a CJK bigram with the query: single Han characters alone
        # (铁 in 铁路 for 埃菲尔铁塔) match too much to count as relevant.
        strong = [t for t in tokens if len(t) > 1 or not _CJK_RE.match(t)]
        if not strong:
            return []
        # A Han run yields about two tokens per character (unigram + bigram); counting Latin words
        # twice keeps `Python 创始人` from being decided by the Chinese half alone.
        weighted = tokens + [t for t in tokens if not _CJK_RE.match(t)]
        with self._lock:  # bm25s keeps per-call state
            scores = self._index.get_scores(weighted)
            strong_scores = self._index.get_scores(strong)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        hits: list[SearchHit] = []
        top = None
        for i in order:
            s = float(scores[i])
            if len(hits) >= k or s <= self.min_score or math.isnan(s):
                break
            if float(strong_scores[i]) <= 0:
                continue
            if top is None:
                top = s
            elif s < self.min_relative_score * top:
                break
            d = self.docs[i]
            hits.append(
                SearchHit(
                    snippet=best_passage(d["text"], query, self.max_chars),
                    title=d["title"],
                    url=d["url"],
                    score=s,
                )
            )
        return hits


@dataclass(slots=True)
class HttpSearch:
    """A JSON search API configured by URL.

    Args:
        url: endpoint, e.g. `http://localhost:8888/search` (SearxNG).
        query_param: name of the query parameter (`q`).
        params: fixed extra parameters (`{"format": "json"}` by default, for SearxNG).
        method: `GET` (query in the URL) or `POST` (parameters as a JSON body).
        headers_env: headers read from environment variables, e.g.
            `{"X-Subscription-Token": "BRAVE_API_KEY"}` or `{"Authorization": "Bearer $KEY"}`.
        results_path: dotted path of the result list in the response (`results`; Brave:
            `web.results`; Serper: `organic`).
        snippet_field, title_field, url_field: fields of one result (`content`, `title`, `url`).
        timeout, retries: per request.
        max_chars: snippets longer than this are cut.
    """

    bounds: ClassVar[dict[str, Bounds]] = {
        "timeout": Bounds(above=0, high=3600),
        "retries": Bounds(low=0, high=10),
        "max_chars": Bounds(low=20),
        "method": Bounds(choices=("GET", "POST", "get", "post")),
    }

    url: str
    query_param: str = "q"
    params: dict[str, Any] = field(default_factory=lambda: {"format": "json"})
    method: str = "GET"
    headers_env: dict[str, str] = field(default_factory=dict)
    results_path: str = "results"
    snippet_field: str = "content"
    title_field: str = "title"
    url_field: str = "url"
    timeout: float = 20.0
    retries: int = 2
    max_chars: int = 400

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"search url must start with http:// or https://, got {self.url!r}", field="url"
            )
        self.method = self.method.upper()
        if self.method not in ("GET", "POST"):
            raise ConfigError(f"method must be GET or POST, got {self.method!r}", field="method")
        env_headers(self.headers_env)  # fail at startup, not on the first call

    def search(self, query: str, k: int = 3) -> list[SearchHit]:
        params = {**self.params, self.query_param: query}
        kwargs: dict[str, Any] = {"params": params} if self.method == "GET" else {"body": params}
        data = request_json(
            self.url,
            method=self.method,
            headers=env_headers(self.headers_env),
            timeout=self.timeout,
            retries=self.retries,
            **kwargs,
        )
        results = get_path(data, self.results_path)
        if results is None:
            results = []
        if not isinstance(results, list):
            from datagen.tools.base import ToolUnavailableError

            raise ToolUnavailableError(f"search response has no list at {self.results_path!r}")
        hits = []
        for r in results:
            if not isinstance(r, Mapping):
                continue
            text = r.get(self.snippet_field)
            if not isinstance(text, str) or not text.strip():
                continue
            text = re.sub(r"\s+", " ", text).strip()
            if len(text) > self.max_chars:
                text = text[: self.max_chars].rsplit(" ", 1)[0] + " ..."
            hits.append(
                SearchHit(
                    snippet=text,
                    title=str(r.get(self.title_field) or ""),
                    url=str(r.get(self.url_field) or ""),
                )
            )
            if len(hits) >= k:
                break
        return hits


@register_tool
class SearchTool(Tool):
    """The `search` plugin: `Search("埃菲尔铁塔 高度")` -> up to `top_k` snippets.

    Args:
        backend: `"local"` (default), `"http"`, a `SearchBackend` instance, or a dotted path
            `pkg.module:Class` of a backend class built with `backend_options`.
        top_k: snippets per query (MOSS shows 1 to 3).
        **backend_options: passed to the backend (`docs=...` for local, `url=...` for http).
    """

    name: ClassVar[str] = "Search"
    plugin: ClassVar[str] = "search"
    bounds: ClassVar[dict[str, Bounds]] = {
        "top_k": Bounds(low=1, high=20),
        "concurrency": Bounds(low=1, high=64),
    }

    @classmethod
    def settings(cls, options: Mapping[str, Any]) -> SettingsSchema:
        """Search's own options plus those of the backend that `options["backend"]` names."""
        schema = constructor_settings(cls, cls.bounds)
        schema.open = False
        backend = options.get("backend", "local")
        if not isinstance(backend, str):
            return schema  # an instance takes no options
        if backend in ("local", "http"):
            backend_cls: Any = LocalSearch if backend == "local" else HttpSearch
        elif ":" in backend:
            import importlib

            module, _, attr = backend.partition(":")
            try:
                backend_cls = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"cannot load search backend {backend!r}: {exc}", field="backend") from None
            if not isinstance(backend_cls, type):
                return SettingsSchema(schema.settings, open=True)
        else:
            raise ConfigError(
                f"unknown search backend {backend!r} (local, http or pkg.module:Class)", field="backend"
            )
        extra = constructor_settings(backend_cls, getattr(backend_cls, "bounds", None))
        return SettingsSchema({**extra.settings, **schema.settings}, open=extra.open)

    def __init__(
        self,
        *,
        backend: str | SearchBackend = "local",
        top_k: int = 3,
        concurrency: int | None = None,
        **backend_options: Any,
    ):
        if top_k < 1:
            raise ConfigError("top_k must be at least 1", field="top_k")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigError(
                f"concurrency must be a positive integer, got {concurrency!r}", field="concurrency"
            )
        self.top_k = top_k
        # An HTTP API answers many queries at once; the local index is CPU-bound in this process.
        self.concurrency = concurrency or (8 if backend == "http" else 1)
        if isinstance(backend, str):
            if backend == "local":
                self.backend: SearchBackend = LocalSearch(**backend_options)
            elif backend == "http":
                self.backend = HttpSearch(**backend_options)
            elif ":" in backend:
                import importlib

                module, _, attr = backend.partition(":")
                self.backend = getattr(importlib.import_module(module), attr)(**backend_options)
            else:
                raise ConfigError(
                    f"unknown search backend {backend!r} (local, http or pkg.module:Class)", field="backend"
                )
        else:
            if backend_options:
                raise ConfigError("backend options given with a backend instance", field="backend")
            self.backend = backend
        if not isinstance(self.backend, SearchBackend):
            raise ConfigError("the search backend has no search(query, k) method", field="backend")
        if isinstance(self.backend, HttpSearch):
            self.time_limit = request_time_limit(self.backend.timeout, self.backend.retries)
        else:  # a user's backend may state its own
            self.time_limit = getattr(self.backend, "time_limit", None) or Tool.time_limit

    def run(self, arg: str) -> ToolResult:
        query = arg.strip()
        if not query:
            return self.no_result(arg)
        hits = [h for h in self.backend.search(query, self.top_k) if h.snippet.strip()]
        if not hits:
            return self.no_result(arg)
        # MOSS writes each snippet as the repr of the page text (quoted, newlines escaped).
        return self.ok(arg, snippets=[snippet_text(h.snippet.strip()) for h in hits])

    def hits(self, query: str) -> list[SearchHit]:
        """The backend's hits with titles, URLs and scores (for citations or debugging); their
        `snippet` is the plain text, which `run` quotes as MOSS does."""
        return self.backend.search(query, self.top_k)


def write_documents(path: str | os.PathLike, docs: Iterable[Mapping[str, str]]) -> int:
    """Write a document collection as JSONL (helper for users building their own)."""
    from datagen.io import write_jsonl_atomic

    return write_jsonl_atomic(path, (dict(d) for d in docs))


__all__ = [
    "HttpSearch",
    "LocalSearch",
    "SearchBackend",
    "SearchHit",
    "SearchTool",
    "best_passage",
    "load_documents",
    "tokenize",
    "write_documents",
]
