"""Point huggingface_hub/datasets at the local fake Hub and a private HF_HOME.

Imported by tests/conftest.py before anything imports huggingface_hub or datasets, because both
read HF_ENDPOINT, HF_HOME and HF_HUB_DISABLE_XET at import time. The fake Hub is bound and serving
from here on (a daemon thread), so HF_ENDPOINT names a port nobody else can take and any test that
reaches for the Hub by accident gets a fast 404 instead of a hang or a real download. Tests that
use it take the `fake_hub` fixture (tests/fakes/hub_fixtures.py), which clears its state.

The user's own Hugging Face login and cache are never touched: HF_HOME is a fresh temp dir and
HF_TOKEN is a fake token the fake Hub accepts.
"""

import atexit
import os
import shutil
import tempfile

from tests.fakes.hub_server import FakeHub

#: The token the fake Hub accepts for writes and private repos.
TEST_HF_TOKEN = "hf_datagen_fake_hub_token"

HUB = FakeHub("127.0.0.1", 0, tokens={TEST_HF_TOKEN}).start()

os.environ["HF_ENDPOINT"] = HUB.url
os.environ["HF_TOKEN"] = TEST_HF_TOKEN
os.environ["HF_HOME"] = _HF_HOME = tempfile.mkdtemp(prefix="datagen-test-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_XET_CACHE",
):
    os.environ.pop(_var, None)
