"""MOSS 003 text and SFT records, OpenAI messages and ShareGPT, to and from `Conversation`.

    from datagen.formats import read_conversations, to_sft, turn_segments, render_text

    for conv in read_conversations("data/"):          # any known format, files or folders
        text = render_text(conv)                       # meta instruction + turns, MOSS text
        for key, segment in turn_segments(conv.turns[0], conv):
            ...                                        # ("Human", "<|Human|>: ...<eoh>\\n"), ...

Modules: `meta` (meta instruction), `commands` (Commands/Results grammar), `moss` (segments,
text, SFT records), `messages`, `sharegpt`, `reader` (files and folders), `validate` (checks),
`stats`, `cli` (`datagen validate / convert / stats`).
"""

from datagen.formats.commands import (
    match_results,
    parse_commands,
    parse_results,
    render_call,
    render_commands,
    render_results,
    salvage_commands,
    salvage_results,
    snippet_text,
)
from datagen.formats.issues import Issue
from datagen.formats.messages import from_messages, to_messages
from datagen.formats.meta import build_meta_instruction, meta_instruction_for, parse_meta_instruction
from datagen.formats.moss import (
    SFT_KEYS,
    dumps_sft_file,
    dumps_sft_line,
    from_sft,
    parse_text,
    render_text,
    render_turn,
    to_sft,
    turn_segments,
)
from datagen.formats.reader import Location, detect_format, iter_records, read_conversations, to_conversation
from datagen.formats.sharegpt import from_sharegpt, to_sharegpt
from datagen.formats.validate import (
    check_conversation,
    check_turn,
    format_defect,
    validate_paths,
    validate_record,
)

__all__ = [
    "SFT_KEYS",
    "Issue",
    "Location",
    "build_meta_instruction",
    "check_conversation",
    "check_turn",
    "detect_format",
    "dumps_sft_file",
    "dumps_sft_line",
    "from_messages",
    "from_sft",
    "format_defect",
    "from_sharegpt",
    "iter_records",
    "match_results",
    "meta_instruction_for",
    "parse_commands",
    "parse_meta_instruction",
    "parse_results",
    "parse_text",
    "read_conversations",
    "render_call",
    "render_commands",
    "render_results",
    "render_text",
    "render_turn",
    "salvage_commands",
    "salvage_results",
    "snippet_text",
    "to_conversation",
    "to_messages",
    "to_sft",
    "to_sharegpt",
    "turn_segments",
    "validate_paths",
    "validate_record",
]
