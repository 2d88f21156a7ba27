"""MOSS SFT records with each kind of defect the full public release has (11 of its 1,120 files),
built from real sample records: only the damaged segments are written by hand.

`DEFECTS` names each kind with what a reader must make of it: the problem recorded per segment,
the calls recovered, and the reason `datagen filter` rejects it for (step, reason).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from datagen.formats.moss import dumps_sft_file

# Calculator record (calculator_plugin_conversation_84): turn_1 Calculate("7^2"); turn_2 two calls.
# Search + calculator record (mix_plugin_conversation_15): turn_3 Search, Search, Calculate("29-24.7").
CALC, MIX = "calculator_plugin_conversation_84", "mix_plugin_conversation_15"


@dataclass(frozen=True)
class Defect:
    """One kind of defect: `edit(record)` damages a copy of the `base` sample; a reader records
    `problems` (segment -> start of the reason) on turn `turn` and recovers `calls` there; the
    filter rejects it at `step` for `reason`."""

    base: str
    turn: int
    segments: dict[str, str]
    problems: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] | None = None
    step: str = "format"
    reason: str = ""


def _results(*blocks: str) -> str:
    return "<|Results|>:\n" + "".join(blocks) + "<eor>\n"


S1 = 'Search("苹果 欧洲 市场份额")'
S2 = 'Search("三星 欧洲 市场份额")'
C3 = 'Calculate("29-24.7")'


def _mix_blocks(record: dict) -> dict[str, str]:
    """The three result blocks of mix_15's turn 3, by call."""
    body = record["chat"]["turn_3"]["Tool Responses"][len("<|Results|>:\n") : -len("<eor>\n")]
    i2, i3 = body.index(S2 + " =>"), body.index(C3 + " =>")
    return {S1: body[:i2], S2: body[i2:i3], C3: body[i3:]}


DEFECTS: dict[str, Defect] = {
    "numbered_commands": Defect(
        CALC,
        2,
        {
            "Commands": '<|Commands|>: 1. Calculate("7*2")  # 计算新边长\n'
            '2. Calculate("14^2")  # 计算面积<eoc>\n',
            "Tool Responses": _results("Calculate(\"7*2\") => '14'\n", "Calculate(\"14^2\") => '196'\n"),
        },
        {"Commands": "cannot parse a command at column 1: '1. Calculate"},
        [("Calculate", "7*2"), ("Calculate", "14^2")],
        reason="malformed_commands",
    ),
    "none_then_prose": Defect(
        CALC,
        1,
        {
            "Commands": "<|Commands|>: None. 这个问题不需要使用工具，直接计算即可。<eoc>\n",
            "Tool Responses": "<|Results|>:\nNone\n<eor>\n",
        },
        {"Commands": "cannot parse a command at column 1: 'None. "},
        [],
        reason="malformed_commands",
    ),
    "none_with_an_aside": Defect(
        CALC,
        1,
        {
            "Commands": "<|Commands|>: None (This question doesn't require any calculation.)\n"
            "The area of a square is its side squared.<eoc>\n",
            "Tool Responses": "<|Results|>:\nNone\n<eor>\n",
        },
        {"Commands": 'cannot parse a command at column 1: "None (This'},
        [],
        reason="malformed_commands",
    ),
    "python_format_argument": Defect(
        CALC,
        1,
        {
            "Commands": '<|Commands|>: Calculate("({} - 1)**2".format(14.69))<eoc>\n',
            "Tool Responses": _results("Calculate(\"({} - 1)**2\".format(14.69)) => '187.4161'\n"),
        },
        {"Commands": "cannot parse a command at column 1"},
        [("Calculate", '"({} - 1)**2".format(14.69)')],
        reason="malformed_commands",
    ),
    "python_concatenated_argument": Defect(
        CALC,
        2,
        {
            "Commands": '<|Commands|>: Calculate("7^2*4"), Calculate(str(7*2) + "^2")<eoc>\n',
            "Tool Responses": _results(
                "Calculate(\"7^2*4\") => '196'\n", "Calculate(str(7*2) + \"^2\") => '196'\n"
            ),
        },
        {"Commands": "cannot parse a command at column 21"},
        [("Calculate", "7^2*4"), ("Calculate", 'str(7*2) + "^2"')],
        reason="malformed_commands",
    ),
    "unknown_command": Defect(
        CALC,
        1,
        {
            "Commands": '<|Commands|>: Count("正方形的边")<eoc>\n',
            "Tool Responses": _results('Count("正方形的边") => 4\n'),
        },
        {},
        [("Count", "正方形的边")],
        reason="unknown_command",
    ),
    "missing_separator": Defect(
        CALC,
        2,
        {"Commands": '<|Commands|>: Calculate("7^2*4")Calculate("14^2")<eoc>\n'},
        {"Commands": "cannot parse a command at column 17"},
        [("Calculate", "7^2*4"), ("Calculate", "14^2")],
        reason="malformed_commands",
    ),
    "results_out_of_order": Defect(
        MIX, 3, {"Tool Responses": "{C3}{S2}{S1}"}, {}, None, reason="results_out_of_order"
    ),
    "fewer_results": Defect(MIX, 3, {"Tool Responses": "{S1}"}, {}, None, reason="missing_result"),
    "no_results": Defect(
        MIX, 3, {"Tool Responses": "<|Results|>:\nNone\n<eor>\n"}, {}, None, reason="missing_result"
    ),
    "text_before_results": Defect(
        CALC,
        1,
        {"Tool Responses": _results("计算结果如下：\n", "Calculate(\"7^2\") => '49'\n")},
        {"Tool Responses": "text before the first result block: '计算结果如下："},
        [("Calculate", "7^2")],
        reason="malformed_results",
    ),
    "end_tag_in_answer": Defect(
        CALC,
        1,
        {"MOSS": "<|MOSS|>: 这个正方形的面积是49平方厘米<eor>\n如需其他计算请告诉我。<eom>\n"},
        {},
        [("Calculate", "7^2")],
        step="quality",
        reason="broken_tags",
    ),
}


def defect_record(name: str, samples: dict[str, dict]) -> dict:
    """The damaged copy of a sample record (`samples`: stem -> record) for defect `name`."""
    d = DEFECTS[name]
    rec = copy.deepcopy(samples[d.base])
    turn = rec["chat"][f"turn_{d.turn}"]
    for key, value in d.segments.items():
        if "{S1}" in value or "{C3}" in value:  # results of mix_15's turn 3, reordered or cut
            blocks = _mix_blocks(rec)
            value = "<|Results|>:\n" + value.format(S1=blocks[S1], S2=blocks[S2], C3=blocks[C3]) + "<eor>\n"
        turn[key] = value
    return rec


def load_samples(moss_samples: list[Path]) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in moss_samples}


def write_defects(folder: Path, moss_samples: list[Path]) -> dict[str, Path]:
    """One file per defect kind, `folder/<name>.json`, as upstream writes its files."""
    samples = load_samples(moss_samples)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in DEFECTS:
        path = folder / f"{name}.json"
        path.write_text(dumps_sft_file(defect_record(name, samples)), encoding="utf-8")
        out[name] = path
    return out
