"""`datagen status RUN_DIR`: where a run directory stands."""

from __future__ import annotations

from pathlib import Path

from datagen.errors import DatagenError
from datagen.run.manifest import Manifest


def run_status(run_dir: Path) -> str:
    """A readable summary of a run directory: each stage's status, counts, time and cost."""
    m = Manifest.open(run_dir)
    if not m.path.exists():
        raise DatagenError(f"{run_dir}: no manifest.json here (is it a run directory?)")
    lines = [f"run {m.data.get('name', '?')} ({m.data.get('fingerprint', '?')}) in {run_dir}"]
    for name, s in m.stages.items():
        extra = []
        if "count" in s:
            extra.append(f"{s['count']} rows")
        if s.get("cost"):
            extra.append(f"${float(s['cost']):.4f}")
        if "seconds" in s:
            extra.append(f"{s['seconds']}s")
        if s.get("error"):
            extra.append(f"error: {s['error']}")
        lines.append(f"  {name:<18} {s.get('status', '?'):<8} {', '.join(extra)}")
    journal = Path(run_dir) / "journal.sqlite"
    if journal.exists():
        try:
            from datagen.teacher.journal import Journal

            with Journal(journal) as j:
                st = j.stats()
            lines.append(f"  journal: {st}")
        except Exception as exc:  # status must always print something useful
            lines.append(f"  journal: unreadable ({exc})")
    from datagen.run.waves import quota_status

    cells = quota_status(Path(run_dir))
    if cells:  # a run in waves: each cell's accepted / target, rate, cost per row, cost to finish
        lines += ["", cells]
    if (Path(run_dir) / "funnel.md").exists():
        lines.append("")
        lines.append((Path(run_dir) / "funnel.md").read_text(encoding="utf-8").rstrip())
    return "\n".join(lines)
