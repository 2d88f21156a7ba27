"""The teacher engine: every call datagen pays for goes through here.

    from datagen.teacher import Request, TeacherConfig, TeacherEngine, run_requests

    config = TeacherConfig(base_url="https://api.openai.com/v1", model="gpt-4o-mini", concurrency=64,
                           rpm=5000, prices={"gpt-4o-mini": {"input": 0.15, "output": 0.60}})
    async with TeacherEngine(config, journal_path=run_dir / "journal.sqlite", desc="expand") as engine:
        result = await engine.complete(Request(messages=[...], template_version="expand.v1", tag=row_id))
        async for result in engine.map(requests):     # as they finish, any order; match on result.tag
            ...
    results = run_requests(config, requests, journal_path=...)   # from sync code, in input order

Modules: `config` (TeacherConfig), `types` (Request, Result), `engine` (TeacherEngine), `journal`
(SQLite cache / resume point / cost ledger), `limits` (adaptive concurrency, RPM/TPM windows),
`failures` (error codes and what is retried), `progress` (bar, watchdog, summary), `cli`
(`datagen journal stats|failures|export`). Names are imported lazily so `datagen --help` does
not load the openai client.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TeacherConfig": "datagen.teacher.config",
    "Request": "datagen.teacher.types",
    "Result": "datagen.teacher.types",
    "TeacherEngine": "datagen.teacher.engine",
    "EngineStats": "datagen.teacher.engine",
    "run_requests": "datagen.teacher.engine",
    "open_engine": "datagen.teacher.engine",
    "BatchEngine": "datagen.teacher.batch",
    "Journal": "datagen.teacher.journal",
    "request_key": "datagen.teacher.journal",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datagen.teacher' has no attribute {name!r}")
