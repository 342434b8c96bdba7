"""`semsearch build`: a collection's vectors -> Parquet shards -> on-disk IVF, published
beside the store and searched memory-mapped from then on.

The store stays the truth: the shards are exported from it (streamed, one batch of
rows at a time), and the build records the store generation it reflects, so deletes
and adds made after it are replayed on open (tombstones and a small in-memory delta,
see ondisk.MmapIndex) until the next build folds them into new lists.
"""
from __future__ import annotations

import json
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..collection import INDEX_FILE, ONDISK_SHARDS as SHARDS_DIR
from . import ondisk

SHARD_ROWS = 1_000_000  # vectors per Parquet shard (1.5 GB at 384-d): one fill task's input
EXPORT_ROWS = 50_000  # store rows exported at a time (~130 MB at 384-d): the export's memory
SHARD_FILE = re.compile(r"\.?part-\d{5}\.parquet(\.tmp)?")  # what export_shards writes, and nothing else


def shards_folder(folder: Path, clear: bool = False) -> Path:
    """``folder`` checked to hold nothing but shards of an earlier build (or nothing):
    a build replaces them, and must never delete anything else (``--shards ~/data``, or
    the collection's own folder). ``clear`` removes the old shards."""
    from ..errors import InvalidInput

    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"shards folder {folder} is a file")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if not SHARD_FILE.fullmatch(p.name) or p.is_dir())
        if others:
            raise InvalidInput(f"shards folder {folder} holds files that are not a build's shards "
                               f"(e.g. {others[0]}): give a new or empty folder")
        if clear:
            for p in folder.iterdir():
                p.unlink()
    return folder


def export_shards(coll, folder: Path, rows_per_shard: int = SHARD_ROWS) -> tuple[list[Path], int]:
    """Write every live chunk (id, key, chunk, text, metadata, vector) as Parquet shards,
    one store batch (EXPORT_ROWS) at a time; returns (shards, store generation they
    reflect). One consistent snapshot. On a full disk, OutOfSpace, and what it wrote is
    removed at once (else a failure leaves a .tmp shard: the next export clears the folder)."""
    from ..errors import OutOfSpace
    from ..store import disk_full

    shards_folder(folder, clear=True).mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    shard = None
    store = coll.store
    try:
        with store.snapshot():
            generation = store.generation()
            for ids, vectors in store.vectors(batch=EXPORT_ROWS):
                info = store.chunk_rows(ids.tolist())
                got = [info[i] for i in ids.tolist()]
                if shard is None:
                    shard = ondisk.ShardWriter(folder / f"part-{len(shards):05d}.parquet")
                shard.write(ids, vectors, key=[r[0] for r in got], chunk=[r[1] for r in got],
                            text=[r[4] for r in got], metadata=[json.dumps(r[6]) for r in got])
                if shard.rows >= rows_per_shard:
                    shards.append(shard.close())
                    shard = None
            if shard is not None:
                shards.append(shard.close())
    except (OSError, RuntimeError) as exc:
        if not disk_full(exc, folder):
            raise
        if shard is not None:
            shard.discard()
        shards_folder(folder, clear=True)
        raise OutOfSpace.at(folder, "exporting the vectors there stopped and what it wrote is removed; "
                            "the index in use is unchanged") from None
    return shards, generation


def build_collection(name_or_path, home=None, shards_dir=None, address: str | None = None,
                     memory_budget_mb: float | None = None, spec: str = "auto",
                     rows_per_shard: int = SHARD_ROWS, log: Callable[[str], None] = lambda m: None) -> dict:
    """Build (or rebuild) a collection's on-disk index; returns what ``info`` would add.

    Writers are not stopped: the shards are one snapshot of the store, whose generation
    the build records, and what is written after it is replayed on the build when a
    collection opens it (tombstones and the in-memory delta). Only one build of a
    collection runs at a time (collection.ONDISK_BUILD_LOCK); another fails at once (CollectionBusy)."""
    from .. import validation
    from ..collection import Collection
    from ..errors import InvalidInput, OutOfSpace, ReadOnly
    from .cluster import connected

    if memory_budget_mb is not None:
        memory_budget_mb = validation.finite(memory_budget_mb, "memory budget (MiB)", minimum=1)
    validation.string(spec, "spec")
    with Collection.open(name_or_path, home=home) as coll:
        if coll.store.read_only:
            raise ReadOnly(f"collection {coll.name} is read-only here ({coll.path} cannot be written)")
        given = validation.user_path(validation.path(shards_dir, "shards")) if shards_dir else None  # --shards=~/x
        folder = shards_folder(given or coll.path / SHARDS_DIR)
        if spec != "auto":
            ondisk.check_spec(spec, coll.pinned["dim"])
        if not coll.store.counts()[1]:
            raise InvalidInput(f"collection {coll.name} has no vectors to build an index from")
        with building(coll), connected(address):  # the lock first: `rm` waits for it, not for Ray
            ondisk.remove_scratch(coll.path)  # what a killed build left
            log(f"exporting the vectors of {coll.name} to {folder}")
            shards, generation = export_shards(coll, folder, rows_per_shard)
            if not shards:
                raise InvalidInput(f"collection {coll.name} has no vectors to build an index from")
            try:
                built = ondisk.build(shards, ondisk.next_folder(coll.path), spec=spec,
                                     memory_budget_mb=memory_budget_mb, generation=generation,
                                     owner=coll.id, use_ray=True, log=log)
            except OutOfSpace:  # the shards are as large as the vectors, and the next build writes them anew
                shards_folder(folder, clear=True)
                raise
            ondisk.publish(coll.path, built, stat.S_IMODE(coll.store.path.stat().st_mode))  # as open as the store
            # changes saved for the old build are ignored by the new one (they name their build),
            # and an in-memory index file is never read again (as large as the vectors)
            (coll.path / ondisk.CHANGES).unlink(missing_ok=True)
            (coll.path / INDEX_FILE).unlink(missing_ok=True)
            return {"kind": ondisk.MmapIndex.kind, "folder": str(built),
                    **json.loads((built / "meta.json").read_text())}


@contextmanager
def building(coll):
    """The collection's build lock, held for a whole build: builds exclude each other
    (they share the scratch, shards and next build folder), not writers; `rm` waits for it."""
    from ..collection import ONDISK_BUILD_LOCK, _acquire
    from ..errors import CollectionBusy

    lock = _acquire(coll.path, 0, ONDISK_BUILD_LOCK)
    if lock is None:
        raise CollectionBusy(f"collection {coll.name} is being built by another process; "
                             "try again when it finishes")
    try:
        # `rm` (and a new collection of the same name) may have come between open and this
        # lock; past it, rm waits. A build of the removed store must not publish into the new one.
        coll._check_not_removed()
        yield
    finally:
        lock.release()
