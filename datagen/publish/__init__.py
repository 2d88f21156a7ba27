"""Stage 6, publish: build a Hub dataset folder (parquet + card), check it, upload it."""

from datagen.publish.build import DatasetFolder, build_dataset_folder
from datagen.publish.hub import publish
from datagen.publish.rows import conversation_to_row, row_to_conversation
from datagen.publish.verify import check_dataset_folder
from datagen.splits import split_for

__all__ = [
    "DatasetFolder",
    "build_dataset_folder",
    "check_dataset_folder",
    "conversation_to_row",
    "publish",
    "row_to_conversation",
    "split_for",
]
