"""The FAISS vector index: a rebuildable cache over the vectors SQLite stores.

Vectors are L2-normalised float32, so every index uses inner product (= cosine).

Id handling. Our ids are arbitrary int64 chunk ids:
* IVF indexes take them natively (with a hashtable direct map so exact vectors
  can be reconstructed by id) and delete with ``remove_ids``.
* Everything else is wrapped in ``IndexIDMap2``; we search its inner index
  ourselves with selectors over *positions* and map positions back to ids.
  Inner indexes that cannot delete (HNSW, IndexRefine) get tombstones:
  positions that searches exclude through the same selector. Positions are
  stable there because nothing is ever physically removed from them.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from pathlib import Path

import faiss
import numpy as np

from .errors import InvalidInput, SemsearchError
from .files import atomic_file, fsync_dir  # noqa: F401 - fsync_dir: where collection.py and ondisk.py import it

METRIC = faiss.METRIC_INNER_PRODUCT
EXACT_FILTER_MAX = 20_000   # filters up to this many ids are scored exactly
TRAIN_MAX = 50_000          # training sample size
KNOB_MAX = {"efSearch": 4096, "k_factor": 64}
_MAGIC = b"SEMSIDX\x02"  # the file's last bytes
_OLD_MAGIC = b"SEMSIDX\x01"  # version 1 put its header first


class IndexFileError(SemsearchError):
    """An index file is missing, truncated or corrupt: rebuild it from the store."""


def _nlist(n: int) -> int:
    """~4*sqrt(n) lists, but few enough that each gets >= 39 training points."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), min(n, TRAIN_MAX) // 39))


def _pq(dim: int) -> str:
    """4-bit fast-scan PQ with 8 (else 4) dims per code; SQ8 when dim fits neither."""
    if dim % 8 == 0:
        return f"PQ{dim // 8}x4fs"
    if dim % 4 == 0:
        return f"PQ{dim // 4}x4fs"
    return "SQ8"


def choose_spec(n: int, dim: int, memory_budget_mb: float | None = None) -> str:
    """Pick the simplest index that is fast enough for n vectors and fits the budget.

    Exact Flat while small, HNSW32 beyond 50k, and under a budget that cannot
    hold the full vectors an IVF-PQ whose candidates are re-ranked by an
    SQ8 copy (``Refine(SQ8)``, 1 byte a dimension). ``RFlat`` would keep all
    float32 vectors in RAM again, i.e. more than Flat itself, so it can never
    honour a budget Flat exceeds; SQ8 re-ranking is near exact and tune()
    measures what it reaches. If even that exceeds the budget it is still
    the smallest index offered here.
    """
    flat = n * (dim * 4 + 16)            # vectors + id map
    hnsw = flat + n * 32 * 2 * 4 * 1.1   # + level-0 links (2*M int32) and upper levels
    budget = None if memory_budget_mb is None else memory_budget_mb * 2**20
    if n < 50_000 and (budget is None or flat <= budget):
        return "Flat"
    if budget is None or hnsw <= budget:
        return "HNSW32"
    return f"IVF{_nlist(n)},{_pq(dim)},Refine(SQ8)"


def resolve_spec(spec: str, n: int, dim: int, memory_budget_mb=None) -> str:
    """Turn a shortcut name into a factory string; other strings pass unchanged."""
    s = spec.strip().lower()
    if s == "auto":
        return choose_spec(n, dim, memory_budget_mb)
    if s == "flat":
        return "Flat"
    if s == "hnsw":
        return "HNSW32"
    if s == "ivf":
        return f"IVF{_nlist(n)},Flat"
    if s == "ivfpq":
        return f"IVF{_nlist(n)},{_pq(dim)},RFlat"
    return spec.strip()


def _faiss_msg(e: Exception) -> str:
    """The useful first line of a faiss error, without the C++ location."""
    line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", line)


def _down(idx):
    return faiss.downcast_index(idx) if type(idx) is faiss.Index else idx


def _children(idx):
    """The sub-index that search parameters for ``idx`` pass on to, if any."""
    if isinstance(idx, faiss.IndexRefine):
        return _down(idx.base_index)
    if isinstance(idx, faiss.IndexPreTransform):
        return _down(idx.index)
    return None


