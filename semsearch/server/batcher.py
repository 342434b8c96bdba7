"""Dynamic micro-batching: concurrent embedding requests share model runs.

A request tokenises its texts (on the loop when they are few, else in a threadpool thread)
and queues them. A worker thread takes what is queued and plans length-sorted runs under
the token budget (``plan_batches``), runs them, and hands each request its own rows as soon
as all of them are done. Sorting many requests' texts together is what saves most on a
CPU, where a run costs its padded tokens. With several workers (on a CPU, one per core,
each run on one thread: no intra-op hand-offs, which stall a whole run when another process
takes a core), a worker takes its fair share of the queue: all of it when the others are
busy, a half when one other is idle, and so on. Before taking, it waits up to
``max_wait_ms`` after the oldest queued text, but only while company is due (requests being
tokenised, or fewer queued than recent runs held) and a run's budget is not yet waiting: a
lone client pays no wait, and on a loaded machine a timed sleep costs a whole scheduler
time slice. The event loop only queues and awaits; ONNX Runtime runs in the workers. The
queue is bounded in texts: past the bound a request gets Overloaded (503 + Retry-After),
never unbounded memory.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..embedder import Tokens, bucket, plan_batches
from ..errors import Overloaded

log = logging.getLogger("semsearch.server")
INLINE_CHARS = 2_000  # requests this small are tokenised on the event loop


class _Request:
    __slots__ = ("tokens", "future", "loop", "out", "left", "arrived")

    def __init__(self, tokens, future, loop, dim):
        self.tokens, self.future, self.loop = tokens, future, loop
        self.out = np.empty((len(tokens), dim), np.float32)
        self.left = len(tokens)
        self.arrived = time.monotonic()


def _hand_over(settled: list[tuple[_Request, object, BaseException | None]]) -> None:
    """Wake each event loop once for all the requests a run finished (one wake-up per
    request cost a context switch each on the loaded machine)."""
    by_loop: dict = {}
    for item in settled:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop is gone: nobody is waiting any more
            pass


def _settle(items) -> None:
    for request, result, error in items:
        if not request.future.done():  # a client that went away cancelled it
            if error is not None:
                request.future.set_exception(error)
            else:
                request.future.set_result(result)


class MicroBatcher:
    def __init__(self, embedder, settings, metrics):
        self.embedder, self.settings, self.metrics = embedder, settings, metrics
        self.budget = settings.max_batch_tokens or embedder.max_batch_tokens
        self.rows_cap = settings.max_batch_size or embedder.max_batch_size
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._pending_tokens = self._pending_texts = 0
        self._queued = 0  # texts waiting or running
        self._arriving = 0  # requests being tokenised
        self._peers = 1  # requests per run lately (a max that decays by one a run)
        self._closed = False
        self._idle = 0  # workers waiting for work
        self._threads = [threading.Thread(target=self._work, name=f"semsearch-batcher-{i}", daemon=True)
                         for i in range(settings.workers or 1)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Refuse new work, finish what is queued, stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and not self._closed

    async def embed(self, texts: list[str], kind: str | None = None) -> tuple[np.ndarray, int]:
        """(vectors, tokens embedded) for ``texts``, their rows computed in shared model runs."""
        inline = sum(map(len, texts)) <= INLINE_CHARS  # microseconds: cheaper than a thread hop
        if inline:
            tokens = self.embedder.tokenize(texts, kind)
        else:
            with self._cond:
                self._arriving += 1
            try:
                tokens = await run_in_threadpool(self.embedder.tokenize, texts, kind)
            except BaseException:
                with self._cond:
                    self._arriving -= 1
                raise
        loop = asyncio.get_running_loop()
        request = _Request(tokens, loop.create_future(), loop, self.embedder.dim)
        with self._cond:  # one lock and one notify per request
            if not inline:
                self._arriving -= 1
            if self._closed:
                raise Overloaded("the server is shutting down")
            if self._queued + len(tokens) > self.settings.max_queue:
                raise Overloaded(f"the embedding queue is full ({self._queued:,} texts); retry in a moment")
            self._pending.append(request)
            self._pending_tokens += int(tokens.lengths.sum())
            self._pending_texts += len(tokens)
            self._queued += len(tokens)
            self.metrics.queue.set(self._queued)
            self._cond.notify()
        return await request.future, int(tokens.lengths.sum())

    # -- the worker threads --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    self._idle -= 1
                    return  # closed and drained
                deadline = self._pending[0].arrived + self.settings.max_wait_ms / 1000
                while (self._company_due() and not self._closed and not self._full()
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
                self._idle -= 1
                taken = self._take(math.ceil(self._pending_texts / (self._idle + 1)))
                self._peers = max(len(taken), self._peers - 1)
                if self._pending:
                    self._cond.notify()  # an idle worker takes the rest
            try:
                self._run(taken)
            except BaseException as exc:  # never strand a request; log what was not a model error
                log.exception("embedding batch failed")
                _hand_over([(request, None, exc) for request in taken if request.left])
            finally:
                with self._cond:
                    self._queued -= sum(len(r.tokens) for r in taken)
                    self.metrics.queue.set(self._queued)

    def _take(self, share: int) -> list[_Request]:
        """Whole requests from the front of the queue, about ``share`` texts (at least one)."""
        n = texts = tokens = 0
        while n < len(self._pending) and (n == 0 or texts < share):
            texts += len(self._pending[n].tokens)
            tokens += int(self._pending[n].tokens.lengths.sum())
            n += 1
        taken, self._pending = self._pending[:n], self._pending[n:]
        self._pending_texts -= texts
        self._pending_tokens -= tokens
        return taken

    def _company_due(self) -> bool:
        """Requests still being tokenised, or fewer queued than recent runs held: clients
        whose answers just went out tend to ask again within a moment, and one run for all
        of them beats two half runs taking turns."""
        return bool(self._arriving) or len(self._pending) < self._peers

    def _full(self) -> bool:
        return self._pending_tokens >= self.budget or self._pending_texts >= self.rows_cap

    def _run(self, taken: list[_Request]) -> None:
        taken = [r for r in taken if not r.future.done()]  # clients that left cost no model time
        if not taken:
            return
        tokens = Tokens.concat([r.tokens for r in taken])
        owner = np.repeat(np.arange(len(taken)), [len(r.tokens) for r in taken])
        row = np.concatenate([np.arange(len(r.tokens)) for r in taken])
        for rows in plan_batches(tokens.lengths, self.budget, self.rows_cap, self.embedder.widths,
                                 self.embedder.run_cost):
            if all(taken[i].future.done() for i in np.unique(owner[rows])):
                continue  # everyone waiting for these rows left (or failed) meanwhile
            batch = tokens.select(rows)
            settled = []
            try:
                vectors = self.embedder.run(batch, self.rows_cap, self.budget)
            except Exception as exc:  # e.g. ModelError on non-finite output: fail these requests only
                for i in np.unique(owner[rows]):
                    if taken[i].left:
                        taken[i].left = 0
                        settled.append((taken[i], None, exc))
                _hand_over(settled)
                continue
            self.metrics.ran(len(rows), len(rows) * bucket(int(batch.lengths.max()), self.embedder.widths))
            for i in np.unique(owner[rows]):
                request = taken[i]
                if not request.left:
                    continue  # failed in an earlier run
                mine = owner[rows] == i
                request.out[row[rows[mine]]] = vectors[mine]
                request.left -= int(mine.sum())
                if not request.left:
                    self.metrics.embedded(len(request.tokens), int(request.tokens.lengths.sum()),
                                          request.tokens.truncated)
                    settled.append((request, request.out, None))
            _hand_over(settled)


class Unbatched:
    """The same interface without merging: each request embeds its own texts in a
    threadpool thread, as a plain FastAPI app would (the benchmark's baseline)."""

    def __init__(self, embedder, settings, metrics):
        self.embedder, self.settings, self.metrics = embedder, settings, metrics
        self.alive = True

    def start(self) -> None:
        pass

    def close(self) -> None:
        self.alive = False

    async def embed(self, texts: list[str], kind: str | None = None) -> tuple[np.ndarray, int]:
        s = self.settings
        vectors, tokens, truncated = await run_in_threadpool(
            self.embedder.embed_counted, texts, kind=kind, batch_size=s.max_batch_size,
            max_batch_tokens=s.max_batch_tokens)
        self.metrics.embedded(len(texts), tokens, truncated)
        return vectors, tokens
