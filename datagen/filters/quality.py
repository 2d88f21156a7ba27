"""Quality steps: broken or truncated turns, the assistant speaking as the user, a simulated user
repeating its instructions, repetition loops (`quality`); answers that state results after a failed tool (`tool_failure`); length limits in
characters and tokens (`length`); AI boilerplate and identity leaks (`boilerplate`)."""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from datagen.errors import ConfigError, MissingDependencyError
from datagen.filters.base import BaseFilter, FilterResult
from datagen.filters.registry import register_step
from datagen.record import Conversation, Turn
from datagen.text.tokens import tokenize

# ---------------------------------------------------------------------------------------------------
# quality

#: MOSS end tags and role markers, and other chat templates' special tokens: none may appear inside
#: a message (they would corrupt the rendered training text).
_TAG_RE = re.compile(
    r"<eo[hmtcr]>|<\|(?:Human|MOSS|Inner Thoughts|Commands|Results|Tool Responses)\|>|"
    r"<\|(?:endoftext|im_start|im_end|im_sep|eot_id|start_header_id|end_header_id|begin_of_text)\|>|"
    r"\[/?INST\]|<</?SYS>>",
    re.I,
)
_CITE_RE = re.compile(r"<sup><\|(\d+)\|></sup>")
#: A line where the assistant writes the user's part of the dialogue.
_AS_USER_RE = re.compile(r"(?m)^\s*(?:<\|Human\|>|Human|User|USER|用户|人类|使用者|提问者)\s*[:：]")
#: How an answer cut off mid-generation tends to end.
_TRUNCATED_END_RE = re.compile(
    r"(?:[,，、:：;；(（\[{]|\b(?:and|or|the|a|an|of|to|with|which|that)|\n\s*(?:[-*]|\d+\.))\s*$"
)
#: Phrases of the simulated user's instructions (`hhh_user` template: "Write the user's message
#: number 3 (of about 3). Reply with the message text only.") and of Chinese renderings of them, which
#: a small teacher sometimes writes back as the user's message. Distinctive phrases rather than one
#: literal, so that a paraphrase or another template version is caught too.
_SIMULATOR_RE = re.compile(
    r"\buser'?s (?:next )?message(?: number)? \d+|\bmessage number \d+ \(of about \d+\)|"
    r"\breply with the message text only|\bwrite the user'?s (?:next )?message\b|"
    r"\byou (?:play|are playing) the human user\b|so that the conversation can be used as training data|"
    r"\byour previous attempt was rejected\b|"
    r"用户的?第\s*\d+\s*[条个则]消息|第\s*\d+\s*[条个则](?:用户)?消息\s*[（(]\s*(?:共|总共)?\s*约|"
    r"只(?:回复|输出|写|给出)(?:这条)?消息(?:的)?(?:文本|内容|正文)|扮演(?:一[个名])?人类用户|"
    r"扮演用户[^。\n]{0,30}(?:MOSS|AI\s*助手|人工智能助手)|写(?:出|下)?用户的?下一条消息|"
    r"(?:之前|上一次|上次)的尝试被拒绝",
    re.I,
)
_SENT_SPLIT_RE = re.compile(r"[。！？!?；;\n]+|(?<=[a-z])\.\s+")
_CODE_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)


def _strip_code(text: str) -> str:
    return _CODE_FENCE_RE.sub(" ", text)


