"""Part of the former datagen/manifest.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of datagen and the libraries that shape its output, for bug reports and lineage."""
    out = {"python": platform.python_version()}
    for pkg in (
        "datagen",
        "openai",
        "datasets",
        "huggingface_hub",
        "transformers",
        "torch",
        "llama_cpp_python",
    ):
        try:
            out[pkg] = metadata.version(pkg.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out
