"""Checks every config class makes the same way, so a mistake reads the same in every section:

reject_unknown({"batchsize": 8}, ["batch_size", "targets"], "expand")
# ConfigError: expand.batchsize: unknown key (known: batch_size, targets)
check_int(0, "parallel", minimum=1, where="expand")
# ConfigError: expand.parallel: must be at least 1, got 0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from datagen.errors import ConfigError


def _field(where: str, name: Any) -> str:
    return f"{where}.{name}" if where else str(name)


def reject_unknown(data: Mapping[Any, Any], known: Iterable[str], where: str = "") -> None:
    """Raise ConfigError for the first key of `data` (in sorted order) that is not in `known`; the
    error's field is `where.key` and its message lists the known keys."""
    known = set(known)
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})", field=_field(where, unknown[0]))


class Section:
    """What a config dataclass section shares: `from_dict` (unknown keys and wrong arguments are
    ConfigErrors naming the key), `to_dict`, and `replace` (CLI flags over the section: None means
    'not given'). Validation stays in each class's `__post_init__`."""

    __slots__ = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None):
        """Build from a config section; unknown keys raise ConfigError naming the key."""
        import dataclasses

        data = dict(data or {})
        reject_unknown(data, [f.name for f in dataclasses.fields(cls)])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        """A copy with the non-None `changes` applied."""
        import dataclasses

        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_int(value: Any, name: str, *, minimum: int, where: str = "") -> None:
    """Raise ConfigError (field `where.name`) unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be a whole number, got {value!r}", field=_field(where, name))
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", field=_field(where, name))
