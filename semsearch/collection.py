"""Collection: the façade over a SQLite store, the FAISS index derived from it, and the
model that made it.

It opens and creates collections (creation under the same lock as writes), pins the
model, holds the writer lock, and keeps the in-memory index in step with the store by
replaying the store's generations (a collection created with index="ondisk" has none:
distributed/ondisk.py's exact scan, then its memory-mapped build). Ingest lives in
ingest.py, ranking in search.py, every transaction in store.py. One Collection may be
shared by threads: searches run concurrently; writes are serialised by a thread lock and,
across processes, the lock file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import validation
from .errors import (CollectionBusy, CollectionError, CollectionExists, InvalidInput, ModelError,
                     NoSuchCollection, NoSuchDocument, ReadOnly, WrongModel)
from .index import IndexFileError, VectorIndex, choose_spec, fsync_dir, resolve_spec
from .ingest import (AddReport, IndexPlan, IndexReport, PreparedDocument, Writer, changed_documents,
                     embed_documents, holds_text, info_of, missing_documents, reusable, text_hash)
from .search import FEEDBACK_DOCS, FEEDBACK_WEIGHT, Fusion, Hit, Ranker
from .store import Store, is_store, room_needed

__all__ = ["Collection", "Hit", "StoredDocument", "IndexReport", "AddReport", "list_collections", "delete_collection", "collection_path"]

log = logging.getLogger("semsearch")

STORE_FILE = "store.sqlite"
INDEX_FILE = "index.faiss"
LOCK_FILE = "write.lock"
ONDISK = "ondisk"  # the index type of a collection with no in-memory index (distributed/ondisk.py)
ONDISK_POINTER = "ondisk.json"  # names the current `semsearch build` folder (distributed/ondisk.py)
ONDISK_CHANGES = "ondisk-changes.npz"  # tombstones + delta since that build, beside the pointer
ONDISK_BUILDS = "ondisk-*"  # the build folders themselves
ONDISK_SCRATCH = ".build-"  # a build being written, renamed to ondisk-* when whole (left by a killed one)
ONDISK_BUILD_LOCK = "ondisk-lock/build.lock"  # held for a whole build: builds exclude each other, not writers
ONDISK_SHARDS = "shards"  # the Parquet shards a build wrote inside the collection (the default)
# every file a collection folder may hold: delete_collection removes these and nothing else
STORE_SCRATCH = f".{STORE_FILE}.*.new*"  # a store being created (and its -wal, -shm), renamed when whole
OWN_FILES = (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm", INDEX_FILE, LOCK_FILE)
MIN_TRAIN = 2_000  # below this, indexes that need training wait as exact search
DEFAULTS = {"index": "auto", "variant": "fp32", "overlap": 32}
LOCK_WAIT = 10.0  # seconds a create or a write waits for another process's writer (as SQLite's busy timeout)
# A writer saves the index file once this many chunks were added or removed since it (or
# SAVE_SHARE of the index, if more); an opener replays the rest from the store. A save
# rewrites the whole file (100k vectors: 154 MB Flat, 182 MB HNSW, 0.5-0.7 s a write);
# a replayed chunk costs an opener ~0.3 ms in HNSW (Flat ~0.04), so at 1% the most an
# opener replays costs about what loading the file does (benchmarks/small_writes.py).
SAVE_FLOOR, SAVE_SHARE = 1_000, 0.01
DOCUMENT_PAGE = 256  # documents() reads this many a snapshot
SOURCES = "sources"  # meta key: the paths `index` read, each with its selection (Collection.sources)
CHECK_SAMPLE, CHECK_K = 1_000, 10  # check(): chunks that must find themselves, in their top CHECK_K
RESTORE = ("not repairable here: restore a backup (`semsearch backup` made one?) or re-index "
           "into a new collection")
CHECKS = {  # check() -> (what it checks, whether check(repair=True) fixes it, what to do), in order
    "sqlite": ("the store file: SQLite's full integrity_check", False,
               "the database file is damaged; " + RESTORE),
    "lexical": ("the lexical index: FTS5's integrity-check of chunks_fts and documents_fts, holding "
                "exactly the chunks and the documents", True,
                "`semsearch check --repair` rebuilds the lexical indexes from the chunks"),
    "documents": ("every document has chunks, every chunk a document", True,
                  "`semsearch check --repair` deletes them (only damage makes them; add those documents "
                  "again after)"),
    "positions": ("each document's chunks are at positions 0..n-1", False,
                  "add those documents again (`semsearch index` or `add`), or " + RESTORE),
    "vectors": ("every vector is finite, of length 1 and the model's dimension", False,
                "add those documents again (their vectors are embedded again), or " + RESTORE),
    "index": ("the vector index file: readable, this collection's, one vector per chunk, "
              "each sampled chunk found by its own vector", True,
              "`semsearch check --repair` rebuilds the index file from the store (opening "
              "rebuilds it in memory meanwhile)"),
}


def home_dir(home: str | os.PathLike | None = None) -> Path:
    return Path(validation.path(home, "home") if home else os.environ.get("SEMSEARCH_HOME") or "indexes")


def collection_path(name_or_path: str | os.PathLike, home=None) -> Path:
    """A bare name lives under the home folder; anything with a slash is a path."""
    text = validation.collection_name(name_or_path)
    if os.sep in text or "/" in text or Path(text).is_absolute():
        return validation.user_path(text)
    return home_dir(home) / text


def list_collections(home=None) -> list[str]:
    root = home_dir(home)
    return sorted(p.name for p in root.iterdir() if (p / STORE_FILE).is_file()) if root.is_dir() else []


@dataclass
class StoredDocument:
    """A document as the collection holds it. ``text`` is rebuilt from its chunks (each a
    slice of it): whitespace between chunks comes back as as many spaces, so a hit's
    ``start``/``end`` index into it, and whitespace after the last chunk is not kept."""
    id: str
    text: str | None  # None when read with documents(text=False)
    source: str | None  # the file it was read from (None: added as text)
    metadata: dict
    chunks: int
    added_at: float  # Unix time its text was last added or changed (a change of metadata alone keeps it)

    def to_dict(self) -> dict:
        return asdict(self)


class Collection:
    """A searchable set of documents; use as a context manager to close it."""

    def __init__(self, path: Path, store: Store, model: str | None = None, device: str = "auto",
                 embedder=None):
        self.path = path
        self.name = path.name
        self.store = store
        self.config = store.get_meta("config")
        self.pinned = store.get_meta("model")
        if self.config is None or self.pinned is None:
            raise CollectionError(f"{path / STORE_FILE} is not a complete semsearch store")
        self.id = store.get_meta("collection_id")  # ties the index file to this store
        if model is not None:
            from .models import source_for
            _check_model(self, source_for(validation.string(model, "model"))[0])
        self._device = device
        self._embedder = None
        self._embedder_lock = threading.Lock()
        if embedder is not None:
            self.use_embedder(embedder)
        self._index: VectorIndex | None = None
        self._index_gen = -1
        self._unchecked = False  # loaded from a file and not yet checked against the store
        self._lag = 0  # chunks added or removed since loaded from or saved to its file (inf: rebuilt)
        self._build = None  # the `semsearch build` the index maps (see _build_mark)
        self._index_lock = _ReadWriteLock()
        self._allowed = _AllowedCache()
        self._index_read = None  # a background read of the index file, see _prefetch_index
        self._write_lock = threading.Lock()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, name_or_path, model: str | None = None, index: str | None = None,
               variant: str | None = None, chunk_tokens: int | None = None, overlap: int | None = None,
               home=None, device: str = "auto", exist_ok: bool = False, embedder=None) -> "Collection":
        """Create a collection (``exist_ok``: or open it, refusing settings that differ)."""
        if model is not None:  # a blank one would name the current folder
            validation.string(model, "model")
        settings = {"model": model, "index": index, "variant": variant,
                    "chunk_tokens": chunk_tokens, "overlap": overlap}
        path = collection_path(name_or_path, home)
        if (path / STORE_FILE).is_file():
            return cls._existing(path, exist_ok, settings, device, embedder)
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"{path} is a file; a collection is a folder")
        index = DEFAULTS["index"] if index is None else validation.string(index, "index")
        variant = variant or DEFAULTS["variant"]
        overlap = DEFAULTS["overlap"] if overlap is None else overlap
        from .models import VARIANT_FILES
        validation.choice(variant, "variant", tuple(VARIANT_FILES))
        if embedder is None:
            from .embedder import Embedder
            embedder = Embedder.load(model, variant=variant, device=device)
        chunk_tokens = embedder.max_length - 2 if chunk_tokens is None else chunk_tokens
        validation.positive_int(chunk_tokens, "chunk_tokens", embedder.max_length - 2)
        if chunk_tokens < 8:
            raise InvalidInput(f"chunk_tokens must be between 8 and {embedder.max_length - 2}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_tokens:
            raise InvalidInput("overlap must be at least 0 and less than chunk_tokens")
        if index not in ("auto", ONDISK):
            _needs_no_training(index, embedder.dim)  # an invalid spec fails here, before any file
        path.mkdir(parents=True, exist_ok=True)
        with _locked(path, wait=LOCK_WAIT):
            if (path / STORE_FILE).is_file():  # another process created it while we loaded the model
                return cls._existing(path, exist_ok, settings, device, embedder)
            _remove_own_files(path, shards=False)  # what a killed rm or create left (we hold the lock)
            tmp = path / f".{STORE_FILE}.{uuid.uuid4().hex}.new"  # matched by STORE_SCRATCH
            try:
                with room_needed(path):
                    store = Store(tmp, create=True)
                    try:  # closed however it ends: an open connection keeps a removed file's space
                        m = embedder.manifest
                        store.set_meta("model", {
                            "name": m["name"], "source": m["source"], "folder": str(embedder.folder.resolve()),
                            "sha256": m["variants"]["fp32"]["sha256"], "dim": m["dim"], "pooling": m["pooling"],
                            "normalize": m["normalize"], "max_length": m["max_length"], "variant": variant})
                        store.set_meta("config", {"index": index, "chunk_tokens": chunk_tokens, "overlap": overlap,
                                                  "created": time.time()})
                        store.set_meta("collection_id", uuid.uuid4().hex)
                        store.checkpoint()  # all in the file renamed into place
                    finally:
                        store.close()
                    os.replace(tmp, path / STORE_FILE)  # the collection exists once its store is complete
                    fsync_dir(path)
            finally:
                for leftover in path.glob(tmp.name + "*"):
                    leftover.unlink(missing_ok=True)
        return cls.open(path, device=device, embedder=embedder)

    @classmethod
    def _existing(cls, path: Path, exist_ok: bool, settings: dict, device: str, embedder):
        if not exist_ok:
            raise CollectionExists(f"collection {path} already exists")
        coll = cls.open(path, model=settings["model"], device=device, embedder=embedder)
        try:
            coll.check_settings(**{k: v for k, v in settings.items() if k != "model"})
        except BaseException:
            coll.close()
            raise
        return coll

    @classmethod
    def open_or_create(cls, name_or_path, **settings) -> "Collection":
        """Open the collection if it exists (settings given must match it), else create it."""
        return cls.create(name_or_path, exist_ok=True, **settings)

    @classmethod
    def open(cls, name_or_path, model: str | None = None, home=None, device: str = "auto",
             embedder=None) -> "Collection":
        path = collection_path(name_or_path, home)
        if not (path / STORE_FILE).is_file():
            known = ", ".join(list_collections(home)) or "none"
            raise NoSuchCollection(f"no collection {str(name_or_path)!r} "
                                   f"(collections in {home_dir(home)}: {known})")
        return cls(path, Store(path / STORE_FILE), model=model, device=device, embedder=embedder)

    def check_settings(self, index=None, variant=None, chunk_tokens=None, overlap=None) -> None:
        """Refuse settings that differ from the collection's own (None: not asked)."""
        have = {**self.config, "variant": self.pinned["variant"]}
        asked = {"index": index, "variant": variant, "chunk_tokens": chunk_tokens, "overlap": overlap}
        for key, value in asked.items():
            if value is not None and value != have[key]:
                raise CollectionExists(f"collection {self.name} exists with {key}={have[key]}, not {value}; "
                                       f"use a new name or `semsearch rm {self.name}` first")

    def close(self) -> None:
        """Close the store once this process's write in progress, if any, has committed and
        the reads in progress have ended (a server shutting down closes collections while
        requests' threads may still write or search); later calls raise CollectionError."""
        with self._write_lock:
            self.store.close()

    def __repr__(self) -> str:
        return f"<Collection {self.name} at {self.path} ({self.pinned['name']} {self.pinned['variant']})>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the model -------------------------------------------------------------------------
    @property
    def embedder(self):
        """The collection's own model, loaded on first use and checked against the pin."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = _check_pin(self, load_pinned(self.pinned, self._device))
            return self._embedder

    def use_embedder(self, embedder) -> None:
        """Share an already loaded Embedder (a server's), after checking it is the pinned model."""
        with self._embedder_lock:
            self._embedder = _check_pin(self, embedder)

    # -- the index, derived from the store -----------------------------------------------------
    def sync_index(self) -> None:
        """Bring the in-memory index up to the store's latest generation."""
        with self.store.snapshot():
            self._sync_index()

    def _sync_index(self) -> None:
        """Replay into the index what the store holds beyond it (call inside a snapshot)."""
        gen = self.store.generation()
        build = self._build_mark()
        # a `semsearch build` published since: map it, and let go of the one it replaced (its
        # files are deleted; mapped, their disk space would stay in use until this process ends)
        stale = build != self._build
        if self._index is not None and self._index_gen >= gen and not stale and not self._unchecked:
            return
        with self._index_lock.writing():
            if self._index is None or stale:
                old = self._index
                self._load_index_file()
                self._build = build  # once loaded: a load that failed is tried again next time
                if hasattr(old, "close"):  # a mapped build (None and in-memory indexes hold no files)
                    old.close()
            if getattr(self._index, "reads_store", False):  # an exact scan: nothing to replay
                self._index_gen = gen
                return
            if self._index_gen < gen:
                self._lag += self._replay(self._index, self._index_gen)
                self._index_gen = gen
            # a last check, once per file loaded, at a snapshot of the file's generation or later
            # (one saved since this snapshot began is ahead of it: _snapshot begins it again)
            if self._unchecked and self._index_gen == gen:
                self._unchecked = False
                if self._index.ntotal != self.store.counts()[1]:
                    log.warning("index file of %s does not match its store; rebuilding it from the store",
                                self.name)
                    self._rebuild()

    def _replay(self, index, since: int) -> int:
        """Bring ``index``, made at generation ``since``, up to this snapshot's generation
        (idempotent); returns how many chunks it removed or added."""
        deleted = self.store.deleted_since(since)
        index.remove(deleted)
        changed = len(deleted)
        for ids, vectors in self.store.vectors(since_gen=since):
            index.remove(ids)
            index.add(ids, vectors)
            changed += len(ids)
        return changed

    def _build_mark(self):
        """Which `semsearch build` is current, if any: publishing one replaces its pointer
        file, so the file's identity changes."""
        try:
            st = os.stat(self.path / ONDISK_POINTER)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _unusable_build(self, index, generation: int) -> str | None:
        """Why a `semsearch build` must not be mapped here, as for an index file; else None."""
        if index.meta.get("collection_id") not in (None, self.id):
            return f"the build in {self.path} belongs to another collection (a removed one of the same name)"
        if self._newer_than_store(generation):
            return f"the build of {self.name} is newer than its store (was the store restored from a backup?)"
        return None

    def _newer_than_store(self, generation: int) -> bool:
        """Whether an index file or build made at ``generation`` is newer than the store
        itself (a store restored from a backup). One newer than this snapshot only was saved
        by a writer that committed since the snapshot began: it is used, and _snapshot
        begins the snapshot again at its generation."""
        return generation > self.store.generation() and generation > self.store.latest_generation()

    def _prefetch_index(self) -> None:
        """Start reading the index file while the model loads: a cold search waits for
        the slower of the two, not for both (faiss and ONNX Runtime release the GIL)."""
        file = self.path / INDEX_FILE
        if self._index is None and self._index_read is None and file.is_file() \
                and not (self.path / ONDISK_POINTER).is_file():
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(1)
            self._index_read = pool.submit(VectorIndex.load, file, self.id)
            pool.shutdown(wait=False)

    def _load_index_file(self) -> None:
        ondisk = self.config["index"] == ONDISK
        if ondisk or (self.path / ONDISK_POINTER).is_file():  # map what `semsearch build` made, if any
            from .distributed.ondisk import SCAN_WARN, attach  # faiss + numpy only, no Ray
            built = attach(self.path)
            why = built and self._unusable_build(*built)
            if why:
                built[0].close()
                log.warning("%s; searching without it until the next `semsearch build %s`", why, self.name)
            elif built is not None:
                self._loaded(*built)
                return
            if ondisk:
                self._rebuild()
                n = self._index.ntotal
                log.log(logging.WARNING if n >= SCAN_WARN else logging.INFO,
                        "%s is on disk and not built yet: its %d vectors are searched by an exact scan "
                        "of the store; `semsearch build %s` makes search fast", self.name, n, self.name)
                return
        file = self.path / INDEX_FILE
        read, self._index_read = self._index_read, None
        try:
            if read is not None or file.is_file():
                index, gen = read.result() if read else VectorIndex.load(file, self.id)
                if self._newer_than_store(gen):
                    raise IndexFileError(f"index file {file} is newer than its store "
                                         "(was the store restored from a backup?)")
                self._loaded(index, gen)
                return
            if self.store.counts()[1]:
                log.warning("index file of %s is missing; rebuilding it from the store", self.name)
        except IndexFileError as exc:
            log.warning("%s; rebuilding it from the store", exc)
        self._rebuild()
        # save it unless a writer is at work (it will save its own) or the collection was
        # removed, so that the next reader need not rebuild it too
        try:
            lock = None if self.store.read_only or self.store.replaced() else _try_lock(self.path)
        except NoSuchCollection:
            lock = None
        if lock is not None:
            try:
                if not self.store.replaced():  # `rm` may have had the lock first
                    self._save_index()
            finally:
                lock.release()

    def _loaded(self, index, generation: int) -> None:
        """Take an index read from its file (or a build's files), as it is there."""
        self._index, self._index_gen = index, generation
        self._unchecked, self._lag = True, 0

    def _rebuild(self, spec: str | None = None) -> None:
        self._unchecked, self._lag = False, math.inf
        if self.config["index"] == ONDISK:  # never every vector in memory: scan until `semsearch build`
            from .distributed.ondisk import StoreScan
            self._index, self._index_gen = StoreScan(self.store, self.pinned["dim"]), self.store.generation()
            return
        ids, vectors = self._all_vectors()
        self._index = VectorIndex.build(spec or self._target_spec(len(ids)), ids, vectors)
        self._index.params["built_for"] = len(ids)  # a trained index is retrained after 4x growth
        self._index_gen = self.store.generation()

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.store.vectors())
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, self.pinned["dim"]), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _target_spec(self, n: int) -> str:
        """What the index should be at n vectors: auto's choice, or exact until trainable."""
        asked = self.config["index"]
        if asked == "auto":
            return choose_spec(n, self.pinned["dim"])
        if n < MIN_TRAIN and not _needs_no_training(asked, self.pinned["dim"]):
            return "flat"
        return asked

    def _maintain_index(self) -> None:
        """Compact tombstones, or move to the index type the collection's size calls for."""
        if getattr(self._index, "kind", "memory") == "ondisk":
            return  # tombstones and an in-memory delta until the next `semsearch build` folds them in
        with self.store.snapshot(), self._index_lock.writing():
            n = self._index.ntotal
            target = self._target_spec(n)
            built_for = self._index.params.get("built_for", 0)
            # compare resolved factory strings: the shortcut "ivfpq" is an "IVF..." index
            target_family = _family(resolve_spec(target, n, self.pinned["dim"]))
            if (self._index.tombstone_ratio > 0.2 or target_family != _family(self._index.spec)
                    or (built_for and n > 4 * built_for)):
                self._rebuild(target)

    def rebuild_index(self, spec: str | None = None) -> dict:
        """Rebuild the vector index from the store (``spec``: change the collection's index
        type, e.g. "hnsw" or a faiss factory string) and save it; returns info()["index"]."""
        if spec is not None:
            validation.string(spec, "index")
        if ONDISK in (spec, self.config["index"]):
            raise InvalidInput(f"an on-disk collection is chosen at creation (index={ONDISK!r}) and its "
                               f"index is made by `semsearch build {self.name}`")
        with self.writer():
            if spec is not None and spec != self.config["index"]:
                if spec != "auto":
                    _needs_no_training(spec, self.pinned["dim"])  # InvalidInput for a bad spec
                with self.store.write():
                    self.config = {**self.config, "index": spec}
                    self.store.set_meta("config", self.config)
            with self.store.snapshot(), self._index_lock.writing():
                self._rebuild()
        return self.info()["index"]

    def _save_index(self) -> None:
        """Save the index file once it lags the index by SAVE_FLOOR chunks (SAVE_SHARE of
        it, if more): a save rewrites the whole file (at 1M vectors, 1.5 GB for one document
        added), while an opener replays what the file lacks from the store. The lag is
        counted from the file this process last loaded or saved, and a save is always of the
        latest generation (under the lock), so once any writer has finished, the file on disk
        lags the store by less than that, whoever wrote the rest. (On-disk
        collections save their changes file, as large as those changes, every time.) The
        store already holds everything, so a failure here is a warning: the next open
        replays or rebuilds, and the caller's write stands. Called under the writer lock,
        so any other temporary index file is one a killed save left."""
        if not self._lag:
            return
        for orphan in self.path.glob(f".{INDEX_FILE}.*.tmp"):  # as large as the index: not left
            orphan.unlink(missing_ok=True)  # until the next save
        mode = stat.S_IMODE(os.stat(self.store.path).st_mode)  # the index file is as open as the store
        if getattr(self._index, "kind", "memory") != ONDISK \
                and self._lag < max(SAVE_FLOOR, SAVE_SHARE * self._index.ntotal):
            try:  # not saved now: its mode follows the store's all the same, as a save's would
                if stat.S_IMODE(os.stat(self.path / INDEX_FILE).st_mode) != mode:
                    os.chmod(self.path / INDEX_FILE, mode)
            except OSError:  # no file yet, or not ours to change: the next save sets it
                pass
            return
        try:
            self._index.save(self.path / INDEX_FILE, generation=self._index_gen, owner=self.id, mode=mode)
            self._lag = 0
        except OSError as exc:
            log.warning("cannot save the index file of %s (%s); it will be brought up to date "
                        "from the store when next opened", self.name, exc.strerror or exc)

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def writer(self, hold: bool = True):
        """A write session (ingest.Writer), the index brought up to date before and saved after.

        ``hold``: the writer lock is held for the whole session, so its writes exclude all
        others. A long ingest passes False: the lock is taken for each of its writes, and
        other writers (a server, another `semsearch add`) get in between its documents
        instead of waiting for the whole run."""
        if self.store.read_only:
            raise ReadOnly(f"collection {self.name} is read-only here ({self.path} cannot be "
                           "written); it can be searched")
        if not hold:
            self.sync_index()
            with Writer(self, self._exclusive).session() as w:
                yield w
            self._finish_writes_if_free()
            return
        with self._exclusive():
            self.sync_index()
            try:
                with Writer(self).session() as w:
                    yield w
            finally:
                if self._index is not None:
                    self._finish_writes()

    @contextmanager
    def _exclusive(self):
        """The writer lock: this process's other threads and other processes write only
        while nobody holds it, waited for up to LOCK_WAIT in all (one deadline for both: a
        write queued behind k others of this process waited up to k x LOCK_WAIT)."""
        deadline = time.monotonic() + LOCK_WAIT
        if not self._write_lock.acquire(timeout=LOCK_WAIT):
            raise CollectionBusy(f"collection {self.name} is still being written by this process "
                                 f"after {LOCK_WAIT:g} s; try again when it finishes")
        try:
            self._check_not_removed()
            lock = _acquire(self.path, max(0.0, deadline - time.monotonic()))
            if lock is None:
                raise CollectionBusy(f"collection {self.name} is still being written by another process "
                                     f"after {LOCK_WAIT:g} s; try again when it finishes")
            try:
                self._check_not_removed()  # `semsearch rm` may have had the lock first
                yield
            finally:
                lock.release()
        finally:
            self._write_lock.release()

    def _check_not_removed(self) -> None:
        if self.store.replaced():
            raise NoSuchCollection(f"collection {self.name} was removed while it was open here "
                                   "(`semsearch rm`?); it is neither searched nor written any more")

    def _finish_writes(self) -> None:
        """Under the writer lock: replay, compact or re-type, and save the index file."""
        self.sync_index()
        self._maintain_index()
        self._save_index()

    def _finish_writes_if_free(self) -> None:
        """_finish_writes, unless the lock cannot be had: every write is in the store
        already, and the next writer or opener brings the index file up to date."""
        try:
            with self._exclusive():
                self._finish_writes()
        except (CollectionBusy, NoSuchCollection) as exc:
            log.info("index file of %s not saved (%s)", self.name, exc)

    def add_texts(self, texts: Sequence[str], ids: Sequence[str] | None = None,
                  metadata: Sequence[dict] | dict | None = None, progress: bool = False) -> list[str]:
        """Add (or replace, by id) one document per text, all or none; returns the ids.

        An id that is None (or no ``ids`` at all) gets a generated one. A text its id holds
        already is not embedded again: see add_texts_report, which says what was written."""
        return self.add_texts_report(texts, ids, metadata, progress).ids

    def add_texts_report(self, texts: Sequence[str], ids: Sequence[str] | None = None,
                         metadata: Sequence[dict] | dict | None = None, progress: bool = False) -> AddReport:
        """add_texts, returning an AddReport: the ids, and how many documents were new,
        replaced, had only their metadata updated, or were unchanged.

        Apps that sync their documents send the same texts again and again: a document
        whose id holds that very text already (added as text, compared by a hash of it) is
        not embedded again; if its metadata differs, only the metadata is replaced and its
        ``added_at`` stays (when its text was added); if not, nothing is written. Documents
        added before texts kept a hash are embedded once more, then skipped likewise."""
        texts = validation.document_texts(texts)
        ids = [uuid.uuid4().hex[:16] if i is None else i for i in validation.new_ids(ids, len(texts))]
        metadata = validation.metadata_list(metadata, len(texts))
        docs = [PreparedDocument(key, None, text_hash(text), meta) for key, text, meta in zip(ids, texts, metadata)]
        position = {key: i for i, key in enumerate(ids)}

        def embed(todo: list[PreparedDocument], shown: bool = False) -> None:
            """Chunks and vectors for ``todo``, in place."""
            if not todo:  # nothing changed: the model need not even load
                return
            batches = embed_documents(_progress([(doc, [texts[position[doc.key]]]) for doc in todo], shown, "doc"),
                                      self.embedder, self.config["chunk_tokens"], self.config["overlap"],
                                      IndexReport())
            made = {doc.key: doc for batch in batches for doc in batch}
            for doc in todo:
                got = made.get(doc.key)
                doc.chunks, doc.vectors = (got.chunks, got.vectors) if got else ([], None)
                if not doc.chunks:  # stored as no chunks, it would remove the document of its id
                    raise InvalidInput(f"texts[{position[doc.key]}] has nothing the model reads "
                                       "(the tokenizer drops all of it)")

        with self.store.snapshot():
            held = self.store.held(ids)
        # embedded before the writer lock is taken (the model loads here too), so other
        # writers wait on this call only for its transaction; put_texts checks again in it
        embed([doc for doc in docs if not holds_text(held.get(doc.key), doc)], progress)
        with self.writer() as w:
            # ONE transaction for the call: a failure or a kill part-way leaves none of the
            # documents, so a retry (with generated ids) cannot duplicate any
            return w.put_texts(docs, embed)

    def add_vectors(self, ids: Sequence[str], vectors, texts: Sequence[str],
                    metadata: Sequence[dict] | dict | None = None) -> list[str]:
        """Add (or replace, by id) one-chunk documents whose vectors you computed
        (L2-normalised, the pinned model's dimension); returns the ids, as add_texts does.
        Dense search finds them, lexical search finds their text."""
        from .chunking import Chunk
        texts = validation.document_texts(texts)
        ids = validation.new_ids(ids, len(texts))
        if None in ids:
            raise InvalidInput("add_vectors needs an id for every vector")
        vectors = validation.unit_vectors(vectors, self.pinned["dim"])
        if len(vectors) != len(texts):
            raise InvalidInput(f"got {len(vectors)} vectors for {len(texts)} texts")
        metadata = validation.metadata_list(metadata, len(texts))
        docs = [PreparedDocument(key, None, None, meta, [Chunk(text, 0, len(text), 0)], vectors[i:i + 1])
                for i, (key, text, meta) in enumerate(zip(ids, texts, metadata))]
        with self.writer() as w:
            for i in range(0, len(docs), 10_000):  # a transaction per 10,000: all or none each
                w.put_many(docs[i:i + 10_000])
                w.flush()
        return list(ids)

    def add_files(self, paths: Iterable[str | os.PathLike], glob=None, remove_missing: bool = True,
                  progress: bool = False, exclude=None, gitignore: bool = False) -> IndexReport:
        """Index files and folders: new or changed files are embedded, vanished ones removed.
        A file whose text the collection holds under another id (moved, renamed or copied)
        gets that document's chunks and vectors (Writer.reused), not embedded again.
        ``glob``, ``exclude``: a pattern or a list of them, which files in folders are taken
        (loaders.Selection); ``gitignore``: not those git ignores (ignore.py). Documents
        they leave out are neither added nor removed."""
        from .loaders import Selection, list_files

        started = time.time()
        remove_missing = validation.flag(remove_missing, "remove_missing")
        roots = [validation.source_path(p) for p in validation.path_list(paths)]
        select = Selection.of(glob, exclude, gitignore)
        files = list_files(roots, select)  # NotFound for a missing path, before any write
        report = IndexReport()
        self.embedder  # the model loads before the first write, not while holding the lock
        # the lock is taken for each batch's writes, not the whole run: files are read and
        # embedded while other writers may write
        with self.writer(hold=False) as w, _file_progress(files, progress, report) as shown:
            known = w.known_hashes()
            seen: set[str] = set()

            def pending():
                for doc in changed_documents(shown, known, report, seen):
                    yield info_of(doc), _Counted(doc, report)

            def counted(batches):  # a document skipped while embedding (too large) is neither
                for batch in batches:
                    for doc in batch:
                        if doc.key in known:
                            report.updated += 1
                        elif doc.chunks:
                            report.added += 1
                    yield batch

            w.put_all(counted(embed_documents(pending(), self.embedder, self.config["chunk_tokens"],
                                              self.config["overlap"], report, w.reuser(known))))
            if remove_missing:
                listed = [f for f in files if isinstance(f, str)]
                report.removed = w.remove_missing(roots, seen, select, report.unread, listed)
            report.left_behind = w.left_behind()
        report.seconds = time.time() - started
        return report

    def delete(self, ids: Iterable[str] | str | None = None, where: dict | None = None) -> int:
        """Delete documents by id (one id, or a list) or by ``where``, a filter matched as
        search matches it (every condition); returns how many existed. An empty ``where`` is
        refused: it would delete everything (`semsearch rm` removes a collection)."""
        if (ids is None) == (where is None):
            raise InvalidInput("delete takes ids or where (one of them)")
        if where is None:
            keys = validation.id_list(ids)
            with self.writer() as w:
                return w.delete(keys)
        where = validation.where_filter(where)
        if not where:
            raise InvalidInput("where is empty; deleting by filter needs at least one condition")
        with self.writer() as w:
            return w.delete_where(where)

    def delete_path(self, path: str | os.PathLike | Iterable[str | os.PathLike]) -> int:
        """Delete every document read from ``path`` (a file, or a folder's files; or a list
        of them, in one write); a source (see sources) at or under it is forgotten."""
        roots = [validation.source_path(p, "path") for p in validation.path_list(path, "path")]
        with self.writer() as w:
            deleted = w.delete(sorted({key for root in roots for key, _ in self.store.documents_under(root)}))
        self._change_sources(lambda old: [o for o in old if not any(_within(o["path"], root) for root in roots)])
        return deleted

    # -- sources ---------------------------------------------------------------------------
    @property
    def sources(self) -> list[dict]:
        """The files and folders `index` read into this collection, in the order first
        indexed, each with the selection it was last read with: {"path", "glob", "exclude",
        "gitignore"}. `semsearch index --name NAME` without PATHS reads them again, so a
        scheduled re-sync needs no options repeated (and cannot forget an --exclude)."""
        with self._snapshot():
            return self.store.get_meta(SOURCES, [])

    def remember_sources(self, paths, glob=None, exclude=None, gitignore: bool = False) -> None:
        """Record ``paths`` as sources read with this selection (index_files calls it before
        it reads them: a run killed half-way is re-run by the same re-sync). A path already
        a source keeps its place and takes the new selection."""
        entries = [{"path": validation.source_path(p), "glob": list(validation.patterns(glob, "glob")),
                    "exclude": list(validation.patterns(exclude, "exclude")),
                    "gitignore": validation.flag(gitignore, "gitignore")} for p in validation.path_list(paths)]
        self._change_sources(lambda old: [next((e for e in entries if e["path"] == o["path"]), o) for o in old]
                             + [e for e in entries if e["path"] not in {o["path"] for o in old}])

    def _change_sources(self, change) -> None:
        """Rewrite the sources by ``change`` (old list -> new), under the writer lock; nothing
        written where nothing changes (a re-sync)."""
        if self.sources == change(self.sources):
            return
        with self.writer():
            old = self.store.get_meta(SOURCES, [])
            new = change(old)
            if new != old:
                with self.store.write():
                    self.store.set_meta(SOURCES, new)

    def delete_missing(self, path: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> int:
        """Delete the documents read from files that are gone (moved, renamed or deleted),
        or only those under ``path``: what a re-index of a folder does for its own files,
        for files whose folder is not indexed any more (a folder moved and indexed at its
        new place, its vectors reused, leaves its old documents here). Files are checked
        outside the lock (a slow share blocks no writer), then once more under it."""
        roots = ["/"] if path is None else \
            [validation.source_path(p, "path") for p in validation.path_list(path, "path")]
        with self.store.snapshot():
            held = {key: source for root in roots for key, source in self.store.documents_under(root)}
        gone = {source for source in set(held.values()) if not os.path.exists(source)}
        with self.writer() as w, w.locked():
            gone = {source for source in gone if not os.path.exists(source)}  # not back meanwhile
            keys = sorted(key for key, source in held.items() if source in gone)
            with self.store.snapshot():  # as they are now: another writer may have replaced one
                now = self.store.held(keys)
            return w.delete([key for key in keys if key in now and now[key][0] == held[key]])

    # -- reading -----------------------------------------------------------------------------
    def get(self, id: str) -> StoredDocument:
        """The stored document of ``id``, its text rebuilt from its chunks (see
        StoredDocument); NoSuchDocument if the collection has none by that id."""
        key = validation.doc_id(id)
        for doc in self.documents(ids=[key]):
            return doc
        raise NoSuchDocument.of(self.name, [key])

    def documents(self, ids: Iterable[str] | str | None = None, where: dict | None = None,
                  after: str | None = None, limit: int | None = None, text: bool = True
                  ) -> Iterator[StoredDocument]:
        """The stored documents, in id order: those of ``ids`` that exist, and (or else)
        those ``where`` matches as search matches it, or all; only ids past ``after`` (the
        last id of a page already read), at most ``limit``. ``text=False`` leaves each
        one's text out (None). Read a page at a time, each page one consistent snapshot:
        walking a large collection holds neither much memory nor the store."""
        keys = None if ids is None else validation.id_list(ids)
        where = validation.where_filter(where)
        after = None if after is None else validation.doc_id(after, "after")
        limit = None if limit is None else validation.positive_int(limit, "limit", validation.INT64[1])
        text = validation.flag(text, "text")
        self._check_not_removed()
        first = self._documents_page(keys, where, after, limit, text)  # a bad where key raises here
        return self._pages(first, keys, where, limit, text)

    def _pages(self, page: list[StoredDocument], keys, where, limit, text) -> Iterator[StoredDocument]:
        while page:
            yield from page
            if limit is not None:
                limit -= len(page)
            if len(page) < DOCUMENT_PAGE or limit == 0:
                return
            page = self._documents_page(keys, where, page[-1].id, limit, text)

    def _documents_page(self, keys, where, after, limit, text) -> list[StoredDocument]:
        """One page of ``documents``, its rows and texts from one snapshot."""
        with self.store.snapshot():
            rows = self.store.documents(keys, where, after, min(limit or DOCUMENT_PAGE, DOCUMENT_PAGE))
            texts = self.store.original_texts(r[0] for r in rows) if text else {}
        return [StoredDocument(key, texts.get(row_id), source, metadata, chunks, added_at)
                for row_id, key, source, metadata, added_at, chunks in rows]

    def count(self) -> int:
        with self.store.snapshot():  # a transaction: close() waits for it
            return self.store.counts()[0]

    def search(self, query: str | Sequence[str], k: int = validation.DEFAULT_K, where: dict | None = None,
               mode: str = "hybrid", docs: bool = False, min_score: float | None = None,
               rrf_k: int = 60, weights: tuple[float, float] = (1.0, 1.0),
               feedback_docs: int = FEEDBACK_DOCS, feedback_weight: float = FEEDBACK_WEIGHT,
               query_vectors=None, highlight: bool = True):
        """Ranked hits for one query (a list) or for several (a list of lists).

        ``mode``: dense (vectors; chunks), lexical (FTS5 BM25 over whole documents) or
        hybrid: Reciprocal Rank Fusion (constant ``rrf_k``, (dense, lexical) ``weights``) of
        the lexical document ranking with a dense one whose query vector is moved towards
        the best chunks of the ``feedback_docs`` documents a z-score fusion puts first, by ``feedback_weight``
        (Rocchio pseudo-relevance feedback; 0 turns it off). ``docs`` keeps one hit per
        document (lexical always gives one). ``where`` filters on document metadata
        before ranking, on both sides: key -> value, or -> {operator: operand} ($ne, $gt,
        $gte, $lt, $lte, $in, $nin, $exists; validation.where_filter); a list value matches
        by any item. What each mode's score means: search.Hit.
        ``query_vectors``: the queries already embedded (one row each, with the pinned model
        and its query prompt), e.g. by a server's batcher. ``highlight``: mark in each hit
        where its text holds the query's words (Hit.highlights; False leaves them empty and
        saves the work, which grows with k).
        """
        queries, single = validation.queries(query)
        k = validation.check_k(k)
        validation.choice(mode, "mode", validation.MODES)
        docs = validation.flag(docs, "docs")
        highlight = validation.flag(highlight, "highlight")
        where = validation.where_filter(where)
        fusion = _fusion(rrf_k, weights, feedback_docs, feedback_weight)
        if min_score is not None:
            min_score = validation.finite(min_score, "min_score")
        vectors = None
        if mode != "lexical":
            self._prefetch_index()
            if query_vectors is None:
                vectors = self.embedder.embed(queries, kind="query")
            else:
                vectors = validation.unit_vectors(query_vectors, self.pinned["dim"], "query_vectors")
                if len(vectors) != len(queries):
                    raise InvalidInput(f"got {len(vectors)} query vectors for {len(queries)} queries")
        self._check_not_removed()  # a server must not go on answering from a removed collection
        with self._snapshot(dense=mode != "lexical"):
            allowed = self._allowed_by(where)
            results = Ranker(self.store, self._dense, allowed).search(queries, vectors, k, mode, docs,
                                                                      min_score, fusion, highlight)
        return results[0] if single else results

    def search_vectors(self, vectors: np.ndarray, k: int = validation.DEFAULT_K, where: dict | None = None) -> list[list[Hit]]:
        """Dense search with query vectors you embedded yourself: a list of hits per row."""
        vectors = validation.unit_vectors(vectors, self.pinned["dim"], "query vectors")
        k = validation.check_k(k)
        where = validation.where_filter(where)
        self._check_not_removed()
        with self._snapshot():
            allowed = self._allowed_by(where)
            ranker = Ranker(self.store, self._dense, allowed)
            return [ranker.hits(ranked, k, False, None) for ranked in self._dense(vectors, k, allowed)]

    def similar(self, id: str, k: int = validation.DEFAULT_K, where: dict | None = None, docs: bool = True) -> list[Hit]:
        """The documents most like the stored document ``id`` (``docs=False``: the chunks),
        it left out: dense search with the mean of its chunks' vectors, ``where`` as search
        takes it. NoSuchDocument if the collection has none by that id."""
        key = validation.doc_id(id)
        k = validation.check_k(k)
        where = validation.where_filter(where)
        docs = validation.flag(docs, "docs")
        self._check_not_removed()
        with self._snapshot():
            found = self.store.documents([key], limit=1)
            if not found:
                raise NoSuchDocument.of(self.name, [key])
            allowed = self._allowed_by(where)
            return Ranker(self.store, self._dense, allowed).like(found[0][0], k, docs)

    def _allowed_by(self, where: dict | None) -> np.ndarray | None:
        """The chunk ids ``where`` allows (None: all), inside a snapshot. Remembered for the
        snapshot's generation (every write bumps it), so a filter sent with every request
        (a tenant's) is matched once per write, not once per search."""
        if not where:
            return None
        key = (self.store.generation(), json.dumps(where, sort_keys=True))
        return self._allowed.get(key, lambda: self.store.filter_ids(where))

    @contextmanager
    def _snapshot(self, dense: bool = True):
        """A store snapshot and, with ``dense``, the in-memory index at that snapshot's very
        generation, under the index's read lock. The index is shared by threads whose
        snapshots differ: one ahead of this snapshot (replayed by a thread that began
        later) lacks the chunks of documents replaced since, which this snapshot still
        holds, so a replaced document vanished from dense results; the snapshot is then
        begun again, at or past the index's generation (its writes have committed)."""
        if not dense:
            with self.store.snapshot():
                yield
            return
        nested = self.store.in_snapshot  # the caller's own snapshot: it cannot be begun again
        for _ in range(100):  # each try but the last had a new commit overtake it: never so many
            with self.store.snapshot():
                gen = self.store.generation()
                self._sync_index()
                with self._index_lock.reading():
                    if self._index_gen <= gen or nested:
                        yield
                        return
        with self.store.snapshot(), self._index_lock.reading():  # overtaken 100 times: search the
            yield  # index as it is (ahead of the snapshot) rather than fail

    def _dense(self, vectors: np.ndarray, depth: int, allowed) -> list[list[tuple[int, float]]]:
        """A (chunk id, score) ranking per query vector (under the index's read lock)."""
        scores, ids = self._index.search(np.asarray(vectors, np.float32), depth, allowed_ids=allowed)
        return [[(c, s) for c, s in zip(row_ids, row_scores) if c >= 0]
                for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]

    def info(self) -> dict:
        self._check_not_removed()  # else a removed store's stale counts, or a 500 over HTTP
        with self._snapshot():
            docs, chunks = self.store.counts()
            generation = self.store.generation()
            keys = self.store.metadata_keys()
            sources = self.store.get_meta(SOURCES, [])
            index = {"kind": getattr(self._index, "kind", "memory"),
                     "requested": self.config["index"], "spec": self._index.spec,
                     "params": self._index.params, "vectors": self._index.ntotal}
            if index["kind"] == ONDISK:  # vectors outside the built lists (all of them before a build)
                index.update(built=self._index.built, waiting=self._index.waiting)
                if self._index.built:
                    index["build"] = self._index.folder.name
        return {
            "name": self.name, "path": str(self.path.resolve()), "model": self.pinned,
            "index": index,
            "chunk_tokens": self.config["chunk_tokens"], "overlap": self.config["overlap"],
            "documents": docs, "chunks": chunks, "generation": generation,
            "metadata_keys": keys,  # what a where filter may name, besides source and id
            "sources": sources,  # what `index` read into it (see sources)
            "size_bytes": sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()),
            "notice": self.notice(),
        }

    def backup(self, dest, home=None) -> dict:
        """Copy this collection, as it is at one instant, to ``dest`` (a name under ``home``
        or a folder) while others go on writing to it: copying its files instead can tear
        the store from its write-ahead log. The copy is a collection of its own, searched by
        its path; back it up again to restore it. Its store is one snapshot (Store.copy_to);
        the index file, read before that snapshot began, is no newer than it, so the copy's
        first opener replays the rest as after a crash. An on-disk build is not copied
        (as large as the vectors, and derived): `semsearch build` remakes it from the store.
        Made like a store at create: under the destination's lock, renamed into place whole."""
        self._check_not_removed()
        path = collection_path(dest, home)
        if path.resolve() == self.path.resolve():
            raise InvalidInput(f"{path} is collection {self.name} itself; back it up into another folder")
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"{path} is a file; a collection is a folder")
        started = time.monotonic()
        with room_needed(path, "no copy was made"):
            path.mkdir(parents=True, exist_ok=True)
            with _locked(path, wait=LOCK_WAIT):
                if (path / STORE_FILE).is_file():
                    raise CollectionExists(f"collection {path} already exists; back up into a new name or folder")
                _remove_own_files(path, shards=False)  # what a killed backup or create left (we hold the lock)
                tag = uuid.uuid4().hex
                index_tmp, store_tmp = path / f".{INDEX_FILE}.{tag}.tmp", path / f".{STORE_FILE}.{tag}.new"
                try:
                    index_copied = _copy_whole(self.path / INDEX_FILE, index_tmp)
                    with self.store.snapshot():
                        generation = self.store.generation()
                        docs, chunks = self.store.counts()
                        self.store.copy_to(store_tmp)
                    if index_copied:
                        os.replace(index_tmp, path / INDEX_FILE)
                    os.replace(store_tmp, path / STORE_FILE)  # the copy exists once its store is whole
                    fsync_dir(path)
                finally:
                    for leftover in [index_tmp, *path.glob(store_tmp.name + "*")]:
                        leftover.unlink(missing_ok=True)
        return {"name": path.name, "path": str(path.resolve()), "source": str(self.path.resolve()),
                "documents": docs, "chunks": chunks, "generation": generation, "index_file": index_copied,
                "size_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
                "seconds": round(time.monotonic() - started, 3)}

    def check(self, repair: bool = False) -> dict:
        """Whether the collection is whole (`semsearch check`): the store's invariants
        (store.check_store: SQLite's integrity_check, both FTS5 tables, documents and their
        chunks, the vectors) and the vector index (CHECK_SAMPLE chunks must find themselves:
        _index_problems). Returns {"name", "path", "documents", "chunks", "index" (what it
        is), "checks": [{"check", "what", "ok"}] (CHECKS, in order), "problems": [{"check",
        "problem", "fix", "repairable"}], "notes" (what could not be checked here),
        "repaired": [what was repaired], "ok": no problem left}.

        ``repair``: under the writer lock (beside a running server), delete documents without
        chunks and chunks without a document, rebuild the lexical tables from the chunks and
        the vector index from the store (and save it), then check again. A store that fails
        SQLite's own check, or whose chunks are wrong (positions, vectors), is not repaired:
        restore a backup or re-index (nothing is repaired in a store that fails SQLite's
        check: writing to a damaged file can spread the damage). ReadOnly where the folder
        cannot be written."""
        repair = validation.flag(repair, "repair")
        self._check_not_removed()
        if repair and self.store.read_only:
            raise ReadOnly(f"collection {self.name} is read-only here ({self.path} cannot be written); "
                           "it can be checked, not repaired")
        found, repaired = self._examine(), []
        fixable = {name for name in CHECKS if found[name] and self._fix(name, False)[0]}
        if repair and fixable and not found["sqlite"]:  # a damaged file is not written to
            if fixable - {"index"}:
                with self.writer():
                    repaired += self.store.repair(found)
            if "index" in fixable:
                self.rebuild_index()
                repaired.append("rebuilt the vector index from the store and saved it")
            found = self._examine()
        notes, facts = found.pop("notes"), found.pop("facts")
        try:
            with self.store.snapshot():
                docs, chunks = self.store.counts()
        except sqlite3.DatabaseError:  # count(*) reads an index SQLite's check found damaged
            docs = chunks = None
        problems = []
        for name, texts in found.items():
            repairable, fix = self._fix(name, found["sqlite"])
            problems += [{"check": name, "problem": text, "fix": fix, "repairable": repairable} for text in texts]
        return {"name": self.name, "path": str(self.path.resolve()), "documents": docs, "chunks": chunks,
                "index": facts, "checks": [{"check": name, "what": CHECKS[name][0], "ok": not found[name]}
                                           for name in CHECKS],
                "problems": problems, "notes": notes, "repaired": repaired, "ok": not problems}

    def _fix(self, check: str, damaged) -> tuple[bool, str]:
        """Whether check(repair=True) fixes a finding of ``check``, and what to do about it.
        In a store that fails SQLite's check nothing is repaired: every finding gets its fix."""
        if damaged:
            return False, CHECKS["sqlite"][2]
        if check == "index" and self.config["index"] == ONDISK:
            return False, f"`semsearch build {self.name}` makes the on-disk index again from the store"
        return CHECKS[check][1], CHECKS[check][2]

    def _examine(self) -> dict[str, list]:
        """Each check's findings (CHECKS), with "notes" and the index's "facts"."""
        found = self.store.problems()
        try:
            found["index"], found["facts"] = self._index_problems()
        except sqlite3.DatabaseError as exc:  # a damaged store (the sqlite check says where)
            found["index"], found["facts"] = [f"the index cannot be brought up to the store ({exc})"], {}
        return found

    def _index_problems(self) -> tuple[list[str], dict]:
        """What is wrong with the vector index, and what it is. An in-memory collection's
        index file is read on its own (opening would warn and rebuild it in memory, hiding
        the fault): it must be readable, this collection's, no newer than the store, and,
        brought up to the store, hold one vector per chunk; CHECK_SAMPLE chunks spread over
        the store must each find themselves in their top CHECK_K hits with their own vector
        (at cosine >= 0.999 in Flat; a vector stored CHECK_K times or more may be crowded out
        by its copies: those pass). Flat scores every vector, so every one must; an
        approximate index (HNSW, IVF, PQ's approximate scores) may miss a few by design, so
        up to 2 % of the sample may. An
        on-disk collection's index is compared by count only."""
        if self.config["index"] == ONDISK or (self.path / ONDISK_POINTER).is_file():
            with self._snapshot():
                n, chunks = self._index.ntotal, self.store.counts()[1]
            facts = {"kind": getattr(self._index, "kind", "memory"), "vectors": n}
            wrong = [f"the on-disk index holds {n} vectors for {chunks} chunks"] if n != chunks else []
            return wrong, facts
        file = self.path / INDEX_FILE
        try:
            index, gen = VectorIndex.load(file, self.id) if file.is_file() else (None, -1)
        except IndexFileError as exc:
            return [str(exc)], {"file": True}
        with self.store.snapshot():
            chunks = self.store.counts()[1]
            if index is None:
                return ([f"index file {file} is missing"] if chunks else []), {"file": False}
            facts = {"file": True, "spec": index.spec, "generation": gen}
            if gen > self.store.generation():  # loaded before this snapshot began: newer than any store state
                return [f"index file {file} is newer than its store (was the store restored from a backup?)"], facts
            self._replay(index, gen)
            facts["vectors"] = index.ntotal
            if index.ntotal != chunks:
                return [f"index file {file}, brought up to the store, holds {index.ntotal} vectors "
                        f"for {chunks} chunks"], facts
            ids, vectors = self.store.sample_chunks(CHECK_SAMPLE)
        with np.errstate(all="ignore"):  # a vector that is not of length 1 is the vectors check's finding
            unit = np.abs(np.linalg.norm(vectors, axis=1) - 1) <= validation.UNIT_TOLERANCE
        ids, vectors = ids[unit], vectors[unit]
        if not len(ids):
            return [], facts
        scores, hits = index.search(vectors, CHECK_K)
        close = scores >= 0.999 if index.exhaustive else True  # a compressed index's scores are approximate
        found = ((hits == ids[:, None]) & close).any(axis=1) | (scores[:, -1] >= 0.999)
        missed = ids[~found]
        facts["sampled"] = len(ids)
        if len(missed) > (0 if index.exhaustive else 0.02 * len(ids)):
            return [f"{len(missed)} of {len(ids)} sampled chunks are not found by their own vector "
                    f"(e.g. chunk {missed[0]})"], facts
        return [], facts

    def notice(self) -> str | None:
        """What to do when most of the text is in a script the model was not trained on."""
        from .lang import script_notice
        with self.store.snapshot():  # a transaction: close() waits for it
            texts = self.store.sample_texts()
        return script_notice(texts, self.pinned["name"])


