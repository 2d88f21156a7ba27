"""The review web app: Starlette routes rendering Jinja2 templates (autoescaped: row content is
always text), static files from this package, nothing from a CDN.

    GET  /              the funnel and score plots; each step and reason links to its rows
    GET  /rows          the table of rows with filters and full-text search
    GET  /row/{rid}     one row: the dialogue, its teacher calls, lineage and decisions
    POST /row/{rid}     record a decision (accept, reject with a reason, edit an answer)
    GET  /next          the next unreviewed row of a cell (or any filter)
    GET  /pairs         preference pairs side by side

Writes are guarded: a POST must carry the page's token and, when the browser sends one, an
Origin of this server, so another web page cannot post decisions through the reviewer's browser;
the Host header must name this server (no DNS rebinding).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from datagen.errors import DatagenError
from datagen.formats.meta import meta_instruction_for
from datagen.record import Conversation
from datagen.review.apply import DecisionBook, ReviewStats, iter_apply, review_mark
from datagen.review.decisions import REJECT_REASONS, Decision, append_decision
from datagen.review.index import PAGE_SIZE, Filters, IndexedRow, RunIndex
from datagen.review.plots import LABEL_W, PLOT_W, funnel_panels, histogram
from datagen.versions import now

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1"]


@dataclass(slots=True)
class ReviewConfig:
    """What the app serves and who decides."""

    run_dir: Path
    reviewer: str
    allowed_hosts: list[str]


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("datagen.review", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True)
    env.filters["compact"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
    env.filters["add1"] = lambda v: v + 1
    env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}" if isinstance(v, float) else str(v)
    env.globals["query"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v not in ("", None)})
    return env


def create_app(config: ReviewConfig) -> Starlette:
    """The app for one run directory (its index is built or refreshed before the first page)."""
    index = RunIndex(config.run_dir).open()
    templates = Jinja2Templates(env=_env())
    token = secrets.token_urlsafe(24)

    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("counts", None)
        ctx.update(
            run=_run_name(config.run_dir),
            token=token,
            reviewer=config.reviewer,
            counts=index.review_counts() if ctx["counts"] is None else ctx["counts"],
        )
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def problem(request: Request, message: str, status_code: int = 400) -> Response:
        return render(request, "error.html", status_code=status_code, message=message, counts={})

    async def funnel(request: Request) -> Response:
        index.refresh()
        steps = _funnel_steps(config.run_dir)
        listed = {(s, r): n for s, r, n in index.facets()["stage"]}
        report = _json(config.run_dir / "checked" / "report.json") or {}
        hist = histogram(index.facets().get("loss_bins"), cutoff=report.get("cutoff"))
        return render(
            request,
            "funnel.html",
            steps=steps,
            panels=funnel_panels(steps),
            listed=listed,
            hist=hist,
            label_w=LABEL_W,
            plot_w=PLOT_W,
            facets=index.facets(),
        )

    async def rows(request: Request) -> Response:
        index.refresh()
        filters = Filters.from_query(request.query_params)
        page = max(1, _int(request.query_params.get("page"), 1))
        found, total = index.page(filters, offset=(page - 1) * PAGE_SIZE)
        return render(
            request,
            "rows.html",
            rows=found,
            total=total,
            page=page,
            pages=max(1, -(-total // PAGE_SIZE)),
            filters=filters,
            fq=filters.to_query(),
            facets=index.facets(),
            progress=index.cell_progress(filters),
        )

    async def row(request: Request) -> Response:
        index.refresh()
        found = index.row(request.path_params["rid"])
        if found is None:
            return problem(request, "No such row (the run may have changed: go back to the table).", 404)
        return render(request, "row.html", **_row_context(index, found))

    async def decide(request: Request) -> Response:
        form = {
            k: v[-1]
            for k, v in parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True).items()
        }
        if not secrets.compare_digest(form.get("token", ""), token) or not _same_origin(request):
            return problem(
                request, "This form did not come from this review page: reload it and try again.", 403
            )
        index.refresh()
        found = index.row(request.path_params["rid"])
        if found is None or found.status == "failed" or found.kind == "prompt":
            return problem(request, "Only dialogues take decisions.", 404 if found is None else 400)
        if form.get("hash") != found.hash:
            return problem(
                request,
                "This row changed since the page was opened (the run was redone): "
                "reload it and decide again.",
                409,
            )
        try:
            decision = _decision(form, found, config.reviewer)
        except ValueError as exc:
            return problem(request, str(exc))
        append_decision(index.decisions_path, decision)
        index.sync_decisions()
        if form.get("then") == "next":
            return RedirectResponse(f"/next?{urlencode({**found.cell, 'after': found.rid})}", status_code=303)
        return RedirectResponse(f"/row/{found.rid}", status_code=303)

    async def next_row(request: Request) -> Response:
        index.refresh()
        filters = Filters.from_query(request.query_params)
        after = index.row(_int(request.query_params.get("after"), 0))
        rid = index.next_unreviewed(filters, after)
        if rid is None:
            return render(request, "done.html", fq=filters.to_query(), progress=index.cell_progress(filters))
        return RedirectResponse(f"/row/{rid}", status_code=303)

    async def pairs(request: Request) -> Response:
        index.refresh()
        return render(
            request,
            "pairs.html",
            applied=_read_pairs(config.run_dir / "review" / "pairs.jsonl"),
            pending=_pending_pairs(index),
        )

    routes = [
        Route("/", funnel),
        Route("/rows", rows),
        Route("/row/{rid:int}", row, methods=["GET"]),
        Route("/row/{rid:int}", decide, methods=["POST"]),
        Route("/next", next_row),
        Route("/pairs", pairs),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def bad_input(request: Request, exc: Exception) -> Response:
        # A run file that became unreadable (a bad line in review.jsonl or a stage output): say
        # which, like the CLI does, instead of a bare 500.
        return problem(request, f"Error: {exc}", 500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        index.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts)],
        lifespan=lifespan,
        exception_handlers={DatagenError: bad_input},
    )
    app.state.index = index
    return app


def _run_name(run_dir: Path) -> str:
    manifest = _json(run_dir / "manifest.json") or {}
    return str(manifest.get("name") or run_dir.name)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _funnel_steps(run_dir: Path) -> list[dict[str, Any]]:
    for rel in ("funnel.json", "checked/funnel.json", "filtered/funnel.json"):
        data = _json(run_dir / rel)
        if isinstance(data, dict) and data.get("steps"):
            return list(data["steps"])
    return []


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def _decision(form: dict[str, str], row: IndexedRow, who: str) -> Decision:
    kind = form.get("decision", "")
    reason = form.get("reason") or None
    note = (form.get("note") or "").strip() or None
    if kind == "reject" and reason not in REJECT_REASONS:
        raise ValueError("Pick a reason to reject this row.")
    if kind == "edit":
        turn = _int(form.get("turn"), -1)
        turns = (row.obj or {}).get("turns") or []
        if not 0 <= turn < len(turns):
            raise ValueError("That turn is not in this dialogue.")
        text = (form.get("text") or "").replace("\r\n", "\n").strip()
        if not text:
            raise ValueError("An edited answer cannot be empty.")
        if text == turns[turn].get("assistant", ""):
            raise ValueError("The edited answer is the same as the original.")
        return Decision(
            id=row.id, hash=row.hash, decision="edit", who=who, when=now(), turn=turn, text=text, note=note
        )
    return Decision(
        id=row.id,
        hash=row.hash,
        decision=kind,
        who=who,
        when=now(),
        reason=reason if kind == "reject" else None,
        note=note,
    )


def _row_context(index: RunIndex, row: IndexedRow) -> dict[str, Any]:
    obj = row.obj or {}
    conv = Conversation.from_dict(obj) if row.kind != "prompt" and row.status != "failed" else None
    decisions = index.decisions_for(row.id)
    edits: dict[int, Decision] = {}
    for d in decisions:
        if d.decision == "edit" and d.hash == row.hash:
            edits[d.turn] = d
    cell = Filters.from_query(row.cell)
    duplicate = (row.evidence or {}).get("duplicate_of") if isinstance(row.evidence, dict) else None
    return {
        "row": row,
        "conv": conv,
        "obj": obj,
        "meta": meta_instruction_for(conv) if conv is not None else None,
        "mark": review_mark(conv) if conv is not None else None,
        "decisions": decisions,
        "edits": edits,
        "reasons": REJECT_REASONS,
        "calls": index.calls(row.id),
        "cell": row.cell,
        "progress": index.cell_progress(cell),
        "duplicate": (duplicate, (index.rids_of(str(duplicate)) or [None])[0]) if duplicate else None,
        "others": [r for r in index.rids_of(row.id) if r != row.rid],
    }


def _read_pairs(path: Path) -> list[dict[str, Any]]:
    from datagen.io import iter_json_lines

    if not path.exists():
        return []
    return [obj for _, obj in iter_json_lines(path)]


def _pending_pairs(index: RunIndex) -> list[dict[str, Any]]:
    """The pairs the next run will make from the edits recorded so far."""
    book = DecisionBook.load(index.decisions_path)
    stats = ReviewStats()
    for row_id, decisions in book.by_id.items():
        if not any(d.decision == "edit" for d in decisions):
            continue
        for rid in index.rids_of(row_id):
            found = index.row(rid)
            if found is not None and found.kind != "prompt" and found.status != "failed":
                try:
                    conv = Conversation.from_dict(found.obj or {})
                except (KeyError, TypeError, ValueError) as exc:
                    raise DatagenError(f"{found.source}:{found.line}: {exc}") from None
                if not review_mark(conv):  # an applied edit's pair is in review/pairs.jsonl already
                    list(iter_apply(book, [conv], stats))
                break
    return stats.pairs