def _knob_limits(idx) -> dict:
    """Search knobs this index structure has, with their largest useful value."""
    out = {}
    while idx is not None:
        if isinstance(idx, faiss.IndexRefine):
            out["k_factor"] = KNOB_MAX["k_factor"]
        elif isinstance(idx, faiss.IndexHNSW):
            out["efSearch"] = KNOB_MAX["efSearch"]
        elif isinstance(idx, faiss.IndexIVF):
            out["nprobe"] = int(idx.nlist)
        idx = _children(idx)
    return out


def _exact_store(idx) -> bool:
    """Whether reconstruct() returns the exact float32 vectors."""
    if isinstance(idx, faiss.IndexRefine):
        return isinstance(_down(idx.refine_index), faiss.IndexFlat)
    if isinstance(idx, faiss.IndexHNSW):
        return isinstance(_down(idx.storage), faiss.IndexFlat)
    return isinstance(idx, (faiss.IndexFlat, faiss.IndexIVFFlat))


def _query_like(points: np.ndarray, rng, cosine: float = 0.75) -> np.ndarray:
    """Unit vectors at ``cosine`` to each of ``points``, in random directions.

    Tuning on the collection's own vectors overstates recall: a stored vector starts
    next to its neighbours (measured at 1M: efSearch 16 tuned to 0.95 that way gave 0.91
    for queries from outside). Real queries sit at ~0.7-0.8 cosine from their best match;
    at 0.8 IVF-PQ's tuned knobs still fell short on held-out queries (0.941), at 0.75
    both HNSW and IVF-PQ reached >= 0.96 (benchmarks/README.md).
    """
    noise = rng.standard_normal(points.shape).astype(np.float32)
    noise -= (noise * points).sum(1, keepdims=True) * points  # orthogonal to each point
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = points + math.sqrt(1 / cosine**2 - 1) * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _sel_array(ids: np.ndarray):
    return faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)), ids


