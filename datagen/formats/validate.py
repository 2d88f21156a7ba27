"""Check conversations against the MOSS 003 format and report every problem.

`check_conversation(conv)` checks a parsed Conversation (types, tags inside texts, commands
against the enabled plugins, results against the calls, Search numbering across a turn, inner
thoughts against the meta instruction). `validate_record(value)` parses one record of any known
format collecting every problem, then runs those checks. `validate_paths` streams files and
folders and reports each problem as a `file:line: turn N: field: reason` line; it backs
`datagen validate`. `format_defect(conv)` is the short verdict `filter` and `check` reject on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from datagen.errors import FormatError
from datagen.formats.commands import match_results, render_call
from datagen.formats.issues import Issue
from datagen.formats.meta import parse_meta_instruction
from datagen.formats.moss import TAG_RE, canonical_segments, parse_turn, sft_to_conversation
from datagen.formats.reader import Location, detect_format, iter_records, to_conversation
from datagen.record import COMMAND_PLUGINS, PLUGIN_COMMANDS, Conversation, ToolCall, ToolResult, Turn


def _type_issues(conv: Conversation) -> list[Issue]:
    """Wrong field types (possible in datagen JSONL written by hand)."""
    out: list[Issue] = []

    def want(ok: bool, what: str, field: str, turn: int | None = None) -> bool:
        if not ok:
            out.append(Issue(f"expected {what}", field, turn))
        return ok

    want(isinstance(conv.id, str) and conv.id != "", "a non-empty string", "id")
    for name in ("category", "language", "meta_instruction"):
        v = getattr(conv, name)
        want(v is None or isinstance(v, str), "a string or null", name)
    if want(all(isinstance(p, str) for p in conv.plugins), "a list of plugin names", "plugins"):
        unknown = [p for p in conv.plugins if p not in PLUGIN_COMMANDS]
        if unknown:
            out.append(Issue(f"unknown plugin(s) {unknown}; known: {list(PLUGIN_COMMANDS)}", "plugins"))
    for n, t in enumerate(conv.turns, start=1):
        if not isinstance(t, Turn):
            out.append(Issue("expected a turn object", None, n))
            continue
        want(isinstance(t.human, str), "a string", "human", n)
        want(isinstance(t.assistant, str), "a string", "assistant", n)
        want(t.thoughts is None or isinstance(t.thoughts, str), "a string or null", "thoughts", n)
        want(
            all(
                isinstance(c, ToolCall) and isinstance(c.name, str) and isinstance(c.arg, str)
                for c in t.calls
            ),
            "calls with string name and arg",
            "calls",
            n,
        )
        want(
            all(
                isinstance(r, ToolResult)
                and isinstance(r.name, str)
                and isinstance(r.arg, str)
                and isinstance(r.output, str)
                and isinstance(r.ok, bool)
                and isinstance(r.first_index, int)
                and all(isinstance(s, str) for s in r.snippets)
                for r in t.results
            ),
            "results with string name, arg, output, snippets",
            "results",
            n,
        )
        for name in ("raw", "problems"):
            v = getattr(t, name)
            want(
                isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                "an object of strings",
                name,
                n,
            )
    return out


def check_turn(turn: Turn, conv: Conversation, n: int | None = None) -> list[Issue]:
    """Problems of one turn: segments that did not parse (`Turn.problems`), empty texts, MOSS tags
    inside texts, commands for plugins that are not enabled, results that do not answer the calls
    (count, names, arguments), Search numbering that does not continue across the turn, thoughts
    where they are disabled. What was recovered from a segment that did not parse is not checked
    further: its parse problem is the one reported."""
    out: list[Issue] = [Issue(reason, key, n, recovered=True) for key, reason in turn.problems.items()]
    bad = turn.problems
    for key, text in (("Human", turn.human), ("Inner Thoughts", turn.thoughts), ("MOSS", turn.assistant)):
        if text is None or key in bad:
            continue
        if key != "Inner Thoughts" and not text.strip():
            out.append(Issue("empty", key, n))
        m = TAG_RE.search(text)
        if m:
            out.append(Issue(f"contains the MOSS tag {m.group()!r} inside the text", key, n))
    if turn.thoughts is not None and not conv.inner_thoughts and "Inner Thoughts" not in bad:
        out.append(
            Issue("has thoughts but the meta instruction disables inner thoughts", "Inner Thoughts", n)
        )
    if "Commands" in bad or "Tool Responses" in bad:
        return out
    for call in turn.calls:
        plugin = COMMAND_PLUGINS.get(call.name)
        if plugin is None:
            out.append(
                Issue(f"unknown command {call.name!r}; MOSS has {', '.join(COMMAND_PLUGINS)}", "Commands", n)
            )
        elif plugin not in conv.plugins:
            out.append(
                Issue(
                    f"{call.name} is used but {plugin} is not enabled in the meta instruction", "Commands", n
                )
            )
    field = "Tool Responses"
    if turn.calls and not turn.results:
        out.append(Issue(f"{len(turn.calls)} command(s) but no results", field, n))
    elif turn.results and not turn.calls:
        out.append(Issue(f"{len(turn.results)} result(s) but no commands", field, n))
    elif len(turn.results) != len(turn.calls):
        out.append(Issue(f"{len(turn.results)} result(s) for {len(turn.calls)} command(s)", field, n))
    for j, (call, res) in enumerate(zip(turn.calls, turn.results, strict=False), start=1):
        if (res.name, res.arg) != (call.name, call.arg):
            out.append(
                Issue(
                    f'result {j} is for {res.name}("{res.arg}") but command {j} is {render_call(call)}',
                    field,
                    n,
                )
            )
    expected = 1
    for res in turn.results:
        if res.name != "Search":
            continue
        if res.snippets and res.first_index != expected:
            out.append(
                Issue(
                    f'snippets of Search("{res.arg}") start at <|{res.first_index}|>, expected '
                    f"<|{expected}|> (numbering continues across the searches of a turn)",
                    field,
                    n,
                )
            )
        expected = (res.first_index if res.snippets else expected) + len(res.snippets)
    return out


#: `format_defect` reason for each segment that did not parse.
MALFORMED_REASONS = {
    "Human": "malformed_human",
    "Inner Thoughts": "malformed_thoughts",
    "Commands": "malformed_commands",
    "Tool Responses": "malformed_results",
    "MOSS": "malformed_answer",
}


def format_defect(conv: Conversation) -> tuple[str, dict[str, Any]] | None:
    """Why `conv` cannot be trained on as MOSS 003, as (reason, evidence), or None; the first
    defect found. Reasons: `malformed_commands`, `malformed_results`, ... (a segment that did not
    parse: see `MALFORMED_REASONS`), `unknown_command` (a command MOSS does not have),
    `missing_result` (a call no result answers, results missing or none at all),
    `unmatched_result` (a result that answers no call), `results_out_of_order`, and
    `result_mismatch` (a result answering a call of the same name with another argument). Cheap
    (no rendering): `datagen filter` and `datagen check` reject on it. Empty texts and tags inside
    texts are the `quality` filter's."""
    for n, turn in enumerate(conv.turns, start=1):
        for key, why in turn.problems.items():
            return MALFORMED_REASONS.get(key, "malformed"), {"turn": n, "segment": key, "problem": why}
        for call in turn.calls:
            if call.name not in COMMAND_PLUGINS:
                return "unknown_command", {"turn": n, "command": render_call(call)[:200]}
        if not turn.calls and not turn.results:
            continue
        pairing = match_results(turn.calls, turn.results)
        missing = [render_call(c)[:200] for c, j in zip(turn.calls, pairing, strict=True) if j is None]
        if missing:
            return "missing_result", {"turn": n, "calls": missing[:5], "results": len(turn.results)}
        extra = sorted(set(range(len(turn.results))) - set(pairing))
        if extra:
            r = turn.results[extra[0]]
            return "unmatched_result", {"turn": n, "result": render_call(ToolCall(r.name, r.arg))[:200]}
        if pairing != sorted(pairing):  # every index is an int here: no call is unanswered
            return "results_out_of_order", {"turn": n, "order": pairing}
        for call, j in zip(turn.calls, pairing, strict=True):
            r = turn.results[j]  # type: ignore[index]
            if r.arg != call.arg:
                return "result_mismatch", {
                    "turn": n,
                    "call": render_call(call)[:200],
                    "result": render_call(ToolCall(r.name, r.arg))[:200],
                }
    return None