def repetition_evidence(
    text: str, *, min_repeats: int = 4, max_dup_frac: float = 0.3, run_tokens: int = 16
) -> dict[str, Any] | None:
    """Evidence of a repetition loop in text (code blocks ignored), or None.

    A loop is any of: one sentence (6+ chars) repeated `min_repeats` times; repeated sentences
    covering more than `max_dup_frac` of the text; a token n-gram (n <= 8) repeating back to back
    over `run_tokens` tokens or more (e.g. `哈哈哈...` or `the end the end the end ...`).
    """
    prose = _strip_code(text)
    sents = [s.strip() for s in _SENT_SPLIT_RE.split(prose) if len(s.strip()) >= 6]
    if sents:
        counts: dict[str, int] = {}
        for s in sents:
            counts[s] = counts.get(s, 0) + 1
        top, n = max(counts.items(), key=lambda kv: kv[1])
        if n >= min_repeats:
            return {"kind": "sentence", "text": top[:80], "times": n}
        dup_chars = sum(len(s) * (c - 1) for s, c in counts.items() if c > 1)
        total = sum(len(s) for s in sents)
        if len(sents) >= 4 and dup_chars / total > max_dup_frac:
            return {"kind": "sentences", "dup_frac": round(dup_chars / total, 3)}
    toks = tokenize(prose)
    if len(toks) >= run_tokens:
        ids = {t: i for i, t in enumerate(set(toks))}
        arr = np.fromiter((ids[t] for t in toks), dtype=np.int32, count=len(toks))
        for n in range(1, 9):
            if len(arr) <= n:
                break
            eq = arr[n:] == arr[:-n]
            # longest run of equal-to-n-back tokens: a period-n loop of that many tokens (+n)
            padded = np.concatenate([[0], eq.astype(np.int8), [0]])
            edges = np.flatnonzero(np.diff(padded))
            if edges.size:
                longest = int((edges[1::2] - edges[::2]).max()) + n
                need = run_tokens if n == 1 else max(run_tokens, 5 * n)
                if longest >= need:
                    start = int(edges[::2][np.argmax(edges[1::2] - edges[::2])])
                    return {
                        "kind": "loop",
                        "period": n,
                        "tokens": longest,
                        "text": " ".join(toks[start : start + min(longest, 12)]),
                    }
    return None


def simulator_leak_evidence(message: str) -> str | None:
    """The phrase of the user simulator's instructions that a user message repeats, or None."""
    m = _SIMULATOR_RE.search(message)
    return m.group(0) if m else None


def truncation_evidence(answer: str) -> str | None:
    """Why an answer looks cut off (`unclosed_code_block`, `dangling_end`), or None."""
    if answer.count("```") % 2:
        return "unclosed_code_block"
    if _TRUNCATED_END_RE.search(answer.rstrip()) and len(answer) > 40:
        return "dangling_end"
    return None


@register_step
class QualityFilter(BaseFilter):
    """Drop structurally broken dialogues.

    Reasons: `no_turns`, `empty_turn` (empty human or assistant message), `truncated` (unclosed code
    block or an answer ending mid-sentence), `broken_tags` (MOSS end tags, role markers or other
    templates' special tokens inside a message), `bad_citation` (`<sup><|N|></sup>` without a search
    result N), `speaks_as_user` (the answer writes the user's next line), `simulator_leak` (a user
    message repeats the user simulator's instructions, "Write the user's message number 3 (of about
    3)..."), `repetition` (a loop).

    Args:
        check_truncation, check_repetition, check_citations, check_simulator: switch those checks off.
        min_repeats: how many times one sentence may appear before it is a loop (4).
    """

    name = "quality"

    def __init__(
        self,
        *,
        policy: str = "drop",
        check_truncation: bool = True,
        check_repetition: bool = True,
        check_citations: bool = True,
        check_simulator: bool = True,
        min_repeats: int = 4,
    ):
        super().__init__(policy=policy)
        self.check_truncation = check_truncation
        self.check_simulator = check_simulator
        self.check_repetition = check_repetition
        self.check_citations = check_citations
        self.min_repeats = min_repeats

    def filter(self, conv: Conversation) -> FilterResult:
        if not conv.turns:
            return False, "no_turns"
        for i, t in enumerate(conv.turns, start=1):
            if not t.human.strip():
                return False, "empty_turn", {"turn": i, "role": "human"}
            if not t.assistant.strip():
                return False, "empty_turn", {"turn": i, "role": "assistant"}
            for role, text in (
                ("human", t.human),
                ("assistant", t.assistant),
                ("thoughts", t.thoughts or ""),
            ):
                m = _TAG_RE.search(text)
                if m:
                    return False, "broken_tags", {"turn": i, "role": role, "tag": m.group(0)}
            m = _AS_USER_RE.search(t.assistant)
            if m:
                return False, "speaks_as_user", {"turn": i, "text": t.assistant[m.start() : m.start() + 60]}
            leak = simulator_leak_evidence(t.human) if self.check_simulator else None
            if leak:
                return False, "simulator_leak", {"turn": i, "text": leak}
            if self.check_citations:
                bad = _bad_citations(t)
                if bad:
                    return False, "bad_citation", {"turn": i, "cited": bad}
            if self.check_repetition:
                ev = repetition_evidence(t.assistant, min_repeats=self.min_repeats)
                if ev:
                    return False, "repetition", {"turn": i, **ev}
        if self.check_truncation:
            why = truncation_evidence(conv.turns[-1].assistant)
            if why:
                return (
                    False,
                    "truncated",
                    {"turn": len(conv.turns), "why": why, "tail": conv.turns[-1].assistant[-40:]},
                )
        return True


