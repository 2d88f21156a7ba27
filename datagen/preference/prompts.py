"""The chat messages of the preference stage's calls: contrastive answers, the local model behind a
server, and the pairwise judge. Pure functions of the dialogue state, like `generate.prompts`, so
a rerun asks what the journal already answered.

The judge and contrastive prompts are template files (`templates/judge.vN.md`,
`templates/contrastive.vN.md`, the format of `datagen.generate.templates`); a `templates_dir` of
the user's wins over them, and the newest version is used unless one is pinned.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError
from datagen.formats.commands import render_commands
from datagen.generate.common import language_name
from datagen.generate.prompts import history, meta_instruction, results_text, transcript
from datagen.generate.templates import Template, parse_template
from datagen.record import Conversation, Turn

#: Shipped templates of this stage.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.md$")


def load_template(name: str, version: int | None = None, directory: str | Path | None = None) -> Template:
    """`NAME.vN.md` from `directory` (when given and it has one), else the shipped folder; the
    highest version unless `version` pins one."""
    return _load(name, version, str(directory) if directory is not None else None)


@functools.lru_cache(maxsize=64)
def _load(name: str, version: int | None, directory: str | None) -> Template:
    folders = [Path(directory)] if directory is not None else []
    for folder in [*folders, TEMPLATES_DIR]:
        if not folder.is_dir():
            raise ConfigError("templates folder not found", path=str(folder))
        found = [
            (int(m.group("version")), p)
            for p in folder.glob(f"{name}.v*.md")
            if (m := _FILE.match(p.name))
            and m.group("name") == name
            and (version is None or int(m.group("version")) == version)
        ]
        if found:
            v, path = max(found)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError("template is not UTF-8", path=str(path)) from None
            return parse_template(text, name=name, version=v, path=str(path))
    pinned = f" version {version}" if version is not None else ""
    raise ConfigError(f"no template {name!r}{pinned} in {directory or TEMPLATES_DIR}")


def head_of(conv: Conversation, index: int) -> Conversation:
    """A copy of `conv` holding only the turns before `index` (the state an answer is written in)."""
    head = Conversation.from_dict(conv.to_dict())
    head.turns = head.turns[:index]
    return head


def tool_use(turn: Turn) -> str:
    """A turn's inner thoughts, commands and results as the judge reads them."""
    return (
        f"Inner thoughts: {turn.thoughts or 'None'}\nCommands: {render_commands(list(turn.calls))}\n"
        f"Results:\n{results_text(turn.results)}"
    )


def contrastive_messages(t: Template, head: Conversation, turn: Turn, kind: str) -> list[dict[str, Any]]:
    """A contrastive answer (`failed_as_success`, `ignore_results`) to `turn` after `head`."""
    lang = language_name(head.language)
    system = t.render("system", meta_instruction=meta_instruction(head).rstrip("\n"), language_name=lang)
    user = t.render(
        kind,
        question=turn.human,
        commands=render_commands(list(turn.calls)),
        results=results_text(turn.results),
        language_name=lang,
    )
    return [{"role": "system", "content": system}, *history(head.turns), {"role": "user", "content": user}]


def server_messages(head: Conversation, turn: Turn) -> list[dict[str, Any]]:
    """The dialogue as plain chat messages for a model behind a server: MOSS's meta instruction,
    the earlier turns, the user's message and, on a turn that ran tools, their results appended
    to it (plain text, so any OpenAI-compatible server takes it)."""
    user = turn.human
    if turn.calls:
        user += f"\n\n<|Results|>:\n{results_text(turn.results)}"
    return [
        {"role": "system", "content": meta_instruction(head).rstrip("\n")},
        *history(head.turns),
        {"role": "user", "content": user},
    ]


def shown_answer(t: Template, turn: Turn, own_tools: bool) -> str:
    """One answer as the judge sees it: the text, or with `own_tools` its commands and results too."""
    if not own_tools:
        return turn.assistant
    return t.render(
        "candidate_tools",
        commands=render_commands(list(turn.calls)),
        results=results_text(turn.results),
        answer=turn.assistant,
    )


def judge_messages(t: Template, head: Conversation, a: Turn, b: Turn) -> list[dict[str, Any]]:
    """The judge call comparing answer `a` (shown first) with `b`. When both ran the same commands
    with the same results the tool use is shown once; otherwise each answer carries its own."""
    shared = same_tool_use(a, b)
    tools = t.render("tools", tool_use=tool_use(a)) + "\n" if shared and a.calls else ""
    user = t.render(
        "user",
        meta_instruction=meta_instruction(head).rstrip("\n"),
        context=transcript(head.turns) or "(this is the first message)",
        question=a.human,
        tools=tools,
        answer_a=shown_answer(t, a, not shared),
        answer_b=shown_answer(t, b, not shared),
    )
    return [{"role": "system", "content": t.render("system")}, {"role": "user", "content": user}]


def same_tool_use(a: Turn, b: Turn) -> bool:
    """True when two candidate turns differ only in their answer."""
    return (
        a.thoughts == b.thoughts
        and [c.to_dict() for c in a.calls] == [c.to_dict() for c in b.calls]
        and [r.to_dict() for r in a.results] == [r.to_dict() for r in b.results]
    )
