"""Ray, optional: `import_ray()` gives the module or one error naming the `ray` extra, and a few
helpers shared by the Ray executor, the global dedup and the shared teacher limits."""

from __future__ import annotations

from typing import Any

from datagen.errors import MissingDependencyError


def import_ray() -> Any:
    """The `ray` module; without it a MissingDependencyError naming `pip install 'datagen[ray]'`."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    return ray


def cluster_cpus(default: int = 1) -> int:
    """CPUs of the Ray cluster this process is connected to (at least 1)."""
    ray = import_ray()
    return max(1, int(ray.cluster_resources().get("CPU", default)))
