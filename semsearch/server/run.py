"""Start a server: check exposure, take the port, load the model once, open the collections
on it (served.py), run uvicorn on the socket already bound.

uvicorn turns SIGTERM and SIGINT into a graceful shutdown: it stops accepting connections,
lets in-flight requests finish (up to ``drain_seconds``), then the app's lifespan drains the
batcher and closes the collections.
"""
from __future__ import annotations

import dataclasses
import errno
import socket
import sys

from .. import validation
from ..errors import Conflict, InvalidInput, SemsearchError
from .settings import Settings, check_exposure


def model_plan(device: str, threads: int | None, workers: int | None) -> tuple[int | None, int]:
    """(ONNX Runtime threads a run, runs side by side). On a CPU, one single-threaded run
    per core: runs over all cores stall whenever another process takes one of them (on the
    shared 2-core machine, a third of the single-threaded runs' throughput:
    benchmarks/README.md). On a GPU, one run at a time (runtime.Session gives it one CPU thread
    unless ``threads`` says otherwise)."""
    from ..runtime import cpu_cores, cuda_unusable

    if device != "cpu" and cuda_unusable() is None:
        return threads, workers or 1
    cores = cpu_cores()
    if threads is None:
        threads = max(1, cores // workers) if workers else 1
    return threads, workers or max(1, cores // threads)


BACKLOG = 2048  # uvicorn's


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as uvicorn would bind them),
    taken before the model loads so a busy port or a bad host is one line in a second.
    Port 0 picks a free port, the same one on each address."""
    try:
        addresses = dict.fromkeys((family, addr[:2]) for family, _, _, _, addr in socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc} "
                           "(give an address or name of this machine with --host)") from None
    socks: list[socket.socket] = []
    try:
        for family, (ip, _) in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ip, port))
            sock.listen(BACKLOG)
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise bind_error(exc, host, port) from None
    return socks


def bind_error(exc: OSError, host: str, port: int) -> SemsearchError:
    if exc.errno == errno.EADDRINUSE:
        return Conflict(f"port {port} on {host} is already in use; pick another with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidInput(f"cannot listen on {host}: it is not an address of this machine "
                            "(give one with --host, e.g. 127.0.0.1 or 0.0.0.0)")
    if exc.errno == errno.EACCES:
        return InvalidInput(f"not allowed to listen on port {port} of {host} (ports below 1024 need "
                            "privileges); pick another with --port")
    return SemsearchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def serve(collections=(), home=None, host: str = "127.0.0.1", port: int = 8000, model=None,
          variant: str = "fp32", device: str = "auto", threads: int | None = None,
          settings: Settings = Settings(), insecure: bool = False, access_log: bool = False,
          drain_seconds: float = 30.0, watch: bool = False, every: float | None = None) -> None:
    """Serve ``collections`` (names or paths; none: every collection under ``home``, now and later);
    ``watch``: keep those with sources in sync with them, polling every ``every`` seconds (watching.py)."""
    check_exposure(host, settings.api_keys, insecure)  # before anything slow
    if watch:
        from ..watch import DEFAULT_EVERY, MAX_EVERY, MIN_EVERY
        every = validation.finite(DEFAULT_EVERY if every is None else every, "every (seconds)", MIN_EVERY, MAX_EVERY)
    socks = listen(host, port)
    port = socks[0].getsockname()[1]
    import uvicorn

    from ..embedder import Embedder
    from .app import create_app
    from .protocol import http_protocol
    from .served import Served

    served = None
    try:
        threads, workers = model_plan(device, threads, settings.workers)
        settings = dataclasses.replace(settings, workers=workers)
        embedder = Embedder.load(model, variant=variant, device=device, threads=threads)
        served = Served(embedder, collections, home=home, device=device)
        app = create_app(embedder, served, settings, watch=every if watch else None)
    except BaseException:
        if served is not None:
            served.close()
        for sock in socks:
            sock.close()
        raise
    opened = served.serving()
    print(f"serving {embedder.manifest['name']} ({variant}, {embedder.providers[0]}) and "
          f"{len(opened)} collection(s) [{', '.join(opened)}]{'' if collections else ' (and any made later)'}"
          f" on http://{host}:{port}"
          f"{'' if settings.api_keys else ' without an API key'}", file=sys.stderr, flush=True)
    # keep-alive 30 s, not uvicorn's 5: a client pool reusing a connection the server is
    # closing gets a reset (the benchmark's one error at 64 clients); no WebSockets (no route
    # takes one, and an upgraded connection would leave the head timer behind)
    config = uvicorn.Config(app, access_log=access_log, log_level="info", timeout_graceful_shutdown=drain_seconds,
                            timeout_keep_alive=30, server_header=False, limit_concurrency=settings.max_connections,
                            http=http_protocol(settings.header_timeout, settings.max_client_connections,
                                               closed_early=app.state.metrics.closed_early), ws="none")
    try:
        uvicorn.Server(config).run(sockets=socks)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn drained and re-raised it; a clean stop, as uvicorn.run ends
        pass
