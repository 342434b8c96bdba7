"""Start a server: check exposure, load the model once, open the collections on it, run uvicorn.

uvicorn turns SIGTERM and SIGINT into a graceful shutdown: it stops accepting connections,
lets in-flight requests finish (up to ``drain_seconds``), then the app's lifespan drains the
batcher and closes the collections.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

from ..errors import ModelError
from .settings import Settings, check_exposure

log = logging.getLogger("semsearch.server")


def model_plan(device: str, threads: int | None, workers: int | None) -> tuple[int | None, int]:
    """(ONNX Runtime threads a run, runs side by side). On a CPU, one single-threaded run
    per core: runs over all cores stall whenever another process takes one of them (on the
    shared 2-core machine, a third of the single-threaded runs' throughput:
    benchmarks/README.md). On a GPU, one run at a time with the runtime's own threads."""
    from ..runtime import cpu_cores, cuda_unusable

    if device != "cpu" and cuda_unusable() is None:
        return threads, workers or 1
    cores = cpu_cores()
    if threads is None:
        threads = max(1, cores // workers) if workers else 1
    return threads, workers or max(1, cores // threads)


def serve(collections=(), home=None, host: str = "127.0.0.1", port: int = 8000, model=None,
          variant: str = "fp32", device: str = "auto", threads: int | None = None,
          settings: Settings = Settings(), insecure: bool = False, access_log: bool = False,
          drain_seconds: float = 30.0) -> None:
    """Serve ``collections`` (names or paths; none: every collection under ``home``)."""
    check_exposure(host, settings.api_keys, insecure)  # before anything slow
    import uvicorn

    from ..collection import Collection, list_collections
    from ..embedder import Embedder
    from .app import create_app

    threads, workers = model_plan(device, threads, settings.workers)
    settings = dataclasses.replace(settings, workers=workers)
    embedder = Embedder.load(model, variant=variant, device=device, threads=threads)
    opened = {}
    try:
        for name in collections or list_collections(home):
            try:
                coll = Collection.open(name, home=home, device=device, embedder=embedder)
            except ModelError as exc:
                if collections:
                    raise
                log.warning("not serving %s: %s", name, exc.one_line())
                continue
            opened[coll.name] = coll
        app = create_app(embedder, opened, settings)
    except BaseException:
        for coll in opened.values():
            coll.close()
        raise
    print(f"serving {embedder.manifest['name']} ({variant}, {embedder.providers[0]}) and "
          f"{len(opened)} collection(s) [{', '.join(opened)}] on http://{host}:{port}"
          f"{'' if settings.api_keys else ' without an API key'}", file=sys.stderr, flush=True)
    # keep-alive 30 s, not uvicorn's 5: a client pool reusing a connection the server is
    # closing gets a reset (the benchmark's one error at 64 clients)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info",
                timeout_graceful_shutdown=drain_seconds, timeout_keep_alive=30, server_header=False)
