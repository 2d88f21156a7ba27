"""Parsers for what a teacher writes: numbered prompt batches, chat replies, tool plans.

Pure functions over strings, kept apart from prompt building so that a better parser can be rerun
over journaled responses without paying for them again. Small teacher models write messy output, so
every parser is tolerant and says why when it gives up (a reason string, never an empty result
passed off as success).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from datagen.record import COMMAND_PLUGINS, ToolCall

# --------------------------------------------------------------------------- numbered lists

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}


def chinese_numeral(text: str) -> int | None:
    """`一` -> 1, `十二` -> 12, `二十` -> 20, `九十九` -> 99; None for anything else."""
    if not text or any(c not in _CN_DIGITS and c != "十" for c in text):
        return None
    if "十" not in text:
        return _CN_DIGITS[text] if len(text) == 1 else None
    tens, _, ones = text.partition("十")
    if "十" in ones or len(tens) > 1 or len(ones) > 1:
        return None
    t = _CN_DIGITS[tens] if tens else 1
    o = _CN_DIGITS[ones] if ones else 0
    return t * 10 + o


_NUM = r"(?:\d{1,3}|[一二三四五六七八九十]{1,3})"
# A list marker at the start of a line, after optional markdown emphasis / heading noise:
#   1.  1)  1、  1．  1:  (1)  （1）  [1]  #1  第1条  一、  Prompt 1:  **1.**
_MARKER = re.compile(
    r"""^\s*(?:[#>*_]+\s*)*                # markdown noise before the number
    (?:(?:prompt|message|question|instruction|task|example|指令|问题|任务)\s*)?
    (?:
        [(（\[【]\s*(?P<n1>"""
    + _NUM
    + r""")\s*[)）\]】]   # (1) （1） [1] 【1】
      | 第\s*(?P<n2>"""
    + _NUM
    + r""")\s*[条个题项]?\s*[.、:：．]?  # 第1条 第一个
      | \#\s*(?P<n3>\d{1,3})\s*[.:：)]?                     # #1
      | (?P<n4>"""
    + _NUM
    + r""")\s*(?:[.．、:：)）]|\s*-\s)   # 1. 1) 1、 1: 一、
    )
    (?:[*_]+)?                              # closing emphasis (**1.**)
    \s*""",
    re.X | re.I,
)
_BULLET = re.compile(r"^\s*[-*•·]\s+")
_WRAPPERS = [("“", "”"), ('"', '"'), ("「", "」"), ("『", "』"), ("‘", "’"), ("'", "'")]
_LABEL = re.compile(
    r"^(?:\*\*)?(?:prompt|user prompt|user|instruction|message|human|question|"
    r"用户|指令|问题|提示)(?:\*\*)?\s*[:：]\s*",
    re.I,
)


def _marker_number(m: re.Match[str]) -> int | None:
    raw = next(g for g in (m.group("n1"), m.group("n2"), m.group("n3"), m.group("n4")) if g)
    return int(raw) if raw.isdigit() else chinese_numeral(raw)


def clean_item(text: str) -> str:
    """Tidy one list item: strip emphasis, a `Prompt:` label, and matching outer quotes."""
    t = text.strip()
    for _ in range(2):
        t = _LABEL.sub("", t).strip()
        if t.startswith("**") and t.endswith("**") and len(t) > 4:
            t = t[2:-2].strip()
        for a, b in _WRAPPERS:
            if (
                len(t) >= 2
                and t.startswith(a)
                and t.endswith(b)
                and t.count(a) + (t.count(b) if a != b else 0) <= 2
            ):
                t = t[len(a) : -len(b)].strip()
                break
    return t


def parse_numbered_list(text: str, *, truncated: bool = False) -> list[str]:
    """Split a teacher's numbered batch into items.

    Accepts `1.`, `1)`, `(1)`, `1、`, `一、`, `（1）`, `第1条`, `**1.**`, `Prompt 1:` markers; an item
    may run over several lines (code prompts), and a line only starts a new item when its number
    follows the previous one, so a nested `1. 2.` inside an item stays in it. Text before the first
    item (a preamble) is dropped, and so is a trailing paragraph after a blank line (a sign-off).
    When the list carries no numbers at all, `-`/`*` bullets are accepted instead.
    `truncated=True` (the reply hit max_tokens) drops the last item, which may be cut off.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    items: list[list[str]] = []
    expected: int | None = None
    for line in lines:
        m = _MARKER.match(line)
        n = _marker_number(m) if m else None
        starts = (
            m is not None
            and n is not None
            and ((expected is None and n <= 2) or (expected is not None and n == expected))
        )
        if starts:
            items.append([line[m.end() :]])
            expected = n + 1
        elif items:
            items[-1].append(line)
    if not items:
        items = _bulleted(lines)
    out: list[str] = []
    for i, chunk in enumerate(items):
        body = _trim_item(chunk, last=i == len(items) - 1)
        item = clean_item(body)
        if item:
            out.append(item)
    if truncated and out:
        out.pop()
    return out


def _bulleted(lines: list[str]) -> list[list[str]]:
    items: list[list[str]] = []
    for line in lines:
        m = _BULLET.match(line)
        if m:
            items.append([line[m.end() :]])
        elif items:
            items[-1].append(line)
    return items


def _trim_item(chunk: list[str], *, last: bool) -> str:
    # Inside an item blank lines are kept (code, paragraphs); after the last item a blank line
    # followed by text is the model's sign-off ("Hope these help!"), not part of the prompt.
    while chunk and not chunk[-1].strip():
        chunk = chunk[:-1]
    if last:
        for j in range(1, len(chunk)):
            if not chunk[j].strip():
                inside_code = sum(1 for x in chunk[:j] if x.strip().startswith("```")) % 2 == 1
                if not inside_code:
                    chunk = chunk[:j]
                    break
    if not chunk:
        return ""
    rest = textwrap.dedent("\n".join(x.rstrip() for x in chunk[1:]))
    return (chunk[0].strip() + ("\n" + rest if rest else "")).strip()


# --------------------------------------------------------------------------- chat replies

_ROLE_PREFIX = re.compile(
    r"""^\s*(?P<bold>\*\*)?(?:
        <\|(?:MOSS|Human|Assistant|User|Inner\ Thoughts|Commands|Results)\|>
      | (?:MOSS|Assistant)(?:'s|’s)\s+(?:final\s+)?(?:answer|reply|response)(?:\s+to\s+the\s+user)?
      | (?:MOSS|Assistant|AI|Bot|User|Human|Customer|用户|人类|助手|回答|答)
    )(?(bold)(?:\*\*)?)\s*[:：]\s*(?(bold)(?:\*\*)?)\s*""",
    re.X | re.I,
)
_END_TAGS = re.compile(r"<(?:eoh|eot|eoc|eor|eom)>|<\|(?:endoftext|im_end|im_start|eot_id|end)\|>|</s>")
# A reply that runs on into the other side's turn: cut at the first line starting with its tag.
_RUN_ON = {
    "assistant": re.compile(r"\n\s*(?:<\|Human\|>|(?:Human|User|用户)\s*[:：])", re.I),
    "user": re.compile(r"\n\s*(?:<\|MOSS\|>|(?:MOSS|Assistant|AI|助手)\s*[:：])", re.I),
}


_USER_LABEL = re.compile(r"^[ \t]*(?:\*\*)?(?:<\|Human\|>|User|Human|用户)(?:\*\*)?\s*[:：]", re.I | re.M)


def clean_reply(text: str | None, *, role: str = "assistant") -> tuple[str, str | None]:
    """Tidy a chat reply written by a teacher playing `role` (`assistant` or `user`).

    Strips echoed role prefixes (`MOSS:`, `Assistant:`, `<|MOSS|>:`, `User:`...), stray end tags
    (`<eom>`, `<|im_end|>`...) and text running on into the other side's turn; for the user role,
    an echoed transcript before the last user label. Returns
    (text, None) or ("", reason) with reason `empty_reply` (never the engine's `empty`, a completion
    with no choices, which a retry may fix).
    """
    t = (text or "").replace("\r\n", "\n")
    t = _END_TAGS.sub("", t)
    if role == "user":
        # A model that echoes the transcript ("The conversation so far: User: ... MOSS: ... User:
        # <new message>") wrote the new message after the last user label.
        labels = list(_USER_LABEL.finditer(t))
        if labels:
            t = t[labels[-1].start() :]
    cut = _RUN_ON.get(role)
    if cut is not None:
        m = cut.search(t)
        if m:
            t = t[: m.start()]
    for _ in range(3):
        new = _ROLE_PREFIX.sub("", t, count=1)
        if new == t:
            break
        t = new
    t = t.strip()
    if role == "user":
        t = clean_item(t) if "\n" not in t else t
    if not t:
        return "", "empty_reply"
    return t, None


# --------------------------------------------------------------------------- tool plans


@dataclass(slots=True)
class Plan:
    """A parsed first plugin call: MOSS's inner thoughts and the commands to run.

    `dropped` lists commands the teacher wrote that are not allowed (unknown or disabled tool).
    """

    thoughts: str | None
    calls: list[ToolCall] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


_THOUGHTS = re.compile(r"(?:<\|)?(?:Inner\s*Thoughts?|内心想法|想法|思考)(?:\|>)?\s*[:：]", re.I)
_COMMANDS = re.compile(r"(?:<\|)?(?:Commands?|命令|指令)(?:\|>)?\s*[:：]", re.I)
_CALL = re.compile(
    r"""(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*\(\s*
        (?:"(?P<dq>(?:[^"\\]|\\.)*)"|“(?P<cq>[^”]*)”|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<bare>[^()"']*(?:\([^()]*\)[^()"']*)*))
        \s*\)""",
    re.X,
)
_NONE_WORDS = {"none", "null", "n/a", "no", "无", "不需要", "没有"}
_NEXT_LABEL = re.compile(
    r"\n[ \t]*(?:<\|)?(?:Message|User|Human|MOSS|Assistant|Inner\s*Thoughts?|Results?|Note|"
    r"消息|用户|结果)(?:\|>)?\s*[:：]",
    re.I,
)


def strip_bold(text: str) -> str:
    """Drop Markdown bold markers (`**`) from a plan, except inside the calls of MOSS commands,
    where `**` is a power: `**Commands:** Calculate("2**10")` -> `Commands: Calculate("2**10")`."""
    known = {name.lower() for name in COMMAND_PLUGINS}
    out: list[str] = []
    pos = 0
    for m in _CALL.finditer(text):
        if m.group("name").lower() in known:
            out.append(text[pos : m.start()].replace("**", ""))
            out.append(m.group(0))
            pos = m.end()
    out.append(text[pos:].replace("**", ""))
    return "".join(out)


def _plan_text(text: str | None, tags: str) -> str:
    # Code fences become line breaks; end tags become `tags` ("" or a line break).
    t = _END_TAGS.sub(tags, (text or "").replace("\r\n", "\n"))
    return strip_bold(t.replace("```", "\n"))


def parse_calls(text: str, allowed: set[str] | None = None) -> tuple[list[ToolCall], list[str]]:
    """Find `Name("arg")` calls in text (double, curly or single quotes, or a bare argument).

    Names are matched to MOSS's command names case-insensitively (`calculate` -> `Calculate`).
    Returns (calls, dropped) where dropped lists calls of unknown tools or tools not in `allowed`
    (MOSS command names)."""
    known = {name.lower(): name for name in COMMAND_PLUGINS}
    calls: list[ToolCall] = []
    dropped: list[str] = []
    for m in _CALL.finditer(text):
        raw_name = m.group("name")
        name = known.get(raw_name.lower())
        arg = next((g for g in (m.group("dq"), m.group("cq"), m.group("sq")) if g is not None), None)
        if arg is None:
            arg = (m.group("bare") or "").strip()
        else:
            arg = arg.replace('\\"', '"').replace("\\'", "'")
        if name is None:
            if raw_name[0].isupper():  # a word in prose like "sqrt(2)" is not a command
                dropped.append(m.group(0))
            continue
        if allowed is not None and name not in allowed:
            dropped.append(m.group(0))
            continue
        if not arg.strip():
            dropped.append(m.group(0))
            continue
        calls.append(ToolCall(name=name, arg=arg.strip()))
    return calls, dropped


def parse_plan(text: str | None, allowed: set[str] | None = None) -> tuple[Plan | None, str | None]:
    """Parse the reply to the `plugin_commands` template.

    Expects `Inner Thoughts: ...` and `Commands: ...` lines but tolerates MOSS tags
    (`<|Inner Thoughts|>:`), end tags, code fences, bullets, bold labels and a missing thoughts
    label. `Commands: None` (or an empty Commands line) means no tool. Returns (plan, None) or
    (None, reason) with reason `empty_reply` or `no_commands_line`.
    """
    t = _plan_text(text, "")
    if not t.strip():
        return None, "empty_reply"
    tm = _THOUGHTS.search(t)
    cm = _COMMANDS.search(t, tm.end() if tm else 0) or _COMMANDS.search(t)
    if cm is None:
        # No labels: accept a bare list of calls, or a bare "None".
        calls, dropped = parse_calls(t, allowed)
        if calls:
            return Plan(thoughts=None, calls=calls, dropped=dropped), None
        return None, "no_commands_line"
    if tm is not None and tm.start() < cm.start():
        thoughts = t[tm.end() : cm.start()]
    else:
        thoughts = t[: cm.start()]
    thoughts = re.sub(r"^\s*[-*]\s*", "", thoughts.strip()).strip() or None
    if thoughts is not None and thoughts.lower().strip(". ") in _NONE_WORDS:
        thoughts = None
    commands = t[cm.end() :]
    # Commands run to the end of the reply, minus anything after a blank line (commentary) or from
    # a line that starts another labelled part (a model continuing the few-shot pattern).
    commands = re.split(r"\n\s*\n", commands.strip(), maxsplit=1)[0]
    commands = _NEXT_LABEL.split(commands, maxsplit=1)[0]
    calls, dropped = parse_calls(commands, allowed)
    return Plan(thoughts=thoughts, calls=calls, dropped=dropped), None


def commands_complete(text: str | None) -> bool:
    """True when a (possibly cut off) planning reply has a `Commands:` line that ended, i.e. a
    line break follows its content: the reply was cut after the commands, not inside them."""
    t = _plan_text(text, "\n")
    tm = _THOUGHTS.search(t)
    cm = _COMMANDS.search(t, tm.end() if tm else 0) or _COMMANDS.search(t)
    return cm is not None and re.match(r"[ \t]*\S[^\n]*\n", t[cm.end() :]) is not None


def prompt_fragments(*sections: str, min_chars: int = 12) -> list[str]:
    """The literal text of template sections, split at placeholders and line breaks: the pieces
    of the prompt that a reply should never repeat (`Tool results:`, `Your inner thoughts:`).
    Pieces shorter than `min_chars` are left out, so that common words never count."""
    out: list[str] = []
    for body in sections:
        for line in body.splitlines():
            for piece in re.split(r"\$(?:\{\w+\}|[A-Za-z_]\w*)", line.replace("$$", "\0")):
                piece = piece.replace("\0", "$").strip(" -*\t")
                if len(piece) >= min_chars and piece not in out:
                    out.append(piece)
    return out


def echoes_prompt(text: str, fragments: list[str]) -> str | None:
    """The first prompt fragment the reply repeats word for word, or None. Case matters, so that
    "based on the tool results: ..." in prose does not count as echoing the `Tool results:` label."""
    return next((f for f in fragments if f in text), None)


def looks_like_none(text: str) -> bool:
    """True for a `None`-like commands line."""
    return text.strip().strip(".。").lower() in _NONE_WORDS
