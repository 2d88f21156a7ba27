"""One real Ray cluster for the whole test session: a head and a second node, both on 127.0.0.1,
one CPU each, small object stores, no dashboard. The second node also says it has one GPU, so the
check's GPU actors have somewhere to be placed (nothing runs on a GPU here).

Every test in tests/ray shares it (starting one costs ~10 s); a test that needs a clean slate
makes its own named actors and files."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Ray turns a 127.0.0.1 address into the machine's outward IP unless clusters are "disabled"
# (the switch meant for laptops): with it off, every node, the driver and the GCS stay on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray  # noqa: E402  (the ray extra: make test installs it)

_NODE = {"num_cpus": 1, "object_store_memory": 96 * 2**20, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[object]:
    """A head plus one worker node (with a GPU resource) on 127.0.0.1; the test process is its driver."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        shutdown_at_exit=True,
        head_node_args={**_NODE, "include_dashboard": False, "temp_dir": str(tmp_path_factory.mktemp("ray"))},
    )
    cluster.add_node(**_NODE, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


from tests.moss.conftest import moss_records, tiny_moss  # noqa: E402,F401  (fixtures, re-exported)
