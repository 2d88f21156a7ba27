"""Point huggingface_hub/datasets at a local fake Hub and a private HF_HOME.

Imported by tests/conftest.py before anything imports huggingface_hub or datasets, because both
read HF_ENDPOINT and HF_HOME at import time.
"""

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="datagen-test-hf-home-"))
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
