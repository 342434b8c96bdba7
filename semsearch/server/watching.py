"""`semsearch serve --watch`: the served collections kept in step with their sources while
the server answers (what `semsearch index --watch` does for one collection, watch.py).

Each collection served at start that has sources (Collection.sources) gets one watch per
index run of them (collection.source_runs: a run per selection), each watch.watch_files on
a thread of its own, on the server's loaded model (``embedder=``: no second model). A thread
a watch, not one for all: watch_files is a blocking poll loop, and an idle poll is a stat a
file, so idle threads cost next to nothing. Embedder.embed is thread-safe (ONNX Runtime's
run is; nothing is mutated), so a pass embeds on its own thread beside the batcher's runs:
on a CPU one core at the default --threads 1, as a batcher worker's run; passes of several
watches at once take a core each. Collections made after the start, or without sources
(`add` only), are served and not watched.

A watch writes through a Collection of its own on the same folder (watch_files opens it):
it and the server's requests exclude each other by the writer lock file, as two processes
do (tests/test_serve_watch.py), and a search sees a pass's writes from the store. That
Collection holds its own copy of the in-memory index.

A pass that fails (busy past the lock's wait and a file gone mid-pass are retried by
watch_files itself) is said in one line, and the watch starts again after a wait that
doubles up to MAX_BACKOFF (a source missing at the start is retried so too), with a full
pass (as `index`: unchanged files are not embedded). A collection removed (`semsearch rm`)
ends its watches.
"""
from __future__ import annotations

import logging
import sys
import threading
import time

from ..collection import STORE_FILE, source_runs
from ..errors import NoSuchCollection, SemsearchError
from ..watch import watch_files

log = logging.getLogger("semsearch.server")
MAX_BACKOFF = 60.0  # seconds between tries of a watch whose passes keep failing (each a full pass)
STOP_WAIT = 30.0  # seconds shutdown waits for a pass to reach its next write


class Watch:
    """One watch_files over one run of a collection's sources, on a thread."""

    def __init__(self, name, path, run: dict, every: float, embedder, metrics, stop: threading.Event):
        self.name, self.path, self.run, self.every = name, path, run, every
        self.embedder, self.metrics, self.stop = embedder, metrics, stop
        self.passes, self.last_pass, self.error = 0, None, None
        self.coll = None  # the watch's own Collection, once open (closed at shutdown)
        self.thread = threading.Thread(target=self._loop, name=f"semsearch-watch-{name}", daemon=True)

    def _loop(self) -> None:
        wait = self.every
        while not self.stop.is_set():
            if not (self.path / STORE_FILE).is_file():  # removed: a watch must not make it anew
                say(f"{self.name} was removed; not watching it any more")
                return
            before = self.passes
            try:
                watch_files(self.path, self.run["paths"], every=self.every, stop=self.stop, on_pass=self._passed,
                            on_open=self._opened, glob=self.run["glob"], exclude=self.run["exclude"],
                            gitignore=self.run["gitignore"], embedder=self.embedder)
                return  # stopped
            except NoSuchCollection:
                if not self.stop.is_set():
                    say(f"{self.name} was removed; not watching it any more")
                return
            except Exception as exc:  # noqa: BLE001 - a failed pass must not end the watch, nor the server
                if self.stop.is_set():  # closed under it at shutdown
                    return
                if self.passes > before:  # it had been passing: the backoff begins again
                    wait = self.every
                line = exc.one_line() if isinstance(exc, SemsearchError) else f"{type(exc).__name__}: {exc}"
                if line != self.error:
                    log.warning("watch of %s failed: %s; trying again in %gs", self.name, line, wait)
                self.error = line
            self.stop.wait(wait)
            wait = min(wait * 2, max(MAX_BACKOFF, self.every))

    def _opened(self, coll) -> None:
        self.coll = coll
        if self.stop.is_set():
            coll.close()

    def _passed(self, done) -> None:
        report = done.report
        self.passes, self.last_pass, self.error = self.passes + 1, time.time(), None
        self.metrics.watched(self.name, report)
        if done.changed:
            say(done.line())


class Watches:
    """The watches of a server (none: nothing is watched)."""

    def __init__(self, served, every: float, metrics):
        self.stop = threading.Event()
        self.every = every
        self.all: list[Watch] = []
        self.unwatched: list[str] = []  # served at start without sources
        for name, coll in list(served.open.items()):
            if not coll.sources:
                self.unwatched.append(name)
                continue
            for run in source_runs(coll.path):
                self.all.append(Watch(name, coll.path, run, every, served.embedder, metrics, self.stop))

    def start(self) -> None:
        """In the app's startup, after the server's start line."""
        for name in self.unwatched:
            say(f"not watching {name}: it has no sources (nothing was indexed into it from files)")
        for w in self.all:
            say(f"watching {w.name}: {', '.join(w.run['paths'])} every {w.every:g}s")
            w.thread.start()

    def about(self, name: str) -> dict | None:
        """What GET /v1/collections/NAME says of its watch: None where it is not watched."""
        mine = [w for w in self.all if w.name == name and w.thread.is_alive()]  # not one ended by an rm
        if not mine:
            return None
        last = [w.last_pass for w in mine if w.last_pass is not None]
        return {"every": self.every, "paths": [p for w in mine for p in w.run["paths"]],
                "passes": sum(w.passes for w in mine), "last_pass": max(last) if last else None,
                "error": next((w.error for w in mine if w.error), None)}

    def close(self) -> None:
        """At shutdown, before the served collections close: the watches stop between passes;
        one in a pass has its Collection closed, so the pass ends at its next write (the
        write in progress commits first)."""
        self.stop.set()
        deadline = time.monotonic() + 1.0
        started = [w for w in self.all if w.thread.ident is not None]
        for w in started:  # idle ones return from their wait at once
            w.thread.join(max(0.0, deadline - time.monotonic()))
        for w in started:
            if w.thread.is_alive() and w.coll is not None:
                w.coll.close()
        deadline = time.monotonic() + STOP_WAIT
        for w in started:
            w.thread.join(max(0.0, deadline - time.monotonic()))
            if w.thread.is_alive():
                log.warning("the watch of %s did not stop within %gs", w.name, STOP_WAIT)


def say(line: str) -> None:
    """A line on stderr, as the server's own start line."""
    print(line, file=sys.stderr, flush=True)