def _bad_citations(turn: Turn) -> list[int]:
    cited = {int(n) for n in _CITE_RE.findall(turn.assistant)}
    if not cited:
        return []
    valid: set[int] = set()
    for r in turn.results:
        if r.ok and r.snippets:
            valid.update(range(r.first_index, r.first_index + len(r.snippets)))
    return sorted(cited - valid)


# ---------------------------------------------------------------------------------------------------
# tool_failure

#: The answer admits the tool failed or that it worked the result out by itself.
_HONEST_RE = re.compile(
    r"没有(?:返回|得到|找到|搜索到|获得|查到|给出)|未能|无法(?:计算|求解|获取|获得|找到|查到|搜索|得到|完成|使用)|没能|"
    r"(?:计算|搜索|求解|调用|工具|计算器|求解器|插件)(?:失败|出错|出现错误|没有结果|无结果|未返回|不可用)|没有结果|无结果|"
    r"手动(?:计算|求解|推导|算)|手工计算|(?:我|让我)(?:自己|来)(?:计算|算|推导|求解)|重新计算|"
    r"\bno results?\b|did(?: not|n't) (?:return|give|produce|work)|(?:tool|calculator|solver|search|call) (?:failed|errored|returned (?:nothing|no|an error))|"
    r"\bfailed\b|unable to (?:calculate|compute|solve|find|get|retrieve|search|access|use)|"
    r"could(?: not|n't) (?:calculate|compute|solve|find|get|retrieve|access|use)|"
    r"can(?:not|'t) (?:access|use|get|retrieve|calculate|solve)|not available|"
    r"\bmanually\b|\bby hand\b|(?:calculate|compute|work(?:ed)? (?:it|this) out|solve) (?:it |this )?myself|"
    r"without the (?:tool|calculator|solver)|wasn't able|was not able",
    re.I,
)
#: The answer claims the failed tool gave it a result.
_CLAIM_RE = re.compile(
    r"(?:经过|通过|根据|使用|利用|借助)(?:计算器|计算|搜索|查询|求解|方程求解器)|计算结果(?:为|是|显示)|"
    r"搜索结果(?:显示|表明|为)|求解结果|(?:计算器|求解器)(?:显示|给出|得出)|我(?:已经|已)?(?:计算|查询|搜索)(?:了|出|得)|"
    r"I (?:have |'ve )?(?:calculated|computed|searched|looked up|solved)|according to (?:the |my )?(?:search|calculation|calculator|results?)|"
    r"the (?:calculator|solver|search) (?:shows|returns|returned|gives|gave|says)|"
    r"(?:calculation|search) results? (?:shows?|is|are|indicates?)",
    re.I,
)
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
#: A number stated as a result: after `=`, `≈`, `is`, `等于`, `是`, `为`, `约`, ...
_STATED_RE = re.compile(
    r"(?:=|≈|≅|等于|得到|结果是|结果为|答案是|答案为|是|为|约|約|equals?|is|are|was|be|gives?|:|：)\s*"
    r"(?:about |approximately |around |roughly |大约|大概)?([-+]?\d+(?:[.,]\d+)*)",
    re.I,
)