class VectorIndex:
    """A FAISS index over int64 chunk ids with deletes, filters, tuning and atomic files."""

    def __init__(self, index, spec: str, dim: int, params: dict | None = None,
                 tombstones: np.ndarray | None = None):
        self._index = index
        self.spec = spec
        self.dim = dim
        self._native = isinstance(index, faiss.IndexIVF)
        self._inner = index if self._native else _down(index.index)
        self.params = dict(params or {})
        for knob in _knob_limits(self._inner):
            self.params.setdefault(knob, {"efSearch": 16, "nprobe": 1, "k_factor": 1}[knob])
        self._tomb = np.zeros(0, np.int64) if tombstones is None else np.asarray(tombstones, np.int64)
        self._ids_cache = None
        self._id_bound = None  # >= every id faiss holds, dead ones too (see _above_all)
        self._plain = None  # (knob values, their SearchParameters, objects they point to)
        self._gpu = None
        try:  # HNSW and IndexRefine cannot delete: probe with an empty selection
            sel, _keep = _sel_array(np.zeros(0, np.int64))
            self._index.remove_ids(sel)
            self._removable = True
        except RuntimeError:
            self._removable = False

    @property
    def faiss_index(self):
        """The faiss object itself (ids native or through an IndexIDMap2), e.g. to compare
        raw faiss against this class on the same index."""
        return self._index

    # ---------------------------------------------------------------- creation
    @classmethod
    def _create(cls, factory: str, dim: int):
        try:
            idx = faiss.index_factory(int(dim), factory, METRIC)
        except RuntimeError as e:
            raise InvalidInput(f"invalid index spec {factory!r}: {_faiss_msg(e)}") from None
        if isinstance(idx, faiss.IndexIVF):
            try:  # native ids; a hashtable direct map lets us reconstruct by id
                idx.set_direct_map_type(faiss.DirectMap.Hashtable)
                sel, _keep = _sel_array(np.zeros(0, np.int64))
                idx.remove_ids(sel)
                return idx
            except RuntimeError:
                pass  # e.g. fast-scan lists: use positions through an id map instead
        if isinstance(idx, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            raise InvalidInput(f"invalid index spec {factory!r}: ids are mapped already, drop 'IDMap'")
        wrapped = faiss.IndexIDMap2(idx)
        wrapped.own_fields = True
        idx.this.disown()
        return wrapped

    @classmethod
    def empty(cls, dim: int, spec: str = "flat") -> "VectorIndex":
        """An empty index for a new collection: only specs that need no training."""
        factory = resolve_spec(spec, 0, dim)
        index = cls._create(factory, dim)
        if not index.is_trained:
            raise InvalidInput(f"index spec {factory!r} needs training vectors: use build()")
        return cls(index, factory, int(dim))

    @classmethod
    def build(cls, spec: str, ids, vectors, memory_budget_mb: float | None = None) -> "VectorIndex":
        """Create, train (on <= 50k sampled vectors), add everything, then tune knobs."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InvalidInput(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
        n, dim = vectors.shape
        factory = resolve_spec(spec, n, dim, memory_budget_mb)
        self = cls(cls._create(factory, dim), factory, dim)
        ids, vectors = self._check_ids_vectors(ids, vectors)
        if not self._index.is_trained:
            rng = np.random.default_rng(0)
            sample = vectors if n <= TRAIN_MAX else vectors[np.sort(rng.choice(n, TRAIN_MAX, replace=False))]
            try:
                self._index.train(sample)
            except RuntimeError as e:
                raise InvalidInput(f"cannot train index {factory!r} on {n} vectors: {_faiss_msg(e)}") from None
        self.add(ids, vectors)
        if self.params and n:
            rng = np.random.default_rng(1)
            queries = _query_like(vectors[rng.choice(n, min(n, 500), replace=False)], rng)
            self.tune(queries, vectors=vectors, ids=ids)
        return self

    # ---------------------------------------------------------------- validation
    def _check_vectors(self, x, name="vectors") -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInput(f"{name} must have shape (n, {self.dim}), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InvalidInput(f"{name} must be float32, got {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _check_ids_vectors(self, ids, vectors):
        vectors = self._check_vectors(vectors)
        ids = self._check_ids(ids)
        if len(ids) != len(vectors):
            raise InvalidInput(f"got {len(ids)} ids for {len(vectors)} vectors")
        return ids, vectors

    @staticmethod
    def _check_ids(ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise InvalidInput(f"ids must be a 1-D int64 array, got {ids.dtype} shape {ids.shape}")
        return np.ascontiguousarray(ids, dtype=np.int64)

    # ---------------------------------------------------------------- contents
    def _ids(self) -> np.ndarray:
        """Every id held by faiss (IVF), or the id at each position (id map)."""
        if self._ids_cache is None:
            if self._native:
                inv = self._index.invlists
                parts = [faiss.rev_swig_ptr(inv.get_ids(l), inv.list_size(l)).copy()
                         for l in range(self._index.nlist) if inv.list_size(l)]
                self._ids_cache = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            else:
                self._ids_cache = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self._ids_cache

    def _above_all(self, ids: np.ndarray) -> bool:
        """Whether every one of ``ids`` is larger than any id held. A collection's new
        chunks are (SQLite AUTOINCREMENT), so adding them needs no duplicate check and
        removing them (a replay is idempotent) finds nothing: both were O(ntotal) a write."""
        if self._id_bound is None:
            held = self._ids()
            self._id_bound = int(held.max()) if len(held) else np.iinfo(np.int64).min
        return bool(len(ids)) and int(ids.min()) > self._id_bound

    def _live_mask(self) -> np.ndarray | None:
        if not len(self._tomb):
            return None
        mask = np.ones(self._index.ntotal, bool)
        mask[self._tomb] = False
        return mask

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) - len(self._tomb)

    @property
    def exhaustive(self) -> bool:
        """Whether a search scores every vector (Flat): each stored vector then finds itself."""
        return isinstance(self._inner, faiss.IndexFlat)

    @property
    def tombstone_ratio(self) -> float:
        return len(self._tomb) / self._index.ntotal if self._index.ntotal else 0.0

    def add(self, ids, vectors) -> None:
        """Add vectors under new ids; an id that is already live is an error."""
        ids, vectors = self._check_ids_vectors(ids, vectors)
        if not len(ids):
            return
        if len(np.unique(ids)) != len(ids):
            raise InvalidInput("ids contain duplicates")
        if not self._above_all(ids):
            live = self._ids()
            mask = self._live_mask()
            if mask is not None:
                live = live[mask]
            dup = ids[np.isin(ids, live)]
            if len(dup):
                raise InvalidInput(f"{len(dup)} ids are already in the index, e.g. {int(dup[0])}: remove them first")
        self._index.add_with_ids(vectors, ids)
        self._id_bound = max(self._id_bound, int(ids.max()))
        self._ids_cache = None
        self._gpu = None

    def remove(self, ids) -> None:
        """Delete ids (unknown ones are ignored): for real where faiss can, else tombstones."""
        ids = np.unique(self._check_ids(ids))
        if not len(ids) or not self._index.ntotal or self._above_all(ids):
            return
        if self._removable:  # the IVF hashtable direct map needs an IDSelectorArray;
            # through an id map, a Batch (hashed) avoids a linear scan per vector
            sel = _sel_array(ids)[0] if self._native else faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
            self._index.remove_ids(sel)
        else:
            pos = np.nonzero(np.isin(self._ids(), ids))[0].astype(np.int64)
            self._tomb = np.union1d(self._tomb, pos)
        self._ids_cache = None
        self._gpu = None

    # ---------------------------------------------------------------- search
    def _make_params(self, idx, sel, scale: float, keep: list, knobs: dict | None = None):
        """SearchParameters for idx and its sub-indexes, each carrying the selector."""
        knobs = self.params if knobs is None else knobs
        sub = _children(idx)
        sub_p = self._make_params(sub, sel, scale, keep, knobs) if sub is not None else None
        if isinstance(idx, faiss.IndexRefine):
            p = faiss.IndexRefineSearchParameters(k_factor=float(knobs["k_factor"]), base_index_params=sub_p)
        elif isinstance(idx, faiss.IndexPreTransform):
            p = faiss.SearchParametersPreTransform(index_params=sub_p)
        elif isinstance(idx, faiss.IndexHNSW):
            p = faiss.SearchParametersHNSW(efSearch=int(min(KNOB_MAX["efSearch"], knobs["efSearch"] * scale)))
        elif isinstance(idx, faiss.IndexIVF):
            p = faiss.SearchParametersIVF(nprobe=int(min(idx.nlist, math.ceil(knobs["nprobe"] * scale))))
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        keep.append(p)
        return p

    def search(self, queries, k: int, allowed_ids=None, _knobs: dict | None = None):
        """Top-k (scores, ids) per query; ids -1 / scores -inf pad missing hits.

        allowed_ids restricts results to those ids. Tombstones and filters go
        to faiss as an IDSelector, with efSearch/nprobe scaled up by 1/fraction
        allowed so the walk still finds k hits. A filter of <= 20k ids on an
        index that stores exact vectors is instead scored by brute force over
        the reconstructed vectors: exact, and HNSW alone misses hits there.
        So is a k that reaches every candidate (all of them are asked for: an
        IVF probes only some lists, HNSW's walk misses some nodes); without
        exact vectors, every list is probed and the graph walked its widest.
        """
        q = self._check_vectors(queries, "queries")
        if int(k) <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        k = int(k)
        if not self.ntotal or not len(q):
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if allowed_ids is None and not len(self._tomb) and _knobs is None and k < self.ntotal:  # the common case
            if self._gpu is not None:
                return self._gpu.search(q, k)
            return self._finish(*self._inner.search(q, k, params=self._plain_params()))
        scores = np.full((len(q), k), -np.inf, np.float32)
        labels = np.full((len(q), k), -1, np.int64)
        ids = self._ids()
        mask = self._live_mask()               # over positions (id map only)
        if allowed_ids is not None:
            allowed = np.unique(self._check_ids(allowed_ids))
            if self._native:
                keys = allowed[np.isin(allowed, ids)]
            else:
                am = np.isin(ids, allowed)
                mask = am if mask is None else mask & am
                keys = np.nonzero(mask)[0].astype(np.int64)
            if not len(keys):
                return scores, labels
            n_sel = len(keys)
        else:
            n_sel = self.ntotal
        whole = k >= n_sel
        if (whole or allowed_ids is not None and n_sel <= EXACT_FILTER_MAX) and _exact_store(self._inner) \
                and not isinstance(self._inner, faiss.IndexFlat):
            if allowed_ids is None:  # every live vector (ids, or positions through the id map)
                keys = ids if self._native else np.arange(len(ids), dtype=np.int64) if mask is None \
                    else np.flatnonzero(mask).astype(np.int64)
            return self._exact(q, k, keys, scores, labels)
        keep = []
        sel = None
        if self._native and allowed_ids is not None:
            sel = faiss.IDSelectorBatch(len(keys), faiss.swig_ptr(keys))
        elif mask is not None:
            bits = np.packbits(mask, bitorder="little")
            keep.append(bits)
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        scale = 2.0**31 if whole else max(1.0, self._index.ntotal / n_sel)  # whole: knobs at their limits
        params = self._make_params(self._inner, sel, scale, keep, _knobs)
        return self._finish(*self._inner.search(q, k, params=params))

    def _plain_params(self):
        """Unfiltered search parameters, made once per set of knob values."""
        key = tuple(sorted(self.params.items()))
        if self._plain is None or self._plain[0] != key:
            keep = []
            self._plain = key, self._make_params(self._inner, None, 1.0, keep), keep
        return self._plain[1]

    def _finish(self, D, I):
        """Map faiss positions to ids (id map only) and pad missing hits with -inf."""
        missing = I < 0
        if not self._native:
            I = self._ids()[I]
        if missing.any():
            I[missing], D[missing] = -1, -np.inf
        return D, I

    def _exact(self, q, k, keys, scores, labels):
        """Brute-force top-k over the vectors of a few keys (ids or positions)."""
        vecs = self._inner.reconstruct_batch(keys)
        ext = keys if self._native else self._ids()[keys]
        s = q @ vecs.T
        kk = min(k, len(keys))
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        scores[:, :kk] = np.take_along_axis(s, top, 1)
        labels[:, :kk] = ext[top]
        return scores, labels

    # ---------------------------------------------------------------- tuning
    def _live_vectors(self):
        """(ids, vectors) of every live vector, for exact ground truth."""
        if not _exact_store(self._inner):
            raise InvalidInput(f"index {self.spec!r} keeps no exact vectors: pass vectors= and ids= to tune()")
        ids = self._ids()
        if self._native:
            return ids, self._index.reconstruct_batch(ids)
        pos = np.arange(self._index.ntotal, dtype=np.int64)
        mask = self._live_mask()
        if mask is not None:
            pos = pos[mask]
        return ids[pos], self._inner.reconstruct_batch(pos)

    def tune(self, sample_queries, target_recall: float = 0.95, k: int = 10,
             vectors=None, ids=None) -> float:
        """Raise efSearch / nprobe / k_factor until recall@k vs exact search reaches target.

        Ground truth is exact inner product over the index's own live vectors
        (reconstructed, or ``vectors``/``ids`` when given). A query that is itself
        a collection vector has its own hit left out of both lists, else it makes
        every index look 1/k better than it is (build() tunes on queries near, not
        at, collection vectors: see _query_like). Greedy: each step doubles the
        knob that helps most. Returns the recall reached.
        """
        q = self._check_vectors(sample_queries, "sample_queries")
        if vectors is None:
            ids, vectors = self._live_vectors()
        else:
            ids, vectors = self._check_ids_vectors(ids, vectors)
        k = min(int(k), len(ids) - 1)
        if k <= 0 or not len(q):
            return 1.0
        flat = faiss.IndexFlatIP(self.dim)
        flat.add(vectors)
        D, I = flat.search(q, k + 1)
        self_hit = np.where(D[:, 0] > 0.9999, ids[I[:, 0]], np.iinfo(np.int64).min)
        truth = [set([x for x in ids[row] if x != s][:k]) for row, s in zip(I, self_hit)]

        def recall(knobs):
            _, got = self.search(q, k + 1, _knobs=knobs)
            hits = sum(len(t.intersection([x for x in g if x != s][:k]))
                       for t, g, s in zip(truth, got, self_hit))
            return hits / (k * len(q))

        limits = _knob_limits(self._inner)
        best = recall(self.params)
        while best < target_recall:
            tries = []
            for knob, top in limits.items():
                if self.params[knob] < top:
                    cand = dict(self.params, **{knob: min(top, self.params[knob] * 2)})
                    tries.append((recall(cand), cand))
            if not tries:
                break
            best, self.params = max(tries, key=lambda t: t[0])
        return best

    # ---------------------------------------------------------------- files
    # Layout: faiss payload | tombstones (int64) | JSON header | header length (u32) | magic.
    # The payload comes first so faiss reads it straight from the file, without a copy.
    def save(self, path, generation: int = 0, owner: str | None = None, mode: int | None = None) -> None:
        """Write atomically: temp file in the same folder, fsync, rename, fsync folder.

        ``owner`` (a collection's id) and ``generation`` tie the file to the store it was
        built from; ``mode``: the file's permissions (mkstemp makes it 0600)."""
        path = Path(path)
        payload = faiss.serialize_index(self._index)
        tomb = self._tomb.astype("<i8").tobytes()
        crc = zlib.crc32(tomb, zlib.crc32(payload))
        header = json.dumps({"spec": self.spec, "params": self.params, "dim": self.dim,
                             "generation": int(generation), "owner": owner, "ntomb": len(self._tomb),
                             "nbytes": int(payload.nbytes), "crc32": crc}).encode()
        with atomic_file(path, permissions=mode) as f:
            f.write(memoryview(payload))
            f.write(tomb + header + struct.pack("<I", len(header)) + _MAGIC)

    @classmethod
    def load(cls, path, owner: str | None = None) -> tuple["VectorIndex", int]:
        """Read a file written by save(); returns (index, generation).

        The checksum is verified before faiss parses a byte, so faiss only ever
        sees what save() wrote. faiss opens the file by name: if a writer renamed a
        new file into place meanwhile, the read starts over on the new one. A file
        saved for another ``owner`` (another collection's index copied in) is refused."""
        for _ in range(5):
            loaded = cls._load_once(Path(path))
            if loaded is not None:
                index, gen, saved_for = loaded
                if owner is not None and saved_for != owner:
                    raise IndexFileError(f"index file {path} belongs to another collection")
                return index, gen
        raise IndexFileError(f"index file {path} keeps being replaced while it is read")

    @classmethod
    def _load_once(cls, path: Path):
        bad = IndexFileError(f"index file {path} is corrupt or truncated")
        tail = 4 + len(_MAGIC)
        try:
            with open(path, "rb") as f:
                opened = os.fstat(f.fileno())
                size = opened.st_size
                if size < tail:
                    raise bad
                f.seek(size - tail)
                (hlen,), magic = struct.unpack("<I", f.read(4)), f.read(len(_MAGIC))
                if magic != _MAGIC or hlen > size - tail:
                    f.seek(0)
                    if f.read(len(_MAGIC)) == _OLD_MAGIC:
                        raise IndexFileError(f"index file {path} is in an older semsearch format")
                    raise bad
                f.seek(size - tail - hlen)
                try:
                    h = json.loads(f.read(hlen))
                    spec, dim, gen, params = str(h["spec"]), int(h["dim"]), int(h["generation"]), dict(h["params"])
                    nbytes, ntomb, crc = int(h["nbytes"]), int(h["ntomb"]), int(h["crc32"])
                except (ValueError, KeyError, TypeError):
                    raise bad from None
                if min(nbytes, ntomb) < 0 or nbytes + 8 * ntomb + hlen + tail != size:
                    raise bad
                f.seek(0)
                check, left = 0, nbytes + 8 * ntomb
                while left:  # in blocks, during which zlib releases the GIL
                    block = f.read(min(1 << 22, left))
                    check, left = zlib.crc32(block, check), left - len(block)
                if check != crc:
                    raise bad
                f.seek(nbytes)
                tomb = np.frombuffer(f.read(8 * ntomb), "<i8").astype(np.int64)
                try:
                    index = faiss.read_index(str(path))
                except RuntimeError:
                    index = None
                if os.stat(path).st_ino != opened.st_ino:  # ours stays open: its inode is not reused
                    return None
                if index is None:
                    raise bad
        except OSError as e:
            raise IndexFileError(f"cannot read index file {path}: {e.strerror}") from None
        if index.d != dim or not isinstance(index, (faiss.IndexIVF, faiss.IndexIDMap2)):
            raise bad
        return cls(index, spec, dim, params, tomb), gen, h.get("owner")

    # ---------------------------------------------------------------- gpu
    def to_gpu(self) -> bool:
        """Search unfiltered queries on a GPU copy when faiss-gpu sees a GPU.

        Returns False and changes nothing otherwise. Filtered queries,
        tombstones and tuning stay on the CPU index; add()/remove() drop the
        GPU copy (call to_gpu() again).
        """
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            return False
        try:
            gpu = faiss.index_cpu_to_all_gpus(self._index)
            space = faiss.GpuParameterSpace()
            for knob, value in self.params.items():
                if knob in ("efSearch", "nprobe", "k_factor"):  # params also carry bookkeeping
                    space.set_index_parameter(gpu, knob, value)
        except (RuntimeError, AttributeError):
            return False
        self._gpu = gpu
        return True
