"""IVF indexes bigger than RAM: Parquet shards -> IVF trained on a sample -> one IVF per
shard (in parallel Ray tasks) -> inverted lists merged on disk -> searched memory-mapped.

The shape autofaiss and clip-retrieval use. No step holds more than one shard's vectors
(plus the training sample) in memory; the merged lists live in one ``.ivfdata`` file that
faiss maps (``OnDiskInvertedLists``), so opening is cheap and the page cache decides what
stays in RAM.

Files of a built index (a folder, ``ondisk-<n>/`` inside a collection):
``lists.ivfdata`` (the merged lists), ``index.faiss`` (the quantizer and list offsets,
pointing at ``lists.ivfdata`` in the same folder) and ``meta.json`` (spec, nprobe, count,
largest id, the store generation it was built from). A folder is written whole and then
named in ``ondisk.json`` by an atomic rename, so a reader sees the old build or the new one.

A collection created on-disk (``index="ondisk"``) has no index in memory before its first
build: ``StoreScan`` searches it exactly by streaming the store's vectors a batch at a time.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np

from ..collection import ONDISK_CHANGES as CHANGES, ONDISK_POINTER as POINTER, ONDISK_SCRATCH as SCRATCH
from ..errors import CollectionError, InvalidInput, OutOfSpace
from ..files import atomic_file, fsync_dir
from ..index import TRAIN_MAX, _nlist, _query_like
from ..runtime import fd_redirected
from ..store import disk_full

METRIC = faiss.METRIC_INNER_PRODUCT
READ_ROWS = 16_384  # Parquet rows read at a time (25 MB at 384-d)
PART_ROWS = 65_536  # vectors a fill task holds before writing a part (100 MB at 384-d)
TARGET_RECALL = 0.95
K_FACTOR = 8  # IVF-PQ: candidates per hit re-ranked with exact vectors
SCAN_ROWS = 16_384  # store vectors an exact scan holds at a time (25 MB at 384-d)
SCAN_WARN = 50_000  # an unbuilt collection this large is slow to scan: say so at open
PQ_MIN = 39 * 256  # IVF-PQ's codebooks want 39 training vectors a centroid (faiss), 256 centroids each
DELTA_WARN = 1_000_000  # vectors added since a build held in RAM (1.5 GB at 384-d): advise a build
BUILD_NAME = re.compile(r"ondisk-\d+")  # a build's folder (next_folder)

log = logging.getLogger("semsearch")


# ------------------------------------------------------------------------------ shards
def write_shard(path, ids, vectors, **columns) -> Path:
    """One Parquet shard (``id``, ``vector`` as fixed-size float32 lists, and any other
    columns given, e.g. key / chunk / text / metadata), written atomically."""
    shard = ShardWriter(path)
    shard.write(ids, vectors, **columns)
    return shard.close()


class ShardWriter:
    """A Parquet shard written a batch of rows at a time, so a shard of a million rows is
    never in memory whole; named only once closed (a killed export leaves a .tmp)."""

    def __init__(self, path):
        self.path = Path(path)
        self.rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer = None

    def write(self, ids, vectors, **columns) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise InvalidInput(f"a shard needs one {vectors.shape[-1]}-d vector per id")
        cols = {"id": pa.array(ids),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])}
        cols.update({name: pa.array(values) for name, values in columns.items()})
        table = pa.table(cols)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table, row_group_size=READ_ROWS)
        self.rows += len(ids)

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the unfinished shard: an open file keeps its space once removed."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:  # its footer does not fit either
                pass
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def shard_rows(path) -> int:
    import pyarrow.parquet as pq
    return pq.ParquetFile(path).metadata.num_rows


def read_shard(path, rows: int = READ_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of a shard, ``rows`` at a time: never the whole shard at once."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    for batch in f.iter_batches(batch_size=rows, columns=["id", "vector"]):
        vec = batch.column("vector")
        dim = vec.type.list_size
        flat = vec.flatten().to_numpy(zero_copy_only=False)
        yield (batch.column("id").to_numpy().astype(np.int64, copy=False),
               np.ascontiguousarray(flat, np.float32).reshape(-1, dim))


def shard_dim(path) -> int:
    import pyarrow.parquet as pq
    return pq.ParquetFile(path).schema_arrow.field("vector").type.list_size


# ------------------------------------------------------------------------------ choice
def choose_spec(n: int, dim: int, memory_budget_mb: float | None = None) -> str:
    """IVF-Flat (exact codes, 4*dim bytes a vector on disk) unless the lists' hot part would
    not fit the budget: then IVF-PQ (dim/4 bytes a vector) whose candidates are re-ranked
    exactly from the store's vectors (``refine``). The budget is for the page cache the
    probed lists need: IVF-Flat wants about the whole list file there to be fast. Below
    PQ_MIN vectors PQ's codebooks cannot be trained well (nor at all below 256): Flat."""
    nlist = _nlist(n)
    if memory_budget_mb is None or n < PQ_MIN or n * dim * 4 <= memory_budget_mb * 2**20:
        return f"IVF{nlist},Flat"
    m = dim // 4 if dim % 4 == 0 else dim // 2 if dim % 2 == 0 else dim
    return f"IVF{nlist},PQ{m}"