def _failed_calls(turn: Turn) -> list[str]:
    failed = [r.name for r in turn.results if not r.ok]
    if not failed and "tool_failed" in turn.flags:
        failed = [c.name for c in turn.calls] or ["tool"]
    return failed


@register_step
class ToolFailureFilter(BaseFilter):
    """Drop answers that state results after a failed tool call (MOSS's released plugin data has
    `No result.` followed by a confident figure).

    A turn with a failed call (`ToolResult.ok` False or the `tool_failed` flag) passes when its
    answer says the tool failed or that the figure was worked out without it. Otherwise it is
    dropped when the answer claims the tool's result (`invented_after_tool_failure`), cites search
    results (`citation_after_tool_failure`), or gives a number not in the question after a failed
    Calculate/Solve (`figure_after_tool_failure`).
    """

    name = "tool_failure"

    def filter(self, conv: Conversation) -> FilterResult:
        for i, t in enumerate(conv.turns, start=1):
            failed = _failed_calls(t)
            if not failed:
                continue
            answer = t.assistant
            honest = _HONEST_RE.search(answer)
            if honest:
                continue
            claim = _CLAIM_RE.search(answer)
            if claim:
                return (
                    False,
                    "invented_after_tool_failure",
                    {"turn": i, "tools": failed, "claim": claim.group(0)},
                )
            if _CITE_RE.search(answer) and any(n == "Search" for n in failed):
                ok_snippets = any(r.ok and r.snippets for r in t.results)
                if not ok_snippets:
                    return False, "citation_after_tool_failure", {"turn": i, "tools": failed}
            if any(n in ("Calculate", "Solve", "tool") for n in failed):  # "tool": flagged, call unknown
                given = set()
                for src in [t.human, *(c.arg for c in t.calls)]:
                    given.update(n.replace(",", "") for n in _NUMBER_RE.findall(src))
                stated = [
                    m.group(1)
                    for m in _STATED_RE.finditer(answer)
                    if m.group(1).lstrip("+-").replace(",", "") not in given
                ]
                if stated:
                    return (
                        False,
                        "figure_after_tool_failure",
                        {"turn": i, "tools": failed, "figures": stated[:5]},
                    )
        return True


# ---------------------------------------------------------------------------------------------------
# length


@functools.lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str):
    """A tokenizer from a local `tokenizer.json` file (tokenizers) or a local folder/hub id that
    `transformers.AutoTokenizer` loads (offline use needs a local folder)."""
    if name_or_path.endswith(".json"):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MissingDependencyError("tokenizers", "moss") from None
        tok = Tokenizer.from_file(name_or_path)
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "moss") from None
    tok = AutoTokenizer.from_pretrained(name_or_path)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


