"""Connecting to Ray: an existing cluster, or a local one started for the run."""
from __future__ import annotations

import os
from contextlib import contextmanager

from ..errors import SemsearchError

# what the workers need from the driver's environment to find the same model
PASS_ENV = ("SEMSEARCH_CACHE",)


def _runtime_env() -> dict:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    return {"env_vars": env} if env else {}


def require_ray():
    try:
        import ray
    except ImportError:
        raise SemsearchError("Ray is not installed: pip install 'semsearch[ray]'") from None
    return ray


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None):
    """Ray for the length of a job: ``address`` ``auto`` / ``ray://host:port`` / a GCS
    address joins a running cluster; None starts a local one bound to 127.0.0.1 (no
    dashboard) and stops it afterwards. A caller that already initialised Ray keeps it."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env=_runtime_env() or None)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise SemsearchError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def resources(ray) -> tuple[float, float]:
    """(CPUs, GPUs) the cluster has."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0)), float(total.get("GPU", 0))