def _new(spec: str, dim: int):
    try:
        idx = faiss.index_factory(int(dim), spec, METRIC)
    except RuntimeError as e:
        raise InvalidInput(f"invalid on-disk index spec {spec!r}: {_faiss_says(e)}") from None
    if not isinstance(idx, faiss.IndexIVF) or isinstance(idx, faiss.IndexIVFPQR):
        raise InvalidInput(f"on-disk indexes are IVF (IVF<n>,Flat or IVF<n>,PQ<m>), not {spec!r}")
    if idx.nlist < 1:  # faiss makes it, and merging its empty lists fails to map a 0-byte file
        raise InvalidInput(f"on-disk index spec {spec!r} needs at least one list (IVF<n> with n >= 1)")
    if isinstance(idx, faiss.IndexIVFPQ):
        # polysemous codes serve Hamming pre-filtering (polysemous_ht), which search never turns
        # on; their training cost 5x the rest (384-d PQ96 on 10,000 vectors: 90.7 s vs 17.6 s)
        idx.do_polysemous_training = False
    return idx


def check_spec(spec: str, dim: int) -> None:
    """InvalidInput now, for a spec the build would reject after exporting every vector."""
    _new(spec, dim)


def _faiss_says(exc: RuntimeError) -> str:
    """The reason in a faiss error, without its C++ signature and source location."""
    text = str(exc).splitlines()[0]
    for marker in ("failed: ", "Error: ", ": "):
        if marker in text:
            return text.rsplit(marker, 1)[1]
    return text


# ------------------------------------------------------------------------------ steps
def sample(shards: Sequence, n_total: int, size: int = TRAIN_MAX, seed: int = 0) -> np.ndarray:
    """About ``size`` vectors drawn uniformly from all shards, read one batch at a time."""
    rng = np.random.default_rng(seed)
    p = min(1.0, 1.02 * size / max(n_total, 1))  # a little over, then cut: never short of size
    parts = []
    for shard in shards:
        for _ids, vecs in read_shard(shard):
            parts.append(vecs[rng.random(len(vecs)) < p] if p < 1 else vecs)
    out = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return out[np.sort(rng.permutation(len(out))[:size])] if len(out) > size else out


def train(spec: str, vectors: np.ndarray) -> bytes:
    """An empty IVF trained on ``vectors``, serialised (what every shard task starts from)."""
    idx = _new(spec, vectors.shape[1])
    nlist = faiss.extract_index_ivf(idx).nlist
    if len(vectors) < nlist:
        raise InvalidInput(f"{spec!r} needs at least {nlist} training vectors, got {len(vectors)}")
    try:
        idx.train(vectors)
    except RuntimeError as e:  # e.g. PQ codebooks want 256 vectors each
        raise InvalidInput(f"cannot train {spec!r} on {len(vectors):,} vectors: {_faiss_says(e)}") from None
    return faiss.serialize_index(idx).tobytes()


