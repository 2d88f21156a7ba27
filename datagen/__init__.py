"""datagen: seed prompts -> expanded prompts -> MOSS 003 dialogues -> filtered, scored, published."""

from datagen.record import Conversation, Lineage, ToolCall, ToolResult, Turn, Usage

__version__ = "0.1.0"
__all__ = ["Conversation", "Lineage", "ToolCall", "ToolResult", "Turn", "Usage", "__version__"]
