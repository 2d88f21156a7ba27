"""datagen's errors. Each subclasses a builtin so callers can catch either.

Messages say what went wrong, where (file, line, field) and, where it helps, what to do next. The
CLI prints them as one `Error: ...` line and exits 1; `DATAGEN_DEBUG=1` shows the traceback.
"""

from __future__ import annotations


class DatagenError(Exception):
    """Base class of every error datagen raises on purpose."""


class InputError(DatagenError, ValueError):
    """Bad input data. `location` is `file:line` (or `file`), `field` the offending field."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None
    ):
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        super().__init__(self.format())

    @property
    def location(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def format(self) -> str:
        parts = [p for p in (self.location, self.field) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class ConfigError(InputError):
    """A bad run config: unknown key, wrong type, missing value."""


class SeedFormatError(InputError):
    """A seed file row that cannot be imported."""


class FormatError(InputError):
    """A conversation that does not follow the MOSS 003 (or another known) format."""


class TeacherError(DatagenError, RuntimeError):
    """A teacher request failed for good (after retries, or on a non-retryable error)."""


class MissingDependencyError(DatagenError, ImportError):
    """An optional dependency is not installed; the message gives the pip line."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"this needs {package}: run `pip install 'datagen[{extra}]'` "
            f"(or `.venv/bin/pip install -e '.[{extra}]'` in a checkout)"
        )


class PublishError(DatagenError, RuntimeError):
    """The dataset folder failed its checks or could not be uploaded."""