def fill_shard(trained: bytes, shard, out_prefix, part_rows: int = PART_ROWS) -> list[str]:
    """Add one shard's vectors to copies of the trained index, writing a part file every
    ``part_rows`` vectors: a task's memory is bounded by part_rows, not by the shard."""
    outs, idx = [], None
    for ids, vecs in read_shard(shard, min(READ_ROWS, part_rows)):
        if idx is None:
            idx = faiss.deserialize_index(np.frombuffer(trained, np.uint8))
        idx.add_with_ids(vecs, ids)
        if idx.ntotal >= part_rows:
            outs.append(_write_part(idx, f"{out_prefix}-{len(outs):04d}.faiss"))
            idx = None
    if idx is not None:
        outs.append(_write_part(idx, f"{out_prefix}-{len(outs):04d}.faiss"))
    return outs


def _write_part(idx, out: str) -> str:
    faiss.write_index(idx, f"{out}.tmp")
    os.replace(f"{out}.tmp", out)
    return out


def fill_shards(trained: bytes, shards: Sequence, out_dir: Path, use_ray: bool,
                part_rows: int = PART_ROWS) -> list[str]:
    """Part indexes of every shard, in shard order: one Ray task (one CPU) per shard when
    Ray is up, else one shard after the other."""
    prefixes = [str(out_dir / f"shard-{i:05d}") for i in range(len(shards))]
    if use_ray:
        import ray
        ref = ray.put(trained)
        # a fresh worker per shard: the allocator of a reused one keeps what a shard took
        task = ray.remote(num_cpus=1, max_retries=3, max_calls=1)(fill_shard)
        parts = ray.get([task.remote(ref, str(s), o, part_rows) for s, o in zip(shards, prefixes)])
    else:
        parts = [fill_shard(trained, str(s), o, part_rows) for s, o in zip(shards, prefixes)]
    return [p for shard_parts in parts for p in shard_parts]


