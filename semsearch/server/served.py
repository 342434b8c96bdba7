"""The collections a server answers for, kept in step with the CLI beside it.

Started with names, it serves those; with none, every collection under its home, one made
there later from its first request on. A collection `semsearch rm` removed (and `index` may
have made anew under its name) is opened again on its next request; until one exists its
404 says it was removed. The replaced Collection is closed once no request uses it, for
searches that took it before the `rm` may still be reading it. A removed one is let go
within SWEEP_SECONDS even if no request asks for its name again: held, its deleted files
kept their disk space and its index its memory for as long as the server ran (one more
collection's worth for each name a cron job made and removed). A collection pinned to
another model is refused (409) from memory while its store file is the one refused: opening
it anew for every request took milliseconds and the open lock each time.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from contextlib import asynccontextmanager

from starlette.concurrency import run_in_threadpool

from ..collection import STORE_FILE, Collection, collection_path, list_collections
from ..errors import CollectionError, Conflict, ModelError, NoSuchCollection, Overloaded

log = logging.getLogger("semsearch.server")
SWEEP_SECONDS = 2.0  # how often the open collections are checked for a `semsearch rm`
REMEMBERED = 1_024  # removed names whose 404 says so (older ones: 'not served here', as any unknown name)


class ModelMismatch(Conflict):
    """A collection pinned to another model than the server's: not served here."""


class Served:
    """name -> the open Collection answering for it, opened on a thread when missing or
    replaced (one open at a time); a live one is found with a dict read and a stat."""

    def __init__(self, embedder, names=(), home=None, device: str = "auto"):
        self.embedder, self.home, self.device = embedder, home, device
        self.given: dict[str, str] = {}  # name -> the name or path it was given as; empty: all under home
        self.open: dict[str, Collection] = {}  # name -> its latest Collection (a removed one until let go)
        self.users: Counter = Counter()  # Collection -> requests using it now
        self.retired: set[Collection] = set()  # replaced, still in use: closed when the last request ends
        self.removed: dict[str, str] = {}  # name -> why, for a removed one let go before a request asked
        self.refused: dict[str, tuple] = {}  # name -> (its store file's stat_key, why), of another model
        self.closed = False
        self._opening = threading.Lock()
        self._guard = threading.Lock()  # the maps above
        self._stop = threading.Event()
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
        threading.Thread(target=self._sweep, name="semsearch-served-sweep", daemon=True).start()

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
        coll = self._lease(name)
        if coll is None:
            refused = self.refused.get(name)
            if refused is not None and refused[0] == stat_key(self._store_file(name)):
                raise ModelMismatch(refused[1])
            coll = await run_in_threadpool(self._reopen, name)
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
        self._stop.set()
        with self._opening:
            with self._guard:
                self.closed = True
                colls = [*self.open.values(), *self.retired]
            for coll in colls:
                coll.close()

    def _store_file(self, name: str):
        return collection_path(self.given.get(name, name), self.home) / STORE_FILE

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
            if name in self.open:
                self._let_go(name)
            if name not in self.removed and name not in self.names():
                raise NoSuchCollection(f"no collection {name!r} is served here "
                                       f"(served: {', '.join(self.serving()) or 'none'})")
            key = stat_key(self._store_file(name))  # before the open: a change meanwhile opens it again
            try:
                fresh = self._open(self.given.get(name, name))
            except NoSuchCollection:
                if name in self.removed:  # its 404 says it was removed while open here
                    raise NoSuchCollection(self.removed[name]) from None
                raise
            except ModelError as exc:
                why = f"not serving {name}: {exc.one_line()}"
                with self._guard:
                    remember(self.refused, name, (key, why))
                raise ModelMismatch(why) from None
            with self._guard:
                self.removed.pop(name, None)
                self.refused.pop(name, None)
                self.open[name] = fresh
                self.users[fresh] += 1
            return fresh

    def _sweep(self) -> None:
        """Let go of the collections removed under the server, every SWEEP_SECONDS."""
        while not self._stop.wait(SWEEP_SECONDS):
            with self._opening:
                if self.closed:
                    return
                with self._guard:
                    gone = [name for name, coll in self.open.items() if not self._live(coll)]
                for name in gone:
                    try:
                        self._let_go(name)
                    except Exception as exc:  # noqa: BLE001 - one bad close must not end the sweeping
                        log.warning("could not let go of removed collection %s: %s", name, exc)

    def _let_go(self, name: str) -> None:
        """Under _opening: forget the Collection served as ``name`` (no longer live) and
        retire it; remember why, for the 404 of a request that asks for it next."""
        with self._guard:
            coll = self.open.pop(name)
        try:
            coll._check_not_removed()
        except NoSuchCollection as exc:
            with self._guard:
                remember(self.removed, name, exc.one_line())
        self._retire(coll)

    def _retire(self, coll: Collection) -> None:
        """Close a replaced Collection now if no request uses it, else when the last one ends."""
        with self._guard:
            busy = self.users[coll] > 0
            if busy:
                self.retired.add(coll)
        if not busy:
            coll.close()


def remember(memo: dict, name: str, value) -> None:
    """``memo[name] = value``, forgetting the oldest name past REMEMBERED."""
    memo.pop(name, None)
    memo[name] = value
    if len(memo) > REMEMBERED:
        del memo[next(iter(memo))]


def stat_key(path) -> tuple | None:
    """What tells one store file at ``path`` from the next (a model is pinned once, in a new
    file): one made anew may reuse a removed one's inode, not its change time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns
