"""A scripted teacher for the fake OpenAI server: it recognises which role a request plays (from
the shipped templates' wording) and answers like a small, slightly messy model would (echoed role
prefixes, end tags, preambles), so the tests drive the real parsers.

"""

from __future__ import annotations

import random
import re
import zlib
from typing import Any

from tests.fakes.openai_server import last_user_text

# Roles, by a phrase of each shipped template's system message.
EXPAND = "You write realistic messages that users send"
USER = "You play the human user"
PLAN = "you think and decide which tools to call"
ANSWER = "now write your answer to the user, based on the tool results"
ASSISTANT = "Answer the user's latest message as MOSS would"

_EN_WORDS = (
    "river mountain garden violin kitchen planet engine castle forest library tiger painter "
    "bridge harbor camera island lantern market pirate rocket saddle teacher window yogurt "
    "zebra anchor blanket candle dolphin feather glacier hammer igloo jacket kettle lemon "
    "magnet noodle orchard pepper quartz ribbon spider tunnel umbrella velvet walnut banjo "
    "cactus desert falcon guitar helmet insect jungle koala ladder meadow needle oyster"
).split()
_ZH_WORDS = (
    "长城 熊猫 火锅 地铁 银行 医院 学校 电脑 手机 咖啡 足球 音阶 钢琴 沙漠 海洋 森林 城市 农村 历史 "
    "数学 物理 化学 哲学 经济 法律 旅游 美食 健康 睡眠 运动 考试 面试 工作 创业 投资 保险 房租 邮件 "
    "会议 朋友 父母 孩子 宠物 猫咪 小狗 花园 厨房 面包 蛋糕 茶叶 围棋 象棋 书法 京剧 诗歌 小说 电影"
).split()
_BLACKLISTED = {"en": "Draw a picture of a {a} sitting on a {b}.", "zh": "请画一张{a}和{b}的图片。"}


def role_of(request: dict[str, Any]) -> str:
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    for role, phrase in (
        ("expand", EXPAND),
        ("user", USER),
        ("plan", PLAN),
        ("answer", ANSWER),
        ("assistant", ASSISTANT),
    ):
        if phrase in system:
            return role
    raise AssertionError(f"unrecognised request: {system[:200]!r}")


def _rng(request: dict[str, Any]) -> random.Random:
    blob = "\n".join(str(m.get("content")) for m in request["messages"])
    return random.Random(zlib.crc32(blob.encode()))


def expand_reply(request: dict[str, Any]) -> dict[str, Any]:
    """A numbered batch: fresh prompts, plus a copy of the first example (a near duplicate) and a
    blacklisted one; the last item is cut off and finish_reason says `length`."""
    user = last_user_text(request)
    n = int(re.search(r"Write (\d+) new user messages", user).group(1))
    zh = "Chinese" in user.split("Examples:")[0]
    examples = re.findall(r"^\d+\. (.+)$", user.split("Examples:")[1].split("\n\nWrite")[0], re.M)
    rng = _rng(request)
    items = []
    for _ in range(max(1, n - 2)):
        if zh:
            w = rng.sample(_ZH_WORDS, 5)
            items.append(f"{w[0]}和{w[1]}在{w[2]}里怎样影响{w[3]}与{w[4]}？")
        else:
            w = rng.sample(_EN_WORDS, 5)
            items.append(f"How would a {w[0]} and a {w[1]} explain the {w[2]} to the {w[3]} near the {w[4]}?")
    items.append(examples[0] + ("。" if zh else "!"))  # near duplicate of an example
    a, b = rng.sample(_ZH_WORDS if zh else _EN_WORDS, 2)
    items.append(_BLACKLISTED["zh" if zh else "en"].format(a=a, b=b))
    body = "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    preamble = "好的，以下是新的用户消息：\n\n" if zh else "Sure! Here are the new messages:\n\n"
    cut = f"\n{len(items) + 1}. How would the"  # truncated by max_tokens
    return {"content": preamble + body + cut, "finish_reason": "length"}


