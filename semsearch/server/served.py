"""The collections a server answers for, kept in step with the CLI beside it.

Started with names, it serves those; with none, every collection under its home, one made
there later from its first request on. A collection `semsearch rm` removed (and `index` may
have made anew under its name) is opened again on its next request; until one exists its
404 says it was removed. The replaced Collection is closed once no request uses it, for
searches that took it before the `rm` may still be reading it.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from contextlib import asynccontextmanager

from starlette.concurrency import run_in_threadpool

from ..collection import Collection, list_collections
from ..errors import CollectionError, Conflict, ModelError, NoSuchCollection, Overloaded

log = logging.getLogger("semsearch.server")


class ModelMismatch(Conflict):
    """A collection pinned to another model than the server's: not served here."""


class Served:
    """name -> the open Collection answering for it, opened on a thread when missing or
    replaced (one open at a time); a live one is found with a dict read and a stat."""

    def __init__(self, embedder, names=(), home=None, device: str = "auto"):
        self.embedder, self.home, self.device = embedder, home, device
        self.given: dict[str, str] = {}  # name -> the name or path it was given as; empty: all under home
        self.open: dict[str, Collection] = {}  # name -> its latest Collection (a replaced one until reopened)
        self.users: Counter = Counter()  # Collection -> requests using it now
        self.retired: set[Collection] = set()  # replaced, still in use: closed when the last request ends
        self.closed = False
        self._opening = threading.Lock()
        self._guard = threading.Lock()  # the maps above
        try:
            for name in names or list_collections(home):
                try:
                    coll = self._open(name)
                except (ModelError, CollectionError) as exc:  # one broken collection under home
                    if names:  # stops none of the others; its own requests say what is wrong
                        raise
                    log.warning("not serving %s: %s", name, exc.one_line())
                    continue
                self.open[coll.name] = coll
                if names:
                    self.given[coll.name] = name
        except BaseException:
            self.close()
            raise

    def names(self) -> list[str]:
        """What this server may serve now (reads the home folder when started without names)."""
        return list(self.given) if self.given else list_collections(self.home)

    def serving(self) -> list[str]:
        """The names open now and not removed."""
        with self._guard:
            return [name for name, coll in self.open.items() if self._live(coll)]

    @asynccontextmanager
    async def use(self, name: str):
        """The live Collection served as ``name``, not closed until the block ends."""
        coll = self._lease(name) or await run_in_threadpool(self._reopen, name)
        try:
            yield coll
        finally:
            with self._guard:
                self.users[coll] -= 1
                idle = not self.users[coll] and coll in self.retired
                if not self.users[coll]:
                    del self.users[coll]
                    self.retired.discard(coll)
            if idle:
                await run_in_threadpool(coll.close)

    def close(self) -> None:
        """At shutdown, once requests are done: close every Collection; open none after."""
        with self._opening:
            with self._guard:
                self.closed = True
                colls = [*self.open.values(), *self.retired]
            for coll in colls:
                coll.close()

    def _open(self, given: str) -> Collection:
        return Collection.open(given, home=self.home, device=self.device, embedder=self.embedder)

    @staticmethod
    def _live(coll: Collection) -> bool:
        # closed: its file's inode may be a new store's by now, so replaced() cannot tell
        return not coll.store.closed and not coll.store.replaced()

    def _lease(self, name: str) -> Collection | None:
        with self._guard:
            coll = self.open.get(name)
            if coll is None or not self._live(coll):
                return None
            self.users[coll] += 1
            return coll

    def _reopen(self, name: str) -> Collection:
        """On a thread: open ``name`` (again), leased, unless another request just did."""
        with self._opening:
            if self.closed:
                raise Overloaded("the server is shutting down")
            coll = self._lease(name)
            if coll is not None:
                return coll
            old = self.open.get(name)
            if old is None and name not in self.names():
                raise NoSuchCollection(f"no collection {name!r} is served here "
                                       f"(served: {', '.join(self.serving()) or 'none'})")
            try:
                fresh = self._open(self.given.get(name, name))
            except NoSuchCollection:
                if old is not None:
                    old._check_not_removed()  # its 404 says it was removed while open here
                raise
            except ModelError as exc:
                raise ModelMismatch(f"not serving {name}: {exc.one_line()}") from None
            finally:
                if old is not None:
                    self._retire(old)
            with self._guard:
                self.open[name] = fresh
                self.users[fresh] += 1
            return fresh

    def _retire(self, coll: Collection) -> None:
        """Close a replaced Collection now if no request uses it, else when the last one ends."""
        with self._guard:
            busy = self.users[coll] > 0
            if busy:
                self.retired.add(coll)
        if not busy:
            coll.close()