def exact_search(batches, queries: np.ndarray, k: int, allowed_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner product over (ids, vectors) batches, holding one batch at a time
    (a running faiss ResultHeap); ``allowed_ids`` (sorted, unique): only those ids.
    -inf / -1 pad missing hits, as VectorIndex.search does."""
    q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for ids, vectors in batches:
        if allowed_ids is not None:
            keep = np.isin(ids, allowed_ids, assume_unique=True)
            ids, vectors = ids[keep], vectors[keep]
        if len(ids):
            D, I = faiss.knn(q, np.ascontiguousarray(vectors, np.float32), min(k, len(ids)), metric=METRIC)
            heap.add_result(D, np.where(I >= 0, ids[np.maximum(I, 0)], -1))
    heap.finalize()
    heap.D[heap.I < 0] = -np.inf
    return heap.D, heap.I


def ground_truth(shards: Sequence, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner product over every shard, streamed."""
    return exact_search((batch for shard in shards for batch in read_shard(shard)), queries, k)


def build(shards: Sequence, out_dir, spec: str = "auto", memory_budget_mb: float | None = None,
          generation: int = 0, use_ray: bool | None = None, log=lambda msg: None,
          part_rows: int = PART_ROWS, owner: str | None = None) -> Path:
    """Build the on-disk index of ``shards`` into the folder ``out_dir``; returns it.

    Train on a sample, fill one IVF per shard (Ray tasks when Ray is initialised),
    merge the lists on disk, tune nprobe on query-like vectors against exact search.
    ``owner`` (the collection's id) is recorded: a collection maps no other's build.
    """
    shards = [str(s) for s in shards]
    if not shards:
        raise InvalidInput("no shards to build from")
    if use_ray is None:
        use_ray = _ray_up()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    rows = [shard_rows(s) for s in shards]
    n = sum(rows)
    dim = shard_dim(shards[0])
    if spec == "auto":
        spec = choose_spec(n, dim, memory_budget_mb)
    check_room(out_dir.parent, space_needed(rows, spec, dim, part_rows))
    train_set = sample(shards, n)
    log(f"training {spec} on {len(train_set):,} of {n:,} vectors")
    trained = train(spec, train_set)
    t_train = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=SCRATCH, dir=out_dir.parent))
    try:
        log(f"filling {len(shards)} shard indexes" + (" in Ray tasks" if use_ray else ""))
        parts = fill_shards(trained, shards, tmp, use_ray, part_rows)
        t_fill = time.perf_counter()
        log("merging the inverted lists on disk")
        index = faiss.deserialize_index(np.frombuffer(trained, np.uint8))
        with fd_redirected(1, 2):  # faiss says "resizing <file> to <n> bytes"
            _merge_parts(index, parts, str(tmp / "lists.ivfdata"))
        faiss.write_index(index, str(tmp / "index.faiss"))
        del index
        for p in parts:
            os.unlink(p)
        if _is_pq(spec):
            write_refine_vectors(shards, tmp)
        t_merge = time.perf_counter()
        mmap = MmapIndex(tmp, {"spec": spec, "dim": dim, "ntotal": n, "nprobe": 1, "max_id": -1,
                               "generation": int(generation)})
        max_id = max(int(pq_max(s)) for s in shards)
        rng = np.random.default_rng(1)
        queries = _query_like(train_set[rng.choice(len(train_set), min(500, len(train_set)), replace=False)], rng)
        _, truth = ground_truth(shards, queries, 10)
        nprobe, recall = mmap.tune(queries, truth)
        meta = {"spec": spec, "dim": dim, "ntotal": n, "nprobe": nprobe, "max_id": max_id,
                "generation": int(generation), "collection_id": owner, "recall_at_10": round(recall, 4),
                "seconds": {"train": round(t_train - t0, 2), "fill": round(t_fill - t_train, 2),
                            "merge": round(t_merge - t_fill, 2),
                            "tune": round(time.perf_counter() - t_merge, 2)}}
        mmap.close()
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _fsync_files(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        tmp = out_dir  # not yet published: removed as the scratch was, if what follows fails
        _pin_lists_path(out_dir)
    except BaseException as exc:
        full = disk_full(exc, out_dir.parent)  # asked while what the build wrote still takes the space
        shutil.rmtree(tmp, ignore_errors=True)  # at once: as large as the index, it kept the disk full
        if full:
            raise OutOfSpace.at(out_dir.parent, "the build stopped and what it wrote is removed; "
                                "the index in use is unchanged") from None
        raise
    log(f"built {n:,} vectors: nprobe {nprobe}, recall@10 {recall:.3f} against exact search")
    return out_dir


def space_needed(rows: Sequence[int], spec: str, dim: int, part_rows: int = PART_ROWS) -> int:
    """Bytes a build of shards of ``rows`` vectors has on disk at its peak: the merged lists
    (an id and a code a vector) and the part files they are merged from (as large, each
    with a copy of the trained quantizer), or, for IVF-PQ, the lists and the exact vectors
    it re-ranks with."""
    ivf = faiss.extract_index_ivf(_new(spec, dim))
    n = sum(rows)
    lists = n * (ivf.code_size + 8)
    quantizer = ivf.nlist * (dim * 4 + 8) + (256 * dim * 4 if _is_pq(spec) else 0)  # + PQ's codebooks
    parts = sum(max(1, math.ceil(r / part_rows)) for r in rows)
    refine = n * (dim * 4 + 16) if _is_pq(spec) else 0
    return lists + max(lists + parts * quantizer, refine) + 2 * quantizer


def check_room(folder: Path, need: int) -> None:
    """OutOfSpace now, before anything is written, for a build the disk has no room for:
    faiss writes the merged lists through a memory map of a file it grew, and a page the
    disk has no block for kills the process (SIGBUS) instead of raising."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise OutOfSpace.at(folder, f"this build needs about {_size(need)} and {_size(free)} are free; "
                            "nothing was written and the index in use is unchanged")


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _reserve(path: str, size: int) -> None:
    """Allocate ``size`` bytes of ``path`` now, or raise OSError (ENOSPC, EDQUOT): the check
    just before faiss maps the lists file, which also sees a quota (statvfs does not) and
    what others wrote since check_room. faiss truncates the file as it opens it, so the
    blocks are let go an instant before its writes take them again."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            if disk_full(exc, Path(path).parent):
                raise
            # a filesystem that cannot allocate ahead (EOPNOTSUPP, EINVAL): check_room's word stands


def _merge_parts(index, parts: Sequence[str], lists_file: str) -> None:
    """Move the inverted lists of the part indexes into the empty trained ``index``, as one
    on-disk lists file. faiss.contrib.ondisk.merge_ondisk does this but detaches each
    part's lists from its index and never frees them, so every build left its part files
    (deleted after the merge, together as large as the index) mapped: their disk space
    stayed in use until the process ended. Here each part index keeps, and frees, its own."""
    readers = [faiss.read_index(p, faiss.IO_FLAG_MMAP) for p in parts]
    sources = faiss.InvertedListsPtrVector()
    for reader in readers:
        sources.push_back(faiss.extract_index_ivf(reader).invlists)
    ivf = faiss.extract_index_ivf(index)
    _reserve(lists_file, sum(int(r.ntotal) for r in readers) * (ivf.code_size + 8))
    merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, lists_file)
    index.ntotal = ivf.ntotal = merged.merge_from_multiple(sources.data(), sources.size(), False)
    ivf.replace_invlists(merged, True)  # the index owns the merged lists from here
    merged.this.disown()


def pq_max(shard) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    return pc.max(pq.read_table(shard, columns=["id"]).column("id")).as_py()


def _ray_up() -> bool:
    import sys
    ray = sys.modules.get("ray")
    return bool(ray and ray.is_initialized())


def _fsync_files(path: Path) -> None:
    """Every file in ``path``, then the folder itself, made durable."""
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(path)


# ------------------------------------------------------------------------------ searching
def _is_pq(spec: str) -> bool:
    return ",PQ" in spec.upper()


def write_refine_vectors(shards: Sequence, folder: Path) -> None:
    """The exact vectors an IVF-PQ build re-ranks with: ``vectors.f32`` (shard order) and,
    sorted by id, ``ids.i64`` with each id's row in ``rows.i64``; all memory-mapped."""
    ids = []
    with open(folder / "vectors.f32", "wb") as f:
        for shard in shards:
            for i, v in read_shard(shard):
                f.write(np.ascontiguousarray(v, "<f4").tobytes())
                ids.append(i)
    ids = np.concatenate(ids)
    order = np.argsort(ids, kind="stable")
    ids[order].astype("<i8").tofile(folder / "ids.i64")
    order.astype("<i8").tofile(folder / "rows.i64")


class MmapIndex:
    """A merged on-disk IVF, memory-mapped read-only, plus what changed since it was built.

    Deletes of built vectors are tombstones (excluded inside faiss by an IDSelector);
    vectors added since the build live in a small exact in-memory index searched
    alongside. Both are folded into the lists by the next build.
    """

    kind = "ondisk"
    built = True

    def __init__(self, folder, meta: dict):
        folder = Path(folder)
        self.folder = folder
        self.meta = meta
        self.dim = int(meta["dim"])
        self.spec = meta["spec"]
        self.params = {"nprobe": int(meta["nprobe"])}
        self._refine = None
        if (folder / "vectors.f32").is_file():  # IVF-PQ: candidates re-ranked exactly
            self.params["k_factor"] = int(meta.get("k_factor", K_FACTOR))
            self._refine = (np.memmap(folder / "ids.i64", "<i8", mode="r"),
                            np.memmap(folder / "rows.i64", "<i8", mode="r"),
                            np.memmap(folder / "vectors.f32", "<f4", mode="r").reshape(-1, self.dim))
        self._index = _read_lists(folder)
        self._ivf = faiss.extract_index_ivf(self._index)
        # faiss starts 32 prefetch threads per search by default: 2 ms a query, 7x what a
        # search costs; the page cache (and readahead) does that job
        faiss.downcast_InvertedLists(self._ivf.invlists).prefetch_nthread = 0
        self._tomb = np.zeros(0, np.int64)
        self._delta = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @classmethod
    def open(cls, folder) -> "MmapIndex":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise CollectionError(f"no on-disk index in {folder} ({e})") from None
        return cls(folder, meta)

    def close(self) -> None:
        self._index = self._ivf = None

    # -- contents
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) - len(self._tomb) + int(self._delta.ntotal)

    @property
    def tombstone_ratio(self) -> float:
        return len(self._tomb) / self._index.ntotal if self._index.ntotal else 0.0

    @property
    def waiting(self) -> int:
        """Vectors not in the built lists (the in-memory delta)."""
        return int(self._delta.ntotal)

    def add(self, ids, vectors) -> None:
        """New vectors go to the in-memory delta (ids newer than the build)."""
        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        if len(ids):
            before = self._delta.ntotal
            self._delta.add_with_ids(vectors, ids)
            if before < DELTA_WARN <= self._delta.ntotal:
                log.warning("%s: %d vectors added since its on-disk build are held in memory; "
                            "`semsearch build %s` folds them into the lists", self.folder.parent.name,
                            self._delta.ntotal, self.folder.parent.name)

    def remove(self, ids) -> None:
        ids = np.unique(np.ascontiguousarray(ids, np.int64))
        if not len(ids):
            return
        self._delta.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))
        built = ids[ids <= int(self.meta["max_id"])]  # newer ids were never in the lists
        self._tomb = np.union1d(self._tomb, built)

    # -- search
    def search(self, queries, k: int, allowed_ids=None, nprobe: int | None = None):
        """Top-k (scores, ids) over lists + delta; -inf / -1 pad missing hits."""
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise InvalidInput(f"queries must have shape (n, {self.dim}), got {q.shape}")
        k = int(k)
        nprobe = int(nprobe or self.params["nprobe"])
        keep = []  # selectors and the arrays they point into must outlive the search
        sel = None
        n_sel = self._index.ntotal - len(self._tomb)
        if allowed_ids is not None:
            allowed = np.unique(np.ascontiguousarray(allowed_ids, np.int64))
            allowed = np.setdiff1d(allowed, self._tomb, assume_unique=True)
            sel = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
            keep.append(allowed)
            n_sel = len(allowed)
        elif len(self._tomb):
            inner = faiss.IDSelectorBatch(len(self._tomb), faiss.swig_ptr(self._tomb))
            sel = faiss.IDSelectorNot(inner)
            keep += [inner, self._tomb]
        scale = max(1.0, self._index.ntotal / max(n_sel, 1)) if sel is not None else 1.0
        if k >= n_sel:  # every candidate asked for: the tuned nprobe would miss those in lists it skips
            nprobe = self._ivf.nlist
        params = faiss.SearchParametersIVF(sel=sel, nprobe=int(min(self._ivf.nlist, math.ceil(nprobe * scale))))
        if self._refine is None:
            D, I = self._index.search(q, k, params=params)
        else:
            D, I = self._refined(q, k, *self._index.search(q, k * self.params["k_factor"], params=params))
        if self._delta.ntotal:
            dsel = None if allowed_ids is None else faiss.IDSelectorBatch(len(keep[0]), faiss.swig_ptr(keep[0]))
            D2, I2 = self._delta.search(q, k, params=faiss.SearchParameters(sel=dsel) if dsel else None)
            D, I = _merge(D, I, D2, I2, k)
        missing = I < 0
        D[missing] = -np.inf
        return D, I

    def _refined(self, q, k, D, I):
        """Exact inner products for the PQ candidates, best k kept."""
        ids, rows, vectors = self._refine
        valid = I >= 0
        at = np.searchsorted(ids, np.where(valid, I, 0))
        exact = np.einsum("qcd,qd->qc", vectors[rows[np.minimum(at, len(ids) - 1)]], q)
        exact = np.where(valid, exact, -np.inf).astype(np.float32)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.where(
            np.take_along_axis(valid, order, 1), np.take_along_axis(I, order, 1), -1)

    def tune(self, queries, truth, target: float = TARGET_RECALL) -> tuple[int, float]:
        """Smallest power-of-two nprobe whose recall@k against ``truth`` reaches target."""
        k = truth.shape[1]
        nprobe, recall = 1, 0.0
        while True:
            _, got = self.search(queries, k, nprobe=nprobe)
            recall = _recall(got, truth)
            if recall >= target or nprobe >= self._ivf.nlist:
                break
            nprobe = min(self._ivf.nlist, nprobe * 2)
        self.params["nprobe"] = nprobe
        return nprobe, float(recall)

    # -- the changes since the build
    def save(self, path, generation: int = 0, owner: str | None = None, mode: int | None = None) -> None:
        """What Collection._save_index calls: the changes, beside the build (``path``,
        ``owner`` and ``mode`` are the in-memory index file's; the build folder lives in its
        own collection, so its place is its identity). Under the writer lock, so any other
        temporary changes file is one a killed save left (as large as the delta)."""
        for orphan in self.folder.parent.glob(f".{CHANGES}.*.tmp"):
            orphan.unlink(missing_ok=True)
        self.save_changes(self.folder.parent / CHANGES, generation, mode)

    def save_changes(self, path, generation: int, mode: int | None = None) -> None:
        """Tombstones and delta, atomically, with the store generation they reflect
        (``mode``: the file's permissions; mkstemp makes it 0600)."""
        path = Path(path)
        delta_ids = faiss.vector_to_array(self._delta.id_map).astype(np.int64)
        delta_vecs = self._delta.index.reconstruct_n(0, self._delta.ntotal) if len(delta_ids) \
            else np.zeros((0, self.dim), np.float32)
        with atomic_file(path, permissions=mode) as f:
            np.savez(f, generation=np.int64(generation), build=np.str_(self.folder.name),
                     tomb=self._tomb, delta_ids=delta_ids, delta_vecs=delta_vecs)

    def load_changes(self, path) -> int | None:
        """Apply saved changes that belong to this build; their generation, else None."""
        try:
            z = np.load(path, allow_pickle=False)
            if str(z["build"]) != self.folder.name:
                return None
            self._tomb = z["tomb"].astype(np.int64)
            self.add(z["delta_ids"], z["delta_vecs"])
            return int(z["generation"])
        except (OSError, ValueError, KeyError):
            return None