def index_files(name_or_path, paths: Iterable[str | os.PathLike], glob=None,
                remove_missing: bool = True, progress: bool = False, ingest=None, exclude=None,
                gitignore: bool = False, **settings) -> tuple[dict, IndexReport]:
    """Index files into a collection, creating it if needed; missing paths fail before a
    collection is created. Returns (collection name, document count and notice, report).
    ``ingest(coll, paths, glob=, exclude=, gitignore=, remove_missing=, progress=)`` replaces
    ``Collection.add_files`` (`index --ray`: distributed.pipeline.index_paths)."""
    from .loaders import Selection, list_files
    paths = validation.path_list(paths)
    validation.flag(remove_missing, "remove_missing")  # as the rest: before a collection is made
    list_files(paths, Selection.of(glob, exclude, gitignore))  # NotFound now, not after an empty collection is made
    with Collection.open_or_create(name_or_path, **settings) as coll:
        coll.remember_sources(paths, glob, exclude, gitignore)
        ingest = ingest or Collection.add_files
        report = ingest(coll, paths, glob=glob, exclude=exclude, gitignore=gitignore,
                        remove_missing=remove_missing, progress=progress)
        return {"name": coll.name, "documents": coll.count(), "notice": coll.notice()}, report


def _within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (Store.documents_under's test, in Python)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def source_runs(name_or_path, home=None) -> list[dict]:
    """A collection's sources (Collection.sources) as runs of index_files: consecutive
    sources of one selection go in one run, {"paths", "glob", "exclude", "gitignore"}; no
    model is loaded. InvalidInput where the collection has none (made by `add`, or before
    sources were kept): then the paths must be given."""
    with Collection.open(collection_path(name_or_path, home)) as coll:
        sources, name = coll.sources, coll.name
    if not sources:
        raise InvalidInput(f"collection {name} has no sources to index again (none was indexed from files "
                           "since it kept them): give the PATHS to index")
    runs: list[dict] = []
    for s in sources:
        selection = {"glob": s["glob"], "exclude": s["exclude"], "gitignore": s["gitignore"]}
        if runs and {k: runs[-1][k] for k in selection} == selection:
            runs[-1]["paths"].append(s["path"])
        else:
            runs.append({"paths": [s["path"]], **selection})
    return runs


def plan_files(name_or_path, paths: Iterable[str | os.PathLike], glob=None, exclude=None,
               gitignore: bool = False, remove_missing: bool = True, home=None,
               model: str | None = None, **settings) -> IndexPlan:
    """What index_files would do with these arguments, none of it done (`index --dry-run`):
    the files are walked and read (hashed) as a run reads them, and compared with what the
    collection holds, but no model is loaded, nothing is written and no collection is made.
    An existing collection's settings are checked as a run checks them."""
    from .loaders import Selection, list_files

    remove_missing = validation.flag(remove_missing, "remove_missing")
    roots = [validation.source_path(p) for p in validation.path_list(paths)]
    select = Selection.of(glob, exclude, gitignore)
    files = list_files(roots, select)  # NotFound for a missing path
    plan, report, seen = IndexPlan(), IndexReport(), set()
    path = collection_path(name_or_path, home)
    plan.exists = (path / STORE_FILE).is_file()
    coll = Collection.open(path, model=model) if plan.exists else None
    with coll if coll is not None else nullcontext():
        known = {}
        if coll is not None:
            coll.check_settings(**settings)
            with coll.store.snapshot():
                known = coll.store.document_hashes()
        holders = {digest: key for key, digest in known.items() if digest is not None}
        for doc in changed_documents(files, known, report, seen):
            (plan.changed if doc.key in known else plan.new).append(doc.key)
            if doc.content_hash in holders:
                with coll.store.snapshot():
                    if reusable(coll.store, info_of(doc), holders[doc.content_hash]):
                        plan.reused.append(doc.key)
        if remove_missing and coll is not None:
            with coll.store.snapshot():
                plan.removed = missing_documents(coll.store, roots, seen, select, report.unread,
                                                 [f for f in files if isinstance(f, str)])
    plan.unchanged, plan.skipped = report.unchanged, report.skipped
    return plan


def delete_collection(name_or_path, home=None) -> Path:
    """Delete a collection's own files (and its folder, once empty), refusing while someone
    writes to it. Anything else in the folder is left where it is."""
    path = collection_path(name_or_path, home)
    if not (path / STORE_FILE).is_file():
        raise NoSuchCollection(f"no collection {str(name_or_path)!r}")
    if not is_store(path / STORE_FILE):
        raise NoSuchCollection(f"{path} holds a {STORE_FILE} that is not a semsearch store; "
                               "not removing anything")
    lock = _try_lock(path)
    if lock is None:
        raise CollectionBusy(f"collection {path.name} is being written; not removing it")
    building = None  # a build does not hold the writer lock: its own lock says it is running
    if (path / ONDISK_BUILD_LOCK).parent.is_dir() and (building := _acquire(path, 0, ONDISK_BUILD_LOCK)) is None:
        lock.release()
        raise CollectionBusy(f"collection {path.name} is being built (`semsearch build`); not removing it")
    try:
        _remove_own_files(path)
        # unlinked while held: a writer waiting on it finds it gone once it has it (filelock
        # 4 checks) and takes a new one; released first, for an instant two could hold one each
        (path / LOCK_FILE).unlink(missing_ok=True)
    finally:
        if building is not None:
            building.release()
        lock.release()
    others = sorted(p.name for p in path.iterdir())
    if others:
        log.warning("left %d file(s) in %s that semsearch did not create (e.g. %s)",
                    len(others), path, others[0])
    else:
        try:
            path.rmdir()
        except OSError:  # a create got in since: the collection is removed all the same
            pass
    return path


# ------------------------------------------------------------------------------ helpers
def _remove_own_files(path: Path, shards: bool = True) -> None:
    """Delete the files of the collection at ``path`` but its lock (the caller holds it),
    the store first: `rm`, and a create where a killed `rm` or create left some (an old
    -wal SQLite would replay into the new store, an index file or build of the old one).
    ``shards``: the build's Parquet shards too (a build clears them before it writes)."""
    for name in OWN_FILES[:-1] + (ONDISK_POINTER, ONDISK_CHANGES):
        (path / name).unlink(missing_ok=True)
    for scratch in [*path.glob(f".{INDEX_FILE}.*.tmp"), *path.glob(f".{ONDISK_CHANGES}.*.tmp"),
                    *path.glob(f".{ONDISK_POINTER}.*"), *path.glob(STORE_SCRATCH)]:
        scratch.unlink(missing_ok=True)
    for build in [*path.glob(ONDISK_BUILDS), *path.glob(f"{ONDISK_SCRATCH}*")] + [path / ONDISK_SHARDS] * shards:
        if build.is_dir():
            shutil.rmtree(build)


def load_pinned(pin: dict, device: str = "auto", threads: int | None = None):
    """The pinned model: from the folder it was exported to if that is still there (no
    export extra needed), else resolved by name as when the collection was made."""
    from .embedder import Embedder
    from .models import DEFAULT_MODEL, MANIFEST
    folder = pin.get("folder")
    if folder and (Path(folder) / MANIFEST).is_file():
        return Embedder.from_folder(folder, pin["variant"], device=device, threads=threads)
    source = None if pin["name"] == DEFAULT_MODEL else pin["source"]
    return Embedder.load(source, variant=pin["variant"], device=device, threads=threads)


def _check_model(coll: Collection, name: str) -> None:
    if name != coll.pinned["name"]:
        raise WrongModel(f"collection {coll.name} was built with {coll.pinned['name']}, "
                         f"not {name}; search it with its own model or re-index")


def _check_pin(coll: Collection, embedder):
    pin, m = coll.pinned, embedder.manifest
    _check_model(coll, m["name"])
    if (m["dim"], m["pooling"]) != (pin["dim"], pin["pooling"]):
        raise ModelError(f"model {pin['name']} now gives {m['dim']}-d {m['pooling']} vectors; "
                         f"collection {coll.name} holds {pin['dim']}-d {pin['pooling']}: re-index")
    if m["variants"]["fp32"]["sha256"] != pin["sha256"]:
        log.warning("the export of %s changed since %s was built; re-index for exact scores",
                    pin["name"], coll.name)
    return embedder


def _fusion(rrf_k, weights, feedback_docs, feedback_weight) -> Fusion:
    return Fusion(validation.positive_int(rrf_k, "rrf_k", 10_000), validation.weights(weights),
                  validation.positive_int(feedback_docs, "feedback_docs", 1_000) if feedback_docs else 0,
                  validation.finite(feedback_weight, "feedback_weight", 0.0, validation.MAX_WEIGHT))


class _AllowedCache:
    """The last few filters' allowed chunk ids, keyed by (generation, filter), shared by
    threads: bounded in entries and in ids (4M ids = 32 MB), older generations dropped as a
    newer one comes in. The arrays are read-only, as every thread gets the same one."""

    def __init__(self, entries: int = 32, max_ids: int = 4_000_000):
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._ids, self.entries, self.max_ids = 0, entries, max_ids

    def get(self, key: tuple[int, str], compute) -> np.ndarray:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        found = compute()  # outside the lock: another thread's filter need not wait for this one
        found.flags.writeable = False
        with self._lock:
            if key not in self._items:
                for old in [k for k in self._items if k[0] < key[0]]:
                    self._ids -= len(self._items.pop(old))
                self._items[key] = found
                self._ids += len(found)
                while len(self._items) > self.entries or self._ids > self.max_ids:
                    self._ids -= len(self._items.popitem(last=False)[1])
        return found


class _ReadWriteLock:
    """Many readers or one writer: searches share the in-memory index, syncing mutates it."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None

    @contextmanager
    def reading(self):
        me = threading.get_ident()
        with self._cond:
            while self._writer not in (None, me):
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:  # re-entrant (a rebuild inside a sync)
                yield
                return
            while self._writer is not None or self._readers:
                self._cond.wait()
            self._writer = me
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()


def _copy_whole(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` and fsync it; False if there is no ``source``. Files
    are replaced whole (written aside, renamed), so an open one is one version throughout."""
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        if source.exists():  # the target's folder went away: not ours to hide
            raise
        target.unlink(missing_ok=True)
        return False
    return True


def _try_lock(path: Path):
    """The collection's writer lock if it is free right now, else None."""
    return _acquire(path, 0)


@contextmanager
def _locked(path: Path, wait: float):
    lock = _acquire(path, wait)
    if lock is None:
        raise CollectionBusy(f"collection {path.name} is being created or written by another process")
    try:
        yield
    finally:
        lock.release()


def _acquire(path: Path, wait: float, name: str = LOCK_FILE):
    """The lock file ``name`` of the collection at ``path`` (the writer lock unless named),
    if it can be had within ``wait`` seconds, else None."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path / name))
    try:
        if (path / name).parent != path:  # the build lock's own folder; never the collection's:
            (path / name).parent.mkdir(exist_ok=True)  # made again, `rm` would leave it behind
        lock.acquire(timeout=wait)
    except Timeout:
        return None
    except FileNotFoundError:
        raise NoSuchCollection(f"collection {path.name} was removed (`semsearch rm`?)") from None
    return lock


def _family(spec: str) -> str:
    return re.sub(r"\d+", "", spec.split(",")[0]).lower()


def _needs_no_training(spec: str, dim: int) -> bool:
    try:
        VectorIndex.empty(dim, spec)
        return True
    except ValueError as exc:
        if "needs training" in str(exc):
            return False
        raise InvalidInput(str(exc)) from None


class _Counted:
    """A document's segments; counts undecodable bytes into the report once read."""

    def __init__(self, doc, report: IndexReport):
        self.doc, self.report = doc, report

    def __iter__(self):
        yield from self.doc.segments()
        self.report.replaced_chars += self.doc.replaced_chars


def _progress(items, enabled: bool, unit: str):
    from .progress import bar
    return bar(items, enabled, unit=unit)


def _file_progress(files: list, enabled: bool, report: IndexReport):
    """Files read out of files found (so an ETA), with documents written and documents/s
    alongside, asked when shown: open until the last document is written, as reading runs
    ahead of embedding (one big file is read at once, then embedded for minutes)."""
    from .progress import bar

    shown = bar(files, enabled, unit="file", total=len(files))

    def docs() -> str:
        done = report.added + report.updated + report.unchanged
        return f"{done} docs written, {done / shown.elapsed():.1f} docs/s"  # files are read ahead

    shown.note(docs)
    return shown