@register_step
class LengthFilter(BaseFilter):
    """Length limits.

    Reasons: `too_short` (all assistant text under `min_chars`), `turn_too_long` (a message over
    `max_turn_chars`), `too_long` (dialogue over `max_chars`), `too_many_turns`, `too_long_tokens`
    (the MOSS rendering over `max_tokens` tokens of `tokenizer`).

    Args:
        min_chars: minimum characters of assistant text in the dialogue (default 1).
        max_chars: maximum characters of all messages (default 32000; None: no limit).
        max_turn_chars: maximum characters of one message (default 16000; None: no limit).
        max_turns: maximum number of turns (None: no limit).
        max_tokens: maximum tokens of the MOSS text rendering (meta instruction and all segments, as
            `datagen.formats.moss.render_text` writes it; MOSS trains on 2048); needs `tokenizer`.
        tokenizer: a local tokenizer.json or tokenizer folder.
    """

    name = "length"

    def __init__(
        self,
        *,
        policy: str = "drop",
        min_chars: int = 1,
        max_chars: int | None = 32000,
        max_turn_chars: int | None = 16000,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        tokenizer: str | None = None,
    ):
        super().__init__(policy=policy)
        if max_tokens is not None and not tokenizer:
            raise ConfigError(
                "max_tokens needs a tokenizer (a local tokenizer.json or folder)", field="tokenizer"
            )
        self.min_chars, self.max_chars, self.max_turn_chars = min_chars, max_chars, max_turn_chars
        self.max_turns, self.max_tokens, self.tokenizer = max_turns, max_tokens, tokenizer

    def filter(self, conv: Conversation) -> FilterResult:
        if self.max_turns is not None and len(conv.turns) > self.max_turns:
            return False, "too_many_turns", {"turns": len(conv.turns), "max": self.max_turns}
        answer_chars = sum(len(t.assistant.strip()) for t in conv.turns)
        if answer_chars < self.min_chars:
            return False, "too_short", {"chars": answer_chars, "min": self.min_chars}
        if self.max_turn_chars is not None:
            for i, t in enumerate(conv.turns, start=1):
                n = max(len(t.human), len(t.assistant))
                if n > self.max_turn_chars:
                    return False, "turn_too_long", {"turn": i, "chars": n, "max": self.max_turn_chars}
        total = sum(len(x) for x in conv.texts())
        if self.max_chars is not None and total > self.max_chars:
            return False, "too_long", {"chars": total, "max": self.max_chars}
        if self.max_tokens is not None:
            from datagen.formats.moss import render_text

            n = load_tokenizer(self.tokenizer)(render_text(conv))
            if n > self.max_tokens:
                return False, "too_long_tokens", {"tokens": n, "max": self.max_tokens}
        return True


# ---------------------------------------------------------------------------------------------------
# boilerplate

_BOILERPLATE_RE = re.compile(
    r"\bas an? (?:AI|artificial intelligence)(?: language model| assistant| model| chatbot)?\b|"
    r"\bas a (?:large )?language model\b|\bI(?:'m| am) (?:just |only )?an? (?:AI|language model)\b|"
    r"作为(?:一[个名款])?(?:AI|人工智能|ai)(?:语言模型|助手|模型|程序)?|作为(?:一[个名款])?(?:大型)?语言模型|"
    r"我(?:只是|仅仅是|是)一[个名款](?:AI|人工智能|语言模型)",
    re.I,
)
_IDENTITY_RE = re.compile(
    r"\bI(?:'m| am) (?:ChatGPT|GPT-?\d|Claude|Bard|Gemini|LLaMA|Llama)\b|"
    r"\b(?:developed|created|trained|made) by (?:OpenAI|Anthropic|Google|Meta)\b|"
    r"我是(?:ChatGPT|GPT|Claude|文心一言|通义千问|ChatGLM)|由(?:OpenAI|Anthropic|谷歌|Google|百度|阿里)(?:公司)?(?:开发|训练|创建)",
    re.I,
)


@register_step
class BoilerplateFilter(BaseFilter):
    """AI boilerplate (`As an AI language model`, `作为一个AI语言模型`): reason `ai_boilerplate`;
    and answers claiming another assistant's identity (`I am ChatGPT`, `由OpenAI开发`): reason
    `identity_leak`. Tags by default (policy `tag`); set policy `drop` where unwanted.

    Args:
        identity: also check identity leaks (default True).
    """

    name = "boilerplate"

    def __init__(self, *, policy: str = "tag", identity: bool = True):
        super().__init__(policy=policy)
        self.identity = identity

    def filter(self, conv: Conversation) -> FilterResult:
        for i, t in enumerate(conv.turns, start=1):
            if self.identity:
                m = _IDENTITY_RE.search(t.assistant)
                if m:
                    return False, "identity_leak", {"turn": i, "text": m.group(0)}
            m = _BOILERPLATE_RE.search(t.assistant)
            if m:
                return False, "ai_boilerplate", {"turn": i, "text": m.group(0)}
        return True