class StoreScan:
    """An on-disk collection before its first build: no vector index in memory at all.
    Every search streams the store's vectors (SCAN_ROWS at a time, in the caller's
    snapshot) and keeps an exact top-k, so memory stays one batch whatever the size;
    `semsearch build` replaces it with the memory-mapped IVF."""

    kind = "ondisk"
    built = False
    reads_store = True  # nothing to replay into it and nothing to save: the store is the index
    spec = "exact scan"

    def __init__(self, store, dim: int):
        self.store, self.dim, self.params = store, int(dim), {}

    @property
    def ntotal(self) -> int:
        return self.store.counts()[1]

    waiting = ntotal
    tombstone_ratio = 0.0

    def add(self, ids, vectors) -> None:
        pass

    def remove(self, ids) -> None:
        pass

    def save(self, *args, **kwargs) -> None:
        pass

    def search(self, queries, k: int, allowed_ids=None):
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise InvalidInput(f"queries must have shape (n, {self.dim}), got {q.shape}")
        allowed = None if allowed_ids is None else np.unique(np.asarray(allowed_ids, np.int64))
        return exact_search(self.store.vectors(batch=SCAN_ROWS), q, int(k), allowed)


def _read_lists(folder: Path, flags: int = faiss.IO_FLAG_READ_ONLY):
    """The index with its lists mapped from ``folder/lists.ivfdata``.

    faiss stores the absolute path of the lists file; a folder that was renamed or
    copied (a collection moved or copied elsewhere; build's own rename) is re-read with
    IO_FLAG_ONDISK_SAME_DIR, whose line on C's stdout ("updating ondisk filename") is
    dropped: on stdout it came before the output of `search --json`, on stderr it was
    noise on every search of a copied collection."""
    want = str((folder / "lists.ivfdata").resolve())
    try:
        idx = faiss.read_index(str(folder / "index.faiss"), flags)
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(idx).invlists)
        if lists.filename == want:
            return idx
    except RuntimeError:
        pass
    try:
        with open(os.devnull, "w") as null, fd_redirected(1, null.fileno()):
            return faiss.read_index(str(folder / "index.faiss"), flags | faiss.IO_FLAG_ONDISK_SAME_DIR)
    except RuntimeError as e:
        raise CollectionError(f"on-disk index in {folder} is unreadable: {str(e).splitlines()[0]}") from None


