"""Keep a collection in step with folders as their files change (`semsearch index --watch`).

It polls: every few seconds it stats the files the index walk finds (loaders.file_stamps:
path, size, mtime and ctime; nothing is opened) and runs a sync pass only when that
changed. Polling needs no dependency and works on every filesystem, network mounts and
container bind mounts included, where inotify events do not arrive. An idle poll costs a
walk and a stat a file (benchmarks/watch_poll.py).

The first pass is the one `index` runs (Collection.add_files over PATHS). A later pass
reads only the files whose stat changed (new ones too: add_files over those files, so a
.jsonl's dropped records go as well) and removes the documents of files gone
(Collection.delete_path): its cost follows the change, not the tree. A burst of edits
between two polls is one pass, and a file caught half-written is indexed as it was then and
again at the next poll, once its size or times have moved on.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

from . import validation
from .errors import CollectionBusy, NoSuchCollection, NotFound
from .ingest import IndexReport

__all__ = ["watch_files", "Pass", "WatchReport"]

log = logging.getLogger("semsearch")

DEFAULT_EVERY = 2.0
MIN_EVERY, MAX_EVERY = 0.01, 86_400.0  # seconds between polls: faster only burns CPU; slower, wait a day


@dataclass
class Pass:
    """One sync pass of a watch, as ``on_pass`` gets it."""
    number: int  # 1: the first, which syncs what changed since the collection was last indexed
    report: IndexReport
    new_skips: list  # (source, reason) this pass skipped that the pass before did not: say them once
    collection: object  # the open Collection

    @property
    def changed(self) -> bool:
        """Whether it wrote anything or skipped a file it had not skipped before."""
        r = self.report
        return bool(r.added or r.updated or r.removed or self.new_skips)

    def line(self) -> str:
        """The line `index --watch` and `serve --watch` print for a pass that changed something."""
        from datetime import datetime
        now, r = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S"), self.report
        return (f"{now} {self.collection.name}: added {r.added}, updated {r.updated}, removed {r.removed}, "
                f"skipped {len(self.new_skips)};{r.reused_note()} {self.collection.count()} documents in the collection")


@dataclass
class WatchReport:
    passes: int = 0  # sync passes run, the first included
    polls: int = 0  # polls after the first pass (most of them find nothing changed)
    name: str = ""  # the collection's
    documents: int = 0  # in the collection when the watch stopped
    skipped: list = field(default_factory=list)  # what the last pass skipped


def watch_files(name_or_path, paths, every: float = DEFAULT_EVERY, stop: threading.Event | None = None,
                on_pass: Callable[[Pass], None] | None = None, glob=None, exclude=None,
                gitignore: bool = False, remove_missing: bool = True, progress: bool = False, signals: bool = False,
                on_open: Callable | None = None, **settings) -> WatchReport:
    """Index ``paths`` into a collection as index_files does (created if needed, the same
    ``settings``), then poll every ``every`` seconds and sync again whenever a file was
    added, changed or removed, until ``stop`` (a threading.Event) is set.

    The collection stays open and its model loaded across passes, but the writer lock is
    held only while a pass writes (Collection.add_files takes it batch by batch; between
    passes this holds no lock and no SQLite transaction), so a server of the same
    collection or a `semsearch add` writes whenever they like. Their writes are in the
    store, which every pass's write session replays into the index before writing; a
    pass removes only documents read from files under ``paths`` that are gone.

    A pass that finds the collection busy (another writer held its lock for longer than a
    write waits) is said and run again at the next poll; what it wrote before stays.

    A collection removed while watched (`semsearch rm`) ends the watch with its
    NoSuchCollection: no later pass could write it.

    A path that disappears (an unmounted share, a folder renamed) stops the passes until it
    is back, said once: a pass would fail as `index` does on a missing path, and never
    removes the documents of a whole folder because it could not be seen.

    ``glob``, ``exclude``, ``gitignore``: which files in folders are taken, as for index_files;
    a .gitignore edited while it watches takes effect at the next poll (the walk reads it
    again), and a file it comes to leave out keeps its documents.

    ``on_pass`` is called after each pass; ``on_open`` with the open Collection before the
    first (a server closes it at shutdown: a pass then ends at its next write). ``signals`` (main thread only): Ctrl-C and
    SIGTERM end the watch, which returns between passes; during a pass they raise
    KeyboardInterrupt as they stop `index` (saying what it stored)."""
    from .collection import index_files
    from .loaders import Selection, file_stamps, unsupported

    every = validation.finite(every, "every (seconds)", MIN_EVERY, MAX_EVERY)
    stop = threading.Event() if stop is None else stop
    watched = WatchReport()
    busy = [True]  # in a pass (the first from the start: it creates or opens the collection)

    def watch(coll, roots, glob, exclude, gitignore, remove_missing, progress):
        select = Selection.of(glob, exclude, gitignore)  # one for the watch: .gitignores parsed once
        if on_open is not None:
            on_open(coll)
        skipped: dict = {}  # source -> why, as the passes so far left it

        def sync(files, gone: list, progress: bool, untaken: list = ()) -> None:
            """One pass: ``files`` read (None: all under roots, as `index`), the documents of the
            files ``gone`` removed; ``untaken``, new files of a type the walk does not take,
            said as skipped, not read (named to add_files, a file is read as text)."""
            busy[0] = True
            try:
                report = coll.add_files(roots if files is None else files, glob=glob, exclude=exclude,
                                        gitignore=gitignore, remove_missing=remove_missing,
                                        progress=progress) if files != [] else IndexReport()
                if gone and remove_missing:
                    report.removed += coll.delete_path(gone)
            finally:
                busy[0] = False
            for path in untaken:
                report.skip(path, unsupported(path))
            if files is None:
                skipped.clear()
            for source in [*(files or ()), *gone]:  # re-read or gone: what they said before is void
                for name in {source, os.path.realpath(source)}:
                    skipped.pop(name, None)
            new = [s for s in report.skipped if skipped.get(s[0]) != s[1]]
            skipped.update(report.skipped)
            watched.skipped = sorted(skipped.items())
            watched.passes += 1
            if on_pass is not None:
                on_pass(Pass(watched.passes, report, new, coll))

        seen = stamps(roots, select)  # before the pass: what changes during it shows next poll
        sync(None, [], progress)
        missing = None
        while not stop.wait(every):
            watched.polls += 1
            try:
                now = stamps(roots, select)
            except NotFound as exc:
                if missing != str(exc):
                    log.warning("%s; no sync until it is back (its documents stay)", exc)
                missing = str(exc)
                continue
            if missing is not None:
                log.warning("%s is back; watching again", missing.split(": ", 1)[-1])
                missing = None
            if now != seen and not stop.is_set():
                changed = [path for path, stamp in now.items() if seen.get(path) != stamp]
                untaken = [path for path in changed if now[path] == ()]
                # gone: no longer walked and not there; one still there is left out now (a
                # .gitignore edited under --gitignore): its documents stay, as a run keeps them
                gone = [path for path, stamp in seen.items()
                        if path not in now and len(stamp) == 3 and not os.path.exists(path)]
                try:
                    sync([p for p in changed if now[p] != ()], gone, False, untaken)
                except CollectionBusy as exc:  # another writer held the lock past its wait: not fatal
                    log.warning("%s; syncing again at the next poll", exc)
                    continue
                except NoSuchCollection:  # removed (`semsearch rm`): no pass can write it again
                    raise
                except NotFound as exc:  # a changed file gone before the pass read it: next poll
                    log.info("%s; syncing again at the next poll", exc)
                    continue
                seen = now

    def stamps(roots, select) -> dict:
        """path -> (size, mtime_ns, ctime_ns) of a file read, (why,) of one skipped, () of
        one of a type the walk does not take (loaders.file_stamps)."""
        return {entry[0]: entry[1:] for entry in file_stamps(roots, select)}

    def stopping(signum, frame):
        if busy[0]:
            raise KeyboardInterrupt
        stop.set()

    handled = signals and threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stopping) for s in (signal.SIGINT, signal.SIGTERM)} if handled else {}
    try:
        info, _ = index_files(name_or_path, paths, glob=glob, exclude=exclude, gitignore=gitignore,
                              remove_missing=remove_missing, progress=progress, ingest=watch, **settings)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    watched.name, watched.documents = info["name"], info["documents"]
    return watched
