"""Parametrise `sample_path` over the 48 MOSS sample files in ../shared/moss-samples.

The files are read in place (CC BY-NC: never copied into the repo). `test_all_samples_present`
fails loudly if the folder is missing, so an empty parameter set can never pass silently.
"""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "moss-samples"


def pytest_generate_tests(metafunc):
    if "sample_path" in metafunc.fixturenames:
        paths = sorted(SAMPLES.rglob("*.json"))
        metafunc.parametrize("sample_path", paths, ids=[p.stem for p in paths])
