"""pytest fixtures for the fake Hugging Face Hub server (see hub_server.py and hub_env.py)."""

from collections.abc import Iterator

import pytest

from tests.fakes.hub_env import HUB, TEST_HF_TOKEN
from tests.fakes.hub_server import FakeHub

__all__ = ["fake_hub", "hf_token"]


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """The fake Hub at HF_ENDPOINT, serving, with no repos and an empty request log."""
    HUB.reset()
    yield HUB


@pytest.fixture
def hf_token() -> str:
    """The token the fake Hub accepts (also exported as HF_TOKEN)."""
    return TEST_HF_TOKEN
