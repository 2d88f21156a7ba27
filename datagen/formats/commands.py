"""The grammar inside MOSS's Commands and Results segments.

Commands (the text between `<|Commands|>: ` and `<eoc>`)::

    Search("q1"), Search("q2"), Calculate("6.6%-6.7%")      or      None

Arguments are kept exactly as written between the quotes (MOSS does not escape inner quotes).
Released data has noise such as `Search("a"), None`; it parses to the real calls, and the
renderer writes the canonical form (callers keep the original text in `Turn.raw`).

Results (the whole `<|Results|>...<eor>\\n` segment). One block per call, echoing the call::

    Search("q") =>\\n<|1|>: 'snippet'\\n<|2|>: 'snippet'\\n     (numbering continues across a turn)
    Calculate("24/4") => '6.0'\\n                               (failure: => 'No result.')
    Solve("x+y=5") =>\\nx = 1\\ny = 4\\n                        (failure: =>\\nNo result.\\n)
    <|Results|>: Image generated successfully.<eor>\\n          (a lone Text2Image call)

No results: `<|Results|>: None<eor>\\n` in plain-chat data, `<|Results|>:\\nNone\\n<eor>\\n` in plugin
data (`plugin_style`). Search snippets are stored as written after `<|N|>: ` (MOSS writes the
Python repr of the page text, often cut off mid-string); use `snippet_text` to build one.

Released files also hold segments outside this grammar (numbered command lists with `# comments`,
`None.` followed by prose, Python expressions as arguments, results in another order than the
calls). `salvage_commands` and `salvage_results` recover what they can from any text and never
raise: the reader keeps such a segment verbatim and records why it did not parse
(`Turn.problems`). `match_results` pairs results with their calls by the call each result echoes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from datagen.errors import FormatError
from datagen.formats.issues import Issue
from datagen.record import ToolCall, ToolResult

RESULTS_TAG = "<|Results|>:"
RESULTS_END = "<eor>\n"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CALL_RE = re.compile(rf'({_NAME})\("(.*?)"\)(?=\s*,\s*|\s*$)', re.S)
_SEP_RE = re.compile(r"\s*,\s*")
# `") Name("` inside an argument: two commands without a separator, not one odd argument
_JOINED_RE = re.compile(rf'"\)\s*,?\s*{_NAME}\("')
_NONE_RE = re.compile(r"None(?=\s*,|\s*$)")
_HEADER_RE = re.compile(rf'^({_NAME})\("(.*)"\) =>(?: (.*))?$', re.S)
_SNIPPET_RE = re.compile(r"^<\|(\d+)\|>: ?(.*)$", re.S)
_FAILURE_RE = re.compile(r"^\s*'?\s*no (calculation )?results?\.?\s*'?\s*$", re.I)
# lenient forms: a call is a capitalised name right before `(` (not a method: no `.` or letter before)
_LOOSE_CALL_RE = re.compile(r"(?<![\w.])([A-Z]\w*)\(")
_LOOSE_HEADER_RE = re.compile(rf"^({_NAME})\((.*)\)\s*=>(?: ?(.*))?$", re.S)
_ROLE_TAG_RE = re.compile(r"^<\|(?:Human|Inner Thoughts|Commands|Results|MOSS)\|>:")

#: What MOSS writes when a tool returns nothing.
NO_RESULT = "No result."


def render_call(call: ToolCall) -> str:
    """`Name("arg")`."""
    return f'{call.name}("{call.arg}")'


def render_commands(calls: Sequence[ToolCall]) -> str:
    """The canonical Commands text: calls joined by `, `, or `None`."""
    return ", ".join(render_call(c) for c in calls) if calls else "None"


def parse_commands(text: str, *, issues: list[Issue] | None = None) -> list[ToolCall]:
    """Parse the Commands text into calls.

    Accepts `None`, one or more `Name("arg")` separated by commas, and `None` items mixed with
    calls (dropped). Deviations from `render_commands` output are reported as noise in `issues`.
    Raises FormatError (field `Commands`) when the text is not a command list.
    """
    s = text.strip()
    if s != text and issues is not None:
        issues.append(Issue("surrounding whitespace", "Commands", noise=True))
    if s == "None":
        return []
    if not s:
        raise FormatError("empty; MOSS writes `None` when there is no command", field="Commands")
    calls: list[ToolCall] = []
    nones = 0
    pos = 0
    while True:
        m = _CALL_RE.match(s, pos)
        if m:
            joined = _JOINED_RE.search(m.group(2))
            if joined:
                raise FormatError(
                    f"cannot parse a command at column {pos + len(m.group(1)) + 3 + joined.start()}: "
                    f"{m.group(2)[joined.start() : joined.start() + 40]!r} (missing ', ' between commands?)",
                    field="Commands",
                )
            calls.append(ToolCall(m.group(1), m.group(2)))
        else:
            m = _NONE_RE.match(s, pos)
            if not m:
                raise FormatError(
                    f"cannot parse a command at column {pos + 1}: {s[pos : pos + 40]!r} "
                    f'(expected Name("argument") or None)',
                    field="Commands",
                )
            nones += 1
        pos = m.end()
        if pos == len(s):
            break
        sep = _SEP_RE.match(s, pos)
        if sep is None or sep.end() == len(s):
            raise FormatError(
                f"cannot parse a command at column {pos + 1}: {s[pos : pos + 40]!r}", field="Commands"
            )
        if sep.group() != ", " and issues is not None:
            issues.append(Issue(f"separator {sep.group()!r} instead of ', '", "Commands", noise=True))
        pos = sep.end()
    if nones and issues is not None:
        if calls:
            issues.append(Issue("`None` mixed with commands", "Commands", noise=True))
        else:
            issues.append(Issue("`None` repeated", "Commands", noise=True))
    return calls


def is_failure(text: str) -> bool:
    """True for what MOSS writes when a tool gave nothing (`No result.`, `'No result.'`,
    `No calculation results.`) and for empty output."""
    return not text.strip() or bool(_FAILURE_RE.match(text))


def snippet_text(page_text: str, limit: int | None = None) -> str:
    """A search snippet as MOSS writes it: the Python repr of the text, newlines escaped,
    optionally cut to `limit` characters (MOSS cuts without closing the quote)."""
    s = repr(page_text)
    return s[:limit] if limit is not None and len(s) > limit else s


# -- results -------------------------------------------------------------------------------------


def _render_block(r: ToolResult) -> str:
    head = f'{r.name}("{r.arg}") =>'
    out = r.output if (r.ok or r.output) else NO_RESULT
    if r.name == "Search":
        pre = r.output or ("" if (r.snippets or r.ok) else NO_RESULT)
        body = f"{pre}\n" if pre else ""
        body += "".join(f"<|{r.first_index + j}|>: {s}\n" for j, s in enumerate(r.snippets))
        return f"{head}\n{body}"
    if r.name == "Calculate":
        return f"{head} '{out}'\n"
    if r.name == "Solve" or "\n" in out:
        return f"{head}\n{out}\n" if out else f"{head}\n"
    return f"{head} {out}\n"


def render_results(results: Sequence[ToolResult], plugin_style: bool) -> str:
    """The whole Tool Responses segment (`<|Results|>:...<eor>\\n`) for these results.

    `plugin_style` picks the no-result form: `<|Results|>:\\nNone\\n<eor>\\n` (plugin data) or
    `<|Results|>: None<eor>\\n` (plain chat). A lone Text2Image result is written on the tag's line,
    as MOSS does. A failed result with no output is written as `No result.`.
    """
    if not results:
        return "<|Results|>:\nNone\n<eor>\n" if plugin_style else "<|Results|>: None<eor>\n"
    if len(results) == 1 and results[0].name == "Text2Image" and "\n" not in results[0].output:
        r = results[0]
        return f"{RESULTS_TAG} {r.output if (r.ok or r.output) else NO_RESULT}{RESULTS_END}"
    return RESULTS_TAG + "\n" + "".join(_render_block(r) for r in results) + RESULTS_END


def results_body(segment: str) -> tuple[str, bool]:
    """Split a Results segment into its text and whether it used the block form (newline after
    the tag). Raises FormatError when the tag or `<eor>` is missing."""
    if not segment.startswith(RESULTS_TAG):
        raise FormatError(f"does not start with {RESULTS_TAG!r}: {segment[:30]!r}", field="Tool Responses")
    rest = segment[len(RESULTS_TAG) :]
    if rest.endswith(RESULTS_END):
        rest = rest[: -len(RESULTS_END)]
    elif rest.rstrip().endswith("<eor>"):
        rest = rest.rstrip()[:-5]
    else:
        raise FormatError("missing end tag <eor>", field="Tool Responses")
    if rest.startswith("\n"):
        return rest[1:], True
    return (rest[1:] if rest.startswith(" ") else rest), False


def result_from_block(
    name: str, arg: str, inline: str | None, lines: list[str], issues: list[Issue] | None = None
) -> ToolResult:
    """One result from a block: the text after `=> ` on the header line (`inline`, None when the
    line ends at `=>`) and the lines below it."""
    if name == "Search":
        r = ToolResult(name, arg)
        pre: list[str] = [inline] if inline else []
        numbers: list[int] = []
        for line in lines:
            m = _SNIPPET_RE.match(line)
            if m:
                numbers.append(int(m.group(1)))
                r.snippets.append(m.group(2))
            elif r.snippets:
                r.snippets[-1] += "\n" + line
            else:
                pre.append(line)
        r.output = "\n".join(pre)
        if numbers:
            r.first_index = numbers[0]
            expect = list(range(numbers[0], numbers[0] + len(numbers)))
            if numbers != expect and issues is not None:
                issues.append(
                    Issue(
                        f'snippets of Search("{arg}") are numbered {numbers}, expected {expect}',
                        "Tool Responses",
                    )
                )
        r.ok = bool(r.snippets) and not (r.output and is_failure(r.output))
        return r
    text = "\n".join(([inline] if inline is not None else []) + lines)
    if name == "Calculate" and inline is not None and not lines:
        if len(inline) >= 2 and inline[0] == inline[-1] == "'":
            text = inline[1:-1]
        elif issues is not None:
            issues.append(Issue(f'Calculate("{arg}") result is not quoted', "Tool Responses", noise=True))
    return ToolResult(name, arg, ok=not is_failure(text), output=text)


def parse_results(
    segment: str,
    calls: Sequence[ToolCall] = (),
    *,
    issues: list[Issue] | None = None,
) -> list[ToolResult]:
    """Parse a whole Tool Responses segment (`<|Results|>...<eor>\\n`) into results.

    Block headers are found by echoing `calls` first, then by the generic `Name("arg") =>` shape,
    so results that do not match the calls still parse (`check_turn` in
    `datagen.formats.validate` reports the mismatch). A text without headers is the result of a
    lone call (Text2Image's `Image generated successfully.`). Search snippet numbers that are not
    consecutive within a block are reported in `issues`; other deviations from `render_results`
    are reported as noise. Raises FormatError when the segment has no tag or no `<eor>`.
    """
    body, block_form = results_body(segment)
    if body.strip() == "None":
        return []
    if not body.strip():
        if issues is not None:
            issues.append(Issue("empty results; MOSS writes `None`", "Tool Responses", noise=True))
        return []
    lines = body.split("\n")
    if lines[-1] == "":
        lines.pop()
    elif block_form and issues is not None:
        issues.append(Issue("no newline before <eor>", "Tool Responses", noise=True))
    results: list[ToolResult] = []
    current: tuple[str, str, str | None] | None = None
    cur_lines: list[str] = []
    pre: list[str] = []
    i = 0
    for line in lines:
        head = None
        if i < len(calls):
            echo = render_call(calls[i]) + " =>"
            if line == echo:
                head = (calls[i].name, calls[i].arg, None)
            elif line.startswith(echo + " "):
                head = (calls[i].name, calls[i].arg, line[len(echo) + 1 :])
        if head is None:
            m = _HEADER_RE.match(line)
            if m:
                head = (m.group(1), m.group(2), m.group(3))
        if head is None:
            (cur_lines if current else pre).append(line)
            continue
        if current:
            results.append(result_from_block(*current, cur_lines, issues))
        current, cur_lines = head, []
        i += 1
    if current:
        results.append(result_from_block(*current, cur_lines, issues))
    if pre:
        text = "\n".join(pre)
        if results:
            raise FormatError(f"text before the first result block: {text[:40]!r}", field="Tool Responses")
        call = calls[0] if len(calls) == 1 else ToolCall("", "")
        results.append(ToolResult(call.name, call.arg, ok=not is_failure(text), output=text))
    return results


# -- recovering what a malformed segment says -----------------------------------------------------


def _loose_arg(inner: str) -> str:
    """The argument of `Name(inner)`: the text inside the quotes when `inner` is one quoted string
    (as MOSS writes it, inner quotes unescaped), else `inner` itself (e.g. a Python expression)."""
    s = inner.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


def _close_paren(text: str, start: int, *, quotes: bool) -> int:
    """Index of the `)` closing the `(` just before `start`, or -1. With `quotes`, parentheses
    inside string literals do not count."""
    depth = 1
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif quotes and ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def salvage_commands(text: str) -> list[ToolCall]:
    """Every call that can be recognised in a Commands text outside the grammar, in order: a
    capitalised name followed by `(`, up to its balanced `)` (the end of the line when it has
    none). Numbering, `# comments`, prose and `None` around the calls are skipped; an argument that
    is not one quoted string is kept as written (`"({} - 1)**2".format(14.69)`). Never raises."""
    calls: list[ToolCall] = []
    pos = 0
    while m := _LOOSE_CALL_RE.search(text, pos):
        if m.group(1) == "None":
            pos = m.end()
            continue
        end = _close_paren(text, m.end(), quotes=True)
        if end < 0:
            end = _close_paren(text, m.end(), quotes=False)
        if end < 0:
            nl = text.find("\n", m.end())
            end = len(text) if nl < 0 else nl
            calls.append(ToolCall(m.group(1), _loose_arg(text[m.end() : end].rstrip().removesuffix(")"))))
        else:
            calls.append(ToolCall(m.group(1), _loose_arg(text[m.end() : end])))
        pos = end + 1
        rest = text[pos:].lstrip(" \t")
        if rest.startswith("#"):  # a trailing comment: its words are not calls
            nl = text.find("\n", pos)
            pos = len(text) if nl < 0 else nl
    return calls


def _loose_results_body(segment: str) -> str:
    body = segment
    m = _ROLE_TAG_RE.match(body)
    if m:
        body = body[m.end() :]
    body = body.rstrip("\n")
    for end in ("<eor>", "<eoh>", "<eot>", "<eoc>", "<eom>"):
        if body.endswith(end):
            body = body[: -len(end)]
            break
    return body[1:] if body.startswith(("\n", " ")) else body


def salvage_results(segment: str, calls: Sequence[ToolCall] = ()) -> list[ToolResult]:
    """The results that can be recognised in a Tool Responses segment outside the grammar (or
    answering calls outside it): block headers are `Name(anything) =>` lines, the argument taken as
    `salvage_commands` takes it, so a header matches the call it echoes; text before the first
    header becomes a result of its own (of the lone call when there is exactly one and no header).
    Never raises."""
    body = _loose_results_body(segment)
    if body.strip() in ("None", ""):
        return []
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    results: list[ToolResult] = []
    current: tuple[str, str, str | None] | None = None
    cur_lines: list[str] = []
    pre: list[str] = []
    for line in lines:
        m = _LOOSE_HEADER_RE.match(line)
        if m is None:
            (cur_lines if current else pre).append(line)
            continue
        if current:
            results.append(result_from_block(*current, cur_lines))
        current, cur_lines = (m.group(1), _loose_arg(m.group(2)), m.group(3) or None), []
    if current:
        results.append(result_from_block(*current, cur_lines))
    if pre:
        text = "\n".join(pre)
        call = calls[0] if len(calls) == 1 and not results else ToolCall("", "")
        results.insert(0, ToolResult(call.name, call.arg, ok=not is_failure(text), output=text))
    return results


def match_results(calls: Sequence[ToolCall], results: Sequence[ToolResult]) -> list[int | None]:
    """For each call, the index of its result in `results`, or None when no result answers it.

    A result answers the call it echoes (same name and argument), whatever the order; a result
    echoing no call answers the first unanswered call of the same name; a result without a header
    answers the only call left unanswered. Each result answers at most one call."""
    out: list[int | None] = [None] * len(calls)
    free = list(range(len(results)))
    for rule in (
        lambda c, r: (r.name, r.arg) == (c.name, c.arg),
        lambda c, r: r.name == c.name,
    ):
        for i, call in enumerate(calls):
            if out[i] is None:
                j = next((j for j in free if rule(call, results[j])), None)
                if j is not None:
                    out[i] = j
                    free.remove(j)
    left = [i for i, j in enumerate(out) if j is None]
    unnamed = [j for j in free if not results[j].name]
    if len(left) == 1 and len(unnamed) == 1:
        out[left[0]] = unnamed[0]
    return out