def _pin_lists_path(folder: Path) -> None:
    """Rewrite index.faiss so that it names its lists file by the folder's final path."""
    idx = _read_lists(folder, 0)
    tmp = folder / ".index.faiss.tmp"
    faiss.write_index(idx, str(tmp))
    del idx
    os.replace(tmp, folder / "index.faiss")


def _merge(D1, I1, D2, I2, k):
    """Row-wise top-k of two (scores, ids) result sets, best first."""
    D = np.concatenate([D1, D2], axis=1)
    I = np.concatenate([I1, I2], axis=1)
    D = np.where(I < 0, -np.inf, D)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


# ------------------------------------------------------------------------------ a build's home
def current(parent) -> Path | None:
    """The build folder ``ondisk.json`` in ``parent`` names, if any."""
    try:
        name = json.loads((Path(parent) / POINTER).read_text())["current"]
    except (OSError, ValueError, KeyError):
        return None
    return Path(parent) / name


def publish(parent, folder: Path, mode: int | None = None) -> None:
    """Make ``folder`` the current build (atomic rename of the pointer), drop older ones.
    Readers that still map an older build keep their mapping until they close it.
    ``mode``: the store's permissions, which the build and its pointer take (mkdtemp and
    mkstemp make them 0700 and 0600: another user who reads the store saw no build, and
    loaded every vector into memory instead)."""
    parent = Path(parent)
    old = current(parent)
    if mode is not None:
        for f in folder.iterdir():
            os.chmod(f, mode)
        os.chmod(folder, mode | (mode & 0o444) >> 2)  # folders: x where r
    with atomic_file(parent / POINTER, "w", permissions=mode) as f:  # durable before the old build goes
        json.dump({"current": folder.name}, f)
    if old is not None and old != folder and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def attach(parent) -> tuple[MmapIndex, int] | None:
    """The current on-disk build of the collection in ``parent`` with its saved changes,
    and the store generation it reflects (replay the store from there); None if the
    collection has no build. What Collection._load_index_file calls (see issue 14)."""
    folder = current(parent)
    if folder is None:
        return None
    try:
        index = MmapIndex.open(folder)
    except (CollectionError, OSError):
        if current(parent) == folder:
            raise
        index = MmapIndex.open(folder := current(parent))  # a new build removed it as we opened it
    gen = index.load_changes(Path(parent) / CHANGES)
    return index, int(index.meta["generation"]) if gen is None else gen


def remove_scratch(parent) -> None:
    """Remove what killed builds left in ``parent`` (each as large as an index): their
    scratch folders, and build folders the pointer does not name (a build killed after
    it published and before it removed the one it replaced kept that one for ever).
    Call it under the collection's build lock (build.building), which every build holds."""
    keep = current(parent)
    for left in Path(parent).iterdir():
        if left.is_dir() and (left.name.startswith(SCRATCH) or BUILD_NAME.fullmatch(left.name) and left != keep):
            shutil.rmtree(left, ignore_errors=True)


def next_folder(parent) -> Path:
    old = current(parent)
    n = int(old.name.rsplit("-", 1)[1]) + 1 if old is not None else 1
    return Path(parent) / f"ondisk-{n}"


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    """The share of the true neighbours found: of the ids there are (-1 pads rows of a
    collection smaller than k, and is no neighbour: 6 vectors read as recall 0.7)."""
    found = sum(len(set(g) & set(t) - {-1}) for g, t in zip(got.tolist(), truth.tolist()))
    return found / max(int((truth >= 0).sum()), 1)
