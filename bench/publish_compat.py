"""Does a published datagen folder load in the `datasets` versions trainers pin?

    .venv/bin/python bench/publish_compat.py                       # datasets 3.6.0 and 4.0.0
    .venv/bin/python bench/publish_compat.py --versions 3.6.0      # one version (about a minute)
    .venv/bin/python bench/publish_compat.py --keep-venvs DIR      # reuse venvs between runs

Builds a dataset folder with this checkout (the publish tests' sample run: both configs, both
splits, scores, tool calls), then for each version creates a throwaway venv, `pip install`s
`datasets==VERSION` from the package index (pip's cache makes reruns quick) and, in that venv:
`load_dataset(folder)` with no config name (the card's default config), every config and split by
name, and the parquet files alone (`load_dataset("parquet", ...)`, the way LLaMA-Factory points at
files). It asserts the row counts the build reported, the column names, and that the OpenAI
`messages` come back as role/content structs. The installed `datasets` is checked the same way.

Needs the package index (the test suite never leaves 127.0.0.1, so this check lives here). Prints
one line per version, `datasets=V default_rows=N configs=C load_s=T venv_s=T ok=1`, and exits 1 if
any version fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.publish.build import build_dataset_folder  # noqa: E402
from tests.publish.runs import make_run_dir  # noqa: E402

# Runs inside the venv under test: only the standard library and `datasets`.
CHECK = r"""
import json, sys, time, tempfile
import datasets

folder, expected = sys.argv[1], json.loads(sys.argv[2])
counts, columns = expected["counts"], expected["columns"]
cache = tempfile.mkdtemp()
t = time.perf_counter()

def check(ds, config, split):
    want = counts[config][split]
    assert ds.num_rows == want, f"{config}/{split}: {ds.num_rows} rows, expected {want}"
    assert ds.column_names == columns, f"{config}/{split}: columns {ds.column_names}"
    first = ds[0]["messages"][0]
    assert first["role"] == "system" and isinstance(first["content"], str), first

default = next(iter(counts))
ds = datasets.load_dataset(folder, split="train", cache_dir=cache)  # no config name: the default one
check(ds, default, "train")
default_rows = ds.num_rows
for config, splits in counts.items():
    for split in splits:
        check(datasets.load_dataset(folder, config, split=split, cache_dir=cache), config, split)
        files = {split: f"{folder}/data/{config}/{split}-*.parquet"}
        check(datasets.load_dataset("parquet", data_files=files, split=split, cache_dir=cache), config, split)
print(json.dumps({"version": datasets.__version__, "default_rows": default_rows, "configs": len(counts),
                  "load_s": round(time.perf_counter() - t, 2)}))
"""


def build_folder(root: Path) -> tuple[Path, dict]:
    run = make_run_dir(root / "run")
    folder = build_dataset_folder(run, root / "dataset")
    import pyarrow.parquet as pq

    first = next(p for p in sorted(folder.path.glob("data/*/*.parquet")))
    columns = pq.read_schema(first).names
    return folder.path, {"counts": folder.counts, "columns": columns}


def check_in(python: str, folder: Path, expected: dict) -> dict:
    proc = subprocess.run(
        [python, "-c", CHECK, str(folder), json.dumps(expected)], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_venv(where: Path, version: str) -> tuple[str, float]:
    python = where / "bin" / "python"
    t = time.perf_counter()
    if not python.exists():
        venv.create(where, with_pip=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"datasets=={version}"],
        check=True,
    )
    return str(python), time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="+", default=["3.6.0", "4.0.0"])
    ap.add_argument(
        "--keep-venvs", metavar="DIR", help="create (or reuse) the venvs here instead of a temp dir"
    )
    args = ap.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="datagen-compat-") as tmp:
        folder, expected = build_folder(Path(tmp))
        venvs = Path(args.keep_venvs) if args.keep_venvs else Path(tmp) / "venvs"
        targets: list[tuple[str, str | None]] = [("installed", sys.executable)]
        targets += [(v, None) for v in args.versions]
        for version, python in targets:
            venv_s = 0.0
            try:
                if python is None:
                    python, venv_s = make_venv(venvs / f"datasets-{version}", version)
                got = check_in(python, folder, expected)
                print(
                    f"datasets={got['version']} default_rows={got['default_rows']} configs={got['configs']} "
                    f"load_s={got['load_s']} venv_s={venv_s:.1f} ok=1",
                    flush=True,
                )
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                failed += 1
                print(f"datasets={version} ok=0 error={str(exc)!r}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
