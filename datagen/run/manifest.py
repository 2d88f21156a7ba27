"""`manifest.json`: what a run directory holds and how far its run got.

Each stage records its status, fingerprint, counts, times and cost. A rerun of the same command
skips every stage whose fingerprint matches and whose status is `done`; a changed stage (and every
stage after it) runs again, and an unfinished one continues from the teacher journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.io import write_json_atomic
from datagen.teacher.redact import redact
from datagen.versions import now

MANIFEST = "manifest.json"


_RECOVER = (
    "move it aside (mv {path} {path}.bad) and rerun `datagen run` with the same config: it redoes "
    "every stage, taking each teacher call already made from journal.sqlite without paying again"
)


@dataclass(slots=True)
class Manifest:
    """The manifest of one run directory, saved after every change."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path) -> Manifest:
        """Read the run directory's manifest (an empty one when there is none yet). A manifest that
        cannot be read (cut short by a full disk, edited by hand) raises InputError naming the file
        and how to recover."""
        path = Path(run_dir) / MANIFEST
        data: Any = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"not UTF-8 text; {_RECOVER.format(path=path)}", path=str(path)) from None
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}; cut short?); "
                    + _RECOVER.format(path=path),
                    path=str(path),
                ) from None
            if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
                raise InputError(
                    f"not a datagen manifest (expected an object with a 'stages' mapping); "
                    f"{_RECOVER.format(path=path)}",
                    path=str(path),
                )
        data.setdefault("stages", {})
        return cls(path=path, data=data)

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def is_done(self, stage: str, fingerprint: str) -> bool:
        s = self.stages.get(stage)
        return bool(s and s.get("status") == "done" and s.get("fingerprint") == fingerprint)

    def start(self, stage: str, fingerprint: str) -> None:
        prev = self.stages.get(stage, {})
        resumed = prev.get("fingerprint") == fingerprint and prev.get("status") == "running"
        self.stages[stage] = {
            "status": "running",
            "fingerprint": fingerprint,
            "started": now(),
            "resumed": resumed or prev.get("resumed", False) and resumed,
        }
        self.save()

    def finish(self, stage: str, /, **info: Any) -> None:
        s = self.stages[stage]
        s.update({k: v for k, v in info.items() if k not in ("status", "fingerprint", "started")})
        s["status"] = "done"
        s["finished"] = now()
        self.save()

    def fail(self, stage: str, error: str) -> None:
        s = self.stages.setdefault(stage, {})
        s["status"] = "failed"
        s["error"] = redact(error)
        s["finished"] = now()
        self.save()
