"""Dynamic micro-batching: concurrent embedding requests share model runs.

A request tokenises its texts (on the loop when they are few, else in a threadpool thread)
and queues them. A worker thread takes what is queued and plans length-sorted runs under the
token budget (``plan_batches``), runs them, and hands each request its own rows as soon as
all of them are done. Sorting many requests' texts together is what saves most on a CPU,
where a run costs its padded tokens. With several workers (on a CPU, one per core, each run
on one thread: no intra-op hand-offs, which stall a whole run when another process takes a
core), a worker takes its fair share of the queue's tokens: all of them when the others are
busy, a half when one other is idle, and so on, and at most a model run's worth of any one
request (its longest rows first), which then goes to the back of the queue: idle workers
share a big request run by run, requests queued behind it wait for a run, not for all of it,
and a request is answered when its last rows are. Before taking, it waits up to
``max_wait_ms`` after the oldest queued text, but only while company is due (requests being
tokenised, or fewer queued than recent runs held) and a run's budget is not yet waiting: a
lone client pays no wait, and on a loaded machine a timed sleep costs a whole scheduler time
slice. The event loop only queues and awaits; ONNX Runtime runs in the workers. The queue is
bounded in texts: past the bound a request gets Overloaded (503 + Retry-After), never
unbounded memory.
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
    __slots__ = ("tokens", "future", "loop", "out", "left", "order", "next", "arrived")

    def __init__(self, tokens, future, loop, dim):
        self.tokens, self.future, self.loop = tokens, future, loop
        self.out = np.empty((len(tokens), dim), np.float32)
        self.left = len(tokens)  # rows not yet embedded; 0 once answered (or failed), under the lock
        self.order = np.argsort(-tokens.lengths, kind="stable")  # rows are taken longest first
        self.next = 0  # order[:next] are taken by workers
        self.arrived = time.monotonic()

    @property
    def waiting(self) -> bool:
        """Someone still waits for its rows (a stale read costs model time, never a wrong answer)."""
        return bool(self.left) and not self.future.done()


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
        self._cond = threading.Condition()  # guards the queue and each request's ``left``
        self._pending: list[_Request] = []  # partly taken ones at the back
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
                taken = self._take(math.ceil(self._pending_tokens / (self._idle + 1)))
                self._peers = max(len(taken), self._peers - 1)
                if self._pending:
                    self._cond.notify()  # an idle worker takes the rest
            try:
                self._run(taken)
            except BaseException as exc:  # never strand a request; log what was not a model error
                log.exception("embedding batch failed")
                self._fail([request for request, _ in taken], exc)
            finally:
                with self._cond:
                    self._queued -= sum(len(rows) for _, rows in taken)
                    self.metrics.queue.set(self._queued)

    def _take(self, share: int) -> list[tuple[_Request, np.ndarray]]:
        """``(request, rows)`` pairs from the front of the queue, about ``share`` tokens in all
        (at least one row), at most a model run's worth from each request: a request left
        with rows goes to the back, so idle workers share a big request run by run and the
        requests behind it wait for a run, not for all of it."""
        taken, texts, tokens, n = [], 0, 0, 0
        for request in self._pending:
            if taken and tokens >= share:
                break
            n += 1
            rows = request.order[request.next:request.next + self.rows_cap]
            sums = np.cumsum(request.tokens.lengths[rows])  # similar lengths: they fill one run
            rows = rows[:int(np.searchsorted(sums, min(share - tokens, self.budget))) + 1]
            request.next += len(rows)
            taken.append((request, rows))
            texts, tokens = texts + len(rows), tokens + int(sums[len(rows) - 1])
        self._pending = self._pending[n:] + [r for r in self._pending[:n] if r.next < len(r.tokens)]
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

    def _fail(self, requests: list[_Request], error: BaseException) -> None:
        """Answer ``requests`` with ``error``, those not answered yet (by another worker too)."""
        with self._cond:
            failed = [r for r in requests if r.left]
            for request in failed:
                request.left = 0
        _hand_over([(request, None, error) for request in failed])

    def _run(self, taken: list[tuple[_Request, np.ndarray]]) -> None:
        taken = [s for s in taken if s[0].waiting]  # clients that left cost no model time
        if not taken:
            return
        tokens = Tokens.concat([r.tokens.select(rows) for r, rows in taken])
        owner = np.repeat(np.arange(len(taken)), [len(rows) for _, rows in taken])
        row = np.concatenate([rows for _, rows in taken])
        for rows in plan_batches(tokens.lengths, self.budget, self.rows_cap, self.embedder.widths,
                                 self.embedder.run_cost):
            ids = np.unique(owner[rows])
            if not any(taken[i][0].waiting for i in ids):
                continue  # everyone waiting for these rows left (or failed) meanwhile
            batch = tokens.select(rows)
            try:
                vectors = self.embedder.run(batch, self.rows_cap, self.budget)
            except Exception as exc:  # e.g. ModelError on non-finite output: fail these requests only
                self._fail([taken[i][0] for i in ids], exc)
                continue
            self.metrics.ran(len(rows), len(rows) * bucket(int(batch.lengths.max()), self.embedder.widths))
            settled = []
            with self._cond:  # other workers may be finishing other slices of these requests
                for i in ids:
                    request, mine = taken[i][0], owner[rows] == i
                    if request.left:  # 0: failed meanwhile
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
