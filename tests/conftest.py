"""Shared test setup.

Network: pytest-socket (configured in pyproject.toml) lets tests reach 127.0.0.1 only.
Fixtures for the fake servers live in tests/fakes/ and are re-exported here.
"""

from pathlib import Path

import pytest  # noqa: E402

from tests.fakes import hub_env  # noqa: F401  (must run before huggingface_hub/datasets import)
from tests.fakes.hub_fixtures import *  # noqa: F401,F403
from tests.fakes.openai_fixtures import *  # noqa: F401,F403

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder with MOSS fixtures (never copied into the repo)."""
    if not (SHARED / "moss-samples").is_dir():
        pytest.fail(f"missing fixtures: {SHARED}/moss-samples (the repo expects ../shared beside it)")
    return SHARED


@pytest.fixture(scope="session")
def moss_samples(shared_dir) -> list[Path]:
    return sorted((shared_dir / "moss-samples").rglob("*.json"))


@pytest.fixture(autouse=True)
def _forget_judge_formats():
    """The fake teacher is one server per session, scripted anew by each test: what the judge found
    out about an endpoint's response formats in one test must not carry into the next."""
    from datagen.filters.judge_format import SETTLED

    SETTLED.clear()
    yield
    SETTLED.clear()
