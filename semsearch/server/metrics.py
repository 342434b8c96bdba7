"""Prometheus metrics, in a registry of the app's own (two apps in one process never clash)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Histogram(
            "semsearch_http_request_duration_seconds", "HTTP requests by route and status, and their latency",
            ["method", "route", "status"], registry=r,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.errors = Counter("semsearch_errors_total", "Error responses by error type", ["type"], registry=r)
        self.batch_texts = Histogram("semsearch_batch_texts", "Texts per model run", registry=r,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.batch_tokens = Histogram("semsearch_batch_padded_tokens", "Padded tokens per model run", registry=r,
                                      buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
        self.queue = Gauge("semsearch_queue_texts", "Texts queued or being embedded", registry=r)
        self.texts = Counter("semsearch_embedded_texts_total", "Texts embedded", registry=r)
        self.tokens = Counter("semsearch_embedded_tokens_total", "Tokens embedded (no padding)", registry=r)
        self.truncated = Counter("semsearch_truncated_texts_total", "Texts cut at the model's max length",
                                 registry=r)
        self.closed = Counter("semsearch_connections_closed_total", "Connections the server closed before "
                              "a request was read: head_timeout (--header-timeout), client_cap "
                              "(--max-client-connections)", ["reason"], registry=r)
        self.watch_passes = Counter("semsearch_watch_passes_total", "Sync passes of serve --watch, by collection",
                                    ["collection"], registry=r)
        self.watch_documents = Counter("semsearch_watch_documents_total", "Documents serve --watch's passes "
                                       "added, updated or removed, by collection", ["collection", "change"],
                                       registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def embedded(self, texts: int, tokens: int, truncated: int) -> None:
        self.texts.inc(texts)
        self.tokens.inc(tokens)
        self.truncated.inc(truncated)

    def closed_early(self, reason: str) -> None:
        self.closed.labels(reason).inc()

    def watched(self, collection: str, report) -> None:
        self.watch_passes.labels(collection).inc()
        for change in ("added", "updated", "removed"):
            self.watch_documents.labels(collection, change).inc(getattr(report, change))

    def ran(self, texts: int, padded_tokens: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(padded_tokens)


class RequestMetrics:
    """ASGI middleware: one latency observation per request, labelled by the route's template
    (not the raw path, so /v1/collections/{name} stays one series) and the status sent."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "other")  # the router sets it in place
            self.metrics.requests.labels(scope["method"], route, str(status[0])).observe(
                time.perf_counter() - started)