def check_conversation(conv: Conversation) -> list[Issue]:
    """Every format problem of a parsed Conversation (empty list when it is valid MOSS 003)."""
    out = _type_issues(conv)
    if out:
        return out
    if not conv.turns:
        out.append(Issue("no turns", "turns"))
    if conv.meta_instruction is not None:
        info = parse_meta_instruction(conv.meta_instruction)
        out.extend(Issue(p, "meta_instruction") for p in info.problems)
        out.extend(Issue(p, "meta_instruction", noise=True) for p in info.notes)
    for n, turn in enumerate(conv.turns, start=1):
        problems = check_turn(turn, conv, n)
        out.extend(problems)
        if not problems and not turn.problems:
            out.extend(_roundtrip_issues(turn, conv, n))
    return out


def _roundtrip_issues(turn: Turn, conv: Conversation, n: int) -> list[Issue]:
    """A turn whose canonical text does not parse back to the same fields (e.g. a thought that is
    the literal text `None`, a Search output that looks like a snippet)."""
    segs = dict(canonical_segments(turn, bool(conv.plugins)))
    try:
        back = parse_turn(segs, plugin_style=bool(conv.plugins))
    except FormatError as exc:
        return [
            Issue(
                f"renders to text that does not parse: {exc.reason}",
                (exc.field or "").split(": ")[-1] or None,
                n,
            )
        ]
    for key, a, b in (
        ("Human", back.human, turn.human),
        ("Inner Thoughts", back.thoughts, turn.thoughts),
        ("Commands", back.calls, turn.calls),
        ("Tool Responses", back.results, turn.results),
        ("MOSS", back.assistant, turn.assistant),
    ):
        if a != b:
            return [Issue("renders to text that parses back differently", key, n)]
    return []


