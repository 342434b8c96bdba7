"""Connecting to Ray: an existing cluster, or a local one started for the run."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from contextlib import contextmanager

from ..errors import InvalidInput, SemsearchError

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
    """Ray for the length of a job: ``address`` ``auto`` or a GCS address (host:port)
    joins a running cluster; None starts a local one bound to 127.0.0.1 (no dashboard)
    and stops it afterwards, even where `ray start` runs a cluster or RAY_ADDRESS names
    one (plain ray.init() would join that; joining is what ``auto`` says). A caller that
    already initialised Ray keeps it. Not ``ray://``: Ray Data fails through Ray Client
    ("'Worker' object has no attribute 'core_worker'", Ray 2.60), after a job has started."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if (os.environ.get("RAY_ADDRESS", "") if address == "auto" else address or "").startswith("ray://"):
        raise InvalidInput(f"cannot run on Ray at {address}: Ray Data, which semsearch's jobs run on, does "
                           "not work through Ray Client (ray://); run semsearch on a node of the cluster "
                           "with --ray auto, or give the cluster's GCS address (host:6379)")
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env=_runtime_env() or None)
    if address:
        check_reachable(address)  # before the try: a malformed address is the caller's (exit 2)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            with without_auth_notice():
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise SemsearchError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None
    try:
        with terminate_as_interrupt():
            yield ray
    finally:
        ray.shutdown()


@contextmanager
def terminate_as_interrupt():
    """SIGTERM (a scheduler stopping the job, `timeout`, `kill`) taken as Ctrl-C: the job
    unwinds as on Ctrl-C (Ray shut down, what was committed kept, 'interrupted' from the
    CLI). Ray's driver otherwise dies on it printing a six-line C stack dump
    ('*** SIGTERM received ... PC: @ ...'). Only where Python can handle signals (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def without_auth_notice():
    """Ray prints "Token authentication is enabled for this Ray cluster..." whenever it
    starts a local cluster with its default (RAY_AUTH_MODE unset): news to nobody on every
    run. Setting RAY_AUTH_MODE=token ourselves would not do (the imported ray has read its
    config by then); so drop that one record, keeping the logger's others."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = NoticeFilter()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


class NoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_warn_token_auth_enabled"


PROBE_SECONDS = 5.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9)  # + an empty SETTINGS frame


def check_reachable(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Fail in seconds on a GCS address (host:port) where nothing listens or where the
    listener is not a gRPC server: ray.init retries such an address for minutes. A Ray
    GCS answers the HTTP/2 preface with a SETTINGS frame; anything else is not Ray.
    ``auto`` is looked up as ray.init looks it up; TLS clusters are left to ray.init."""
    from ray._private.services import canonicalize_bootstrap_address

    given = address
    if address == "auto" and "://" not in os.environ.get("RAY_ADDRESS", ""):
        try:  # as ray.init finds it: RAY_ADDRESS, the last `ray start` here, any Ray running here
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:  # Ray's own text names a --address flag semsearch does not have
            raise SemsearchError("no Ray cluster found at auto (none runs on this machine and RAY_ADDRESS "
                                 "is not set): start one with `ray start --head` or give its address, or let "
                                 "semsearch start a local Ray for the run (`index ... --ray` with no address, "
                                 "`build` without --ray)") from None
        except ValueError:
            return  # ray.init says what is wrong with RAY_ADDRESS
    if not address or "://" in address or os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
        return
    try:
        host, port = canonicalize_bootstrap_address(address).rsplit(":", 1)
        if not 0 < (port := int(port)) < 65536:
            raise ValueError(port)
    except (ValueError, AttributeError):
        raise InvalidInput(f"cannot run on Ray at {given!r}: give auto or the cluster's GCS address "
                           "as host:port (host:6379)") from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9 and (got := s.recv(9 - len(head))):
                head += got
    except OSError as exc:
        where = given if given.startswith(f"{host}:") else f"{given} ({host}:{port})"
        raise SemsearchError(f"cannot connect to Ray at {where}: {exc.strerror or exc}") from None
    if len(head) < 9 or head[3] != 0x04:
        raise SemsearchError(f"cannot connect to Ray at {given}: what listens there is not a Ray cluster "
                             "(no gRPC answer)")


def resources(ray) -> tuple[float, float]:
    """(CPUs, GPUs) the cluster has."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0)), float(total.get("GPU", 0))