#: The simulated user's follow-ups, by message number (distinct enough not to count as repeats).
FOLLOW_UPS = {
    2: "can you say more about what you just explained?",
    3: "which of those points matters most for a beginner, and why?",
    4: "what would change if I only had ten minutes a day?",
    5: "could you give me one concrete example I can try tonight?",
    6: "how do I know whether it is working after a month?",
}
FOLLOW_UPS_ZH = {
    2: "你能再详细解释一下刚才说的内容吗？",
    3: "这些里面对初学者最重要的是哪一点？为什么？",
    4: "如果我每天只有十分钟，应该怎么调整？",
    5: "能给我一个今晚就能试试的具体例子吗？",
    6: "一个月以后我怎么判断它有没有效果？",
}


def user_reply(request: dict[str, Any]) -> str:
    user = last_user_text(request)
    n = int(re.search(r"message number (\d+)", user).group(1))
    zh = "Chinese" in next(m["content"] for m in request["messages"] if m["role"] == "system")
    if zh:
        return f"用户：第{n}个问题：{FOLLOW_UPS_ZH[n]}"
    return f"User: Thanks. Follow-up number {n}: {FOLLOW_UPS[n]}"


#: last user message fragment -> (thoughts, commands) for the plan role.
PLANS: dict[str, tuple[str, str]] = {
    "23*47+12": ("The user needs a calculation.", 'Calculate("23*47+12")'),
    "x+y=10": ("This is a system of equations; I should solve it.", 'Solve("x+y=10;x-y=2")'),
    "Everest": ("I should search for the height of Mount Everest.", 'Search("Mount Everest height")'),
    "fox": ("The user wants a picture.", 'Text2Image("a red fox in the snow")'),
    "1/0": ("I will compute it.", 'Calculate("1/0")'),
}


def plan_message(request: dict[str, Any]) -> str:
    """The message a plan request asks about: v2 puts it after `Message:` in the final user
    message (after a transcript of earlier turns); v1 sends it as the final user message."""
    user = last_user_text(request)
    if "\nWrite the Inner Thoughts and Commands lines" in user:
        return user.rsplit("Message: ", 1)[1].split("\nWrite the Inner Thoughts and Commands lines")[0]
    return user


def plan_reply(request: dict[str, Any]) -> str:
    user = plan_message(request)
    for key, (thoughts, commands) in PLANS.items():
        if key in user:
            return f"```\n<|Inner Thoughts|>: {thoughts}<eot>\n<|Commands|>: {commands}<eoc>\n```"
    return "Inner Thoughts: No tool is needed here.\nCommands: None"


def answer_reply(request: dict[str, Any]) -> str:
    user = last_user_text(request)
    results = user.split("Tool results:\n", 1)[1].split("\n\n", 1)[0].strip()
    if "return no result" in user or "returned no result" in user:
        return "MOSS: Sorry, the tool could not give a result for that, so I cannot tell you the value."
    first = results.splitlines()[0] if results else "None"
    return f"MOSS: Based on the tool results ({first}), here is the answer.<eom>"


def assistant_reply(request: dict[str, Any]) -> str:
    user = last_user_text(request)
    turn = sum(1 for m in request["messages"] if m["role"] == "user")
    if any("\u4e00" <= ch <= "\u9fff" for ch in user):
        return f"<|MOSS|>: 这是第{turn}轮的回答：关于“{user[:20]}”，我的看法如下。<eom>"
    return f'MOSS: This is answer {turn}. About "{user[:30]}", here is what I can say.<eom>'


def scripted_teacher(request: dict[str, Any]) -> str | dict[str, Any]:
    """The responder: dispatch on the role of the request."""
    role = role_of(request)
    return {
        "expand": expand_reply,
        "user": user_reply,
        "plan": plan_reply,
        "answer": answer_reply,
        "assistant": assistant_reply,
    }[role](request)