def validate_record(
    value: Any,
    *,
    path: str | None = None,
    line: int | None = None,
    format: str | None = None,
) -> tuple[Conversation | None, list[Issue]]:
    """Parse one record of any known format and check it. Returns the Conversation (None when
    it could not be built) and every issue found, noise included (`Issue.noise`)."""
    fmt = format or detect_format(value)
    if fmt == "moss":
        issues: list[Issue] = []
        conv = sft_to_conversation(value, issues=issues)
        if conv is not None:
            seen = set(issues)
            issues.extend(
                i for i in check_conversation(conv) if i not in seen and i.field != "meta_instruction"
            )
        return conv, issues
    try:
        conv = to_conversation(value, path=path, line=line, format=fmt)
    except FormatError as exc:
        return None, [Issue(exc.reason, exc.field)]
    return conv, check_conversation(conv)


@dataclass(slots=True)
class ValidationSummary:
    """Counts of a validation run. `unreadable_files` counts files (or parts of files) that could
    not be read at all: empty, binary, not UTF-8, truncated documents."""

    conversations: int = 0
    valid: int = 0
    invalid: int = 0
    unreadable_files: int = 0
    problems: int = 0
    noise: int = 0

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.unreadable_files == 0

    def format(self) -> str:
        s = (
            f"{self.conversations} conversation{'s' if self.conversations != 1 else ''}, "
            f"{self.valid} valid, {self.invalid} invalid"
        )
        if self.unreadable_files:
            s += f", {self.unreadable_files} unreadable file{'s' if self.unreadable_files != 1 else ''}"
        if self.noise:
            s += f" ({self.noise} accepted deviation{'s' if self.noise != 1 else ''} from the canonical form; --strict lists them)"
        return s


def format_problem(loc: Location, issue: Issue) -> str:
    """`file:line: turn N: field: reason` (line and turn left out where they do not apply)."""
    return f"{loc}: {issue.format()}"


def validate_paths(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    strict: bool = False,
    format: str | None = None,
    report: Callable[[str], None] = print,
) -> ValidationSummary:
    """Validate every record under `paths`, calling `report` with one line per problem; noise
    (accepted deviations from the canonical rendering) is reported and counts as invalid only when
    `strict`. Never raises on bad input."""
    summary = ValidationSummary()
    for loc, value in iter_records(paths):
        if isinstance(value, FormatError):
            report(format_problem(loc, Issue(value.reason, value.field)))
            summary.problems += 1
            if loc.whole_file:
                summary.unreadable_files += 1
            else:
                summary.conversations += 1
                summary.invalid += 1
            continue
        summary.conversations += 1
        try:
            _, issues = validate_record(value, path=loc.path, line=loc.line, format=format)
        except RecursionError:
            issues = [Issue("nested too deeply")]
        bad = False
        for issue in issues:
            if issue.noise:
                summary.noise += 1
                if not strict:
                    continue
            report(format_problem(loc, issue))
            summary.problems += 1
            bad = True
        if bad:
            summary.invalid += 1
        else:
            summary.valid += 1
    return summary
