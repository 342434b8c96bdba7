"""Collection: a SQLite store, a FAISS index derived from it, and the model that made it.

Writes go to the store first, one transaction per document, and only then to the
in-memory index; the index file is saved after each write call with the store
generation it reflects. Whoever opens a collection replays what the file misses, so a
crash between the two loses nothing.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .embedder import text_list
from .errors import CollectionError, ModelError
from .index import IndexFileError, VectorIndex, choose_spec
from .store import Store

log = logging.getLogger("semsearch")

STORE_FILE = "store.sqlite"
INDEX_FILE = "index.faiss"
LOCK_FILE = "write.lock"
FLUSH_CHUNKS = 1024  # chunks embedded together: length-sorting 1024 is within 2 % of sorting all
MIN_TRAIN = 2_000  # below this, indexes that need training wait as exact search
MODES = ("dense", "lexical", "hybrid")
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to "
    "was were what when where which who why will with do does did can could should would "
    "there their they them these those than then into about any been being".split())


def home_dir(home: str | os.PathLike | None = None) -> Path:
    return Path(home or os.environ.get("SEMSEARCH_HOME") or "indexes")


def collection_path(name_or_path: str | os.PathLike, home=None) -> Path:
    """A bare name lives under the home folder; anything with a slash is a path."""
    text = str(name_or_path)
    if not text or text in (".", ".."):
        raise CollectionError(f"invalid collection name {text!r}")
    if os.sep in text or "/" in text or Path(text).is_absolute():
        return Path(text)
    return home_dir(home) / text


def list_collections(home=None) -> list[str]:
    root = home_dir(home)
    return sorted(p.name for p in root.iterdir() if (p / STORE_FILE).is_file()) if root.is_dir() else []


@dataclass(slots=True)
class Hit:
    id: str  # the document's key (what delete --id takes)
    score: float
    text: str
    source: str | None
    metadata: dict
    chunk: int  # chunk position within the document
    start: int
    end: int
    chunk_id: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    replaced_chars: int = 0
    seconds: float = 0.0
    skipped: list = field(default_factory=list)  # (source, reason)


@dataclass
class _Pending:
    """A document whose chunks are being embedded and written."""
    key: str
    source: str | None
    content_hash: str | None
    metadata: dict
    doc_id: int | None = None  # set when its transaction opens
    gen: int = 0
    position: int = 0  # chunks written so far
    replaced: list = field(default_factory=list)  # chunk ids of the version it replaces
    ids: list = field(default_factory=list)  # chunk ids and vectors written, not yet indexed
    vectors: list = field(default_factory=list)
    spans_flushes: bool = False  # too long to keep its vectors in memory until commit


class Collection:
    """A searchable set of documents; use as a context manager to close it."""

    def __init__(self, path: Path, store: Store, model: str | None = None, device: str = "auto"):
        self.path = path
        self.name = path.name
        self.store = store
        self.config = store.get_meta("config")
        self.pinned = store.get_meta("model")
        if model is not None:
            from .models import source_for
            asked = source_for(model)[0]
            if asked != self.pinned["name"]:
                raise ModelError(f"collection {self.name} was built with {self.pinned['name']}, "
                                 f"not {asked}; search it with its own model or re-index")
        self._device = device
        self._embedder = None
        self._index: VectorIndex | None = None
        self._index_gen = -1
        self._index_read = None  # a background read of the index file, see _prefetch_index

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, name_or_path, model: str | None = None, index: str = "auto", variant: str = "fp32",
               chunk_tokens: int | None = None, overlap: int = 32, home=None,
               device: str = "auto", exist_ok: bool = False) -> "Collection":
        path = collection_path(name_or_path, home)
        if (path / STORE_FILE).is_file():
            if exist_ok:
                return cls.open(path, model=model, device=device)
            raise CollectionError(f"collection {path} already exists")
        from .embedder import Embedder
        embedder = Embedder.load(model, variant=variant, device=device)
        chunk_tokens = chunk_tokens or embedder.max_length - 2
        if not 8 <= chunk_tokens <= embedder.max_length - 2:
            raise CollectionError(f"--chunk-tokens must be between 8 and {embedder.max_length - 2}")
        if not 0 <= overlap < chunk_tokens:
            raise CollectionError("--overlap must be at least 0 and less than --chunk-tokens")
        if index != "auto":
            _needs_no_training(index, embedder.dim)  # an invalid spec fails here, before any file
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (STORE_FILE + ".new")
        tmp.unlink(missing_ok=True)
        store = Store(tmp, create=True)
        m = embedder.manifest
        store.set_meta("model", {
            "name": m["name"], "source": m["source"], "sha256": m["variants"]["fp32"]["sha256"],
            "dim": m["dim"], "pooling": m["pooling"], "normalize": m["normalize"],
            "max_length": m["max_length"], "variant": variant})
        store.set_meta("config", {"index": index, "chunk_tokens": chunk_tokens, "overlap": overlap,
                                  "created": time.time()})
        store.close()
        os.replace(tmp, path / STORE_FILE)  # the collection exists once its store is complete
        self = cls.open(path, device=device)
        self._embedder = embedder
        return self

    @classmethod
    def open(cls, name_or_path, model: str | None = None, home=None, device: str = "auto") -> "Collection":
        path = collection_path(name_or_path, home)
        if not (path / STORE_FILE).is_file():
            known = ", ".join(list_collections(home)) or "none"
            raise CollectionError(f"no collection {name_or_path!r} (collections in {home_dir(home)}: {known})")
        return cls(path, Store(path / STORE_FILE), model=model, device=device)

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def embedder(self):
        """The collection's own model, loaded on first use and checked against the pin."""
        if self._embedder is None:
            from .embedder import Embedder
            from .models import DEFAULT_MODEL
            pin = self.pinned
            source = None if pin["name"] == DEFAULT_MODEL else pin["source"]
            self._embedder = Embedder.load(source, variant=pin["variant"], device=self._device)
            m = self._embedder.manifest
            if (m["dim"], m["pooling"]) != (pin["dim"], pin["pooling"]):
                raise ModelError(f"model {pin['name']} now gives {m['dim']}-d {m['pooling']} vectors; "
                                 f"collection {self.name} holds {pin['dim']}-d {pin['pooling']}: re-index")
            if m["variants"]["fp32"]["sha256"] != pin["sha256"]:
                log.warning("the export of %s changed since %s was built; re-index for exact scores",
                            pin["name"], self.name)
        return self._embedder

    # -- the index, derived from the store -----------------------------------------------------
    def _sync_index(self) -> None:
        """Bring the in-memory index up to the store's generation (call inside a snapshot)."""
        gen = self.store.generation()
        if self._index is not None and self._index_gen == gen:
            return
        if self._index is None:
            self._load_index_file()
        if self._index_gen < gen:
            self._index.remove(self.store.deleted_since(self._index_gen))
            for ids, vectors in self.store.vectors(since_gen=self._index_gen):
                self._index.remove(ids)  # replay is idempotent
                self._index.add(ids, vectors)
            self._index_gen = gen

    def _prefetch_index(self) -> None:
        """Start reading the index file while the model loads: a cold search waits for
        the slower of the two, not for both (faiss and ONNX Runtime release the GIL)."""
        file = self.path / INDEX_FILE
        if self._index is None and self._index_read is None and file.is_file():
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(1)
            self._index_read = pool.submit(VectorIndex.load, file)
            pool.shutdown(wait=False)

    def _load_index_file(self) -> None:
        file = self.path / INDEX_FILE
        read, self._index_read = self._index_read, None
        try:
            if read is not None or file.is_file():
                self._index, self._index_gen = read.result() if read else VectorIndex.load(file)
                return
            if self.store.counts()[1]:
                log.warning("index file of %s is missing; rebuilding it from the store", self.name)
        except IndexFileError as exc:
            log.warning("%s; rebuilding it from the store", exc)
        self._rebuild()
        lock = _try_lock(self.path)  # save it unless a writer is at work (it will save its own),
        if lock is not None:         # so that the next reader need not rebuild it too
            try:
                self._save_index()
            except OSError as exc:
                log.warning("cannot save the rebuilt index of %s: %s", self.name, exc.strerror)
            finally:
                lock.release()

    def _rebuild(self, spec: str | None = None) -> None:
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
        n = self._index.ntotal
        target = self._target_spec(n)
        built_for = self._index.params.get("built_for", 0)
        if (self._index.tombstone_ratio > 0.2 or _family(target) != _family(self._index.spec)
                or (built_for and n > 4 * built_for)):
            self._rebuild(target)

    def _save_index(self) -> None:
        self._index.save(self.path / INDEX_FILE, generation=self._index_gen)

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def _writing(self):
        """One writer at a time; the index is brought up to date before and saved after."""
        lock = _try_lock(self.path)
        if lock is None:
            raise CollectionError(f"collection {self.name} is being written by another process; "
                                  "try again when it finishes")
        try:
            with self.store.snapshot():
                self._sync_index()
            yield
        finally:
            try:
                if self._index is not None:
                    with self.store.snapshot():
                        self._sync_index()
                    self._maintain_index()
                    self._save_index()
            finally:
                lock.release()

    def add_texts(self, texts: Sequence[str], ids: Sequence[str] | None = None,
                  metadata: Sequence[dict] | dict | None = None, progress: bool = False) -> list[str]:
        """Add (or replace, by id) one document per text; returns the ids.

        An id that is None (or no ``ids`` at all) gets a generated one."""
        texts = text_list(texts)
        ids = [None] * len(texts) if ids is None else list(ids)
        ids = [uuid.uuid4().hex[:16] if i is None else str(i) for i in ids]
        if len(ids) != len(texts) or len(set(ids)) != len(ids):
            raise CollectionError("ids must be unique and one per text")
        if metadata is None or isinstance(metadata, dict):
            metadata = [dict(metadata or {}) for _ in texts]
        if len(metadata) != len(texts):
            raise CollectionError("metadata must be one dict per text")
        docs = [(_Pending(key, None, None, meta), [text]) for key, text, meta in zip(ids, texts, metadata)]
        with self._writing():
            self._ingest(_progress(docs, progress), IndexReport())
        return ids

    def add_files(self, paths: Iterable[str | os.PathLike], glob: str | None = None,
                  remove_missing: bool = True, progress: bool = False) -> IndexReport:
        """Index files and folders: new or changed files are embedded, vanished ones removed."""
        from .loaders import Skipped, list_files, load_file

        started = time.time()
        roots = [str(Path(p).expanduser().resolve()) for p in paths]
        report = IndexReport()
        files = list_files(roots, glob=glob)  # raises for missing paths, before any write
        with self._writing():
            known = self.store.document_hashes()
            seen: set[str] = set()

            def pending():
                for file in _file_progress(files, progress, report):
                    for doc in load_file(file) if isinstance(file, str) else [file]:
                        if isinstance(doc, Skipped):
                            report.skipped.append((doc.source, doc.reason))
                            continue
                        seen.add(doc.key)
                        if known.get(doc.key) == doc.content_hash:
                            report.unchanged += 1
                            continue
                        if doc.key in known:
                            report.updated += 1
                        else:
                            report.added += 1
                        yield _Pending(doc.key, doc.source, doc.content_hash, doc.metadata), _Counted(doc, report)

            self._ingest(pending(), report)
            if remove_missing:
                gone = {key for root in roots for key, _ in self.store.documents_under(root)} - seen
                if glob:
                    gone = {k for k in gone if _matches(k, glob)}
                self._delete(sorted(gone))
                report.removed = len(gone)
        report.seconds = time.time() - started
        return report

    def _ingest(self, docs, report: IndexReport) -> None:
        """Chunk, embed in batches of FLUSH_CHUNKS, and commit each document whole."""
        from .chunking import iter_chunks

        cfg = self.config
        buffer: list[tuple[_Pending, object]] = []
        try:
            for doc, segments in docs:
                for chunk in iter_chunks(segments, self.embedder.tokenizer, cfg["chunk_tokens"], cfg["overlap"]):
                    buffer.append((doc, chunk))
                    report.chunks += 1
                    if len(buffer) >= FLUSH_CHUNKS:
                        self._flush(buffer)
                        buffer = []
                if doc.doc_id is None and not (buffer and buffer[-1][0] is doc):
                    report.skipped.append((doc.source or doc.key, "no text"))
                buffer.append((doc, None))  # marks where the document ends
            self._flush(buffer)
        finally:
            if self.store.db.in_transaction:  # a failure mid-document: keep the store as it was
                self.store.db.execute("ROLLBACK")

    def _flush(self, buffer: list) -> None:
        """Embed the buffered chunks, write them, commit the documents that end here."""
        texts = [chunk.text for _, chunk in buffer if chunk is not None]
        vectors = iter(self.embedder.embed(texts, kind="passage")) if texts else iter(())
        db = self.store.db
        added_ids, added_vectors, replaced, gen = [], [], [], None
        for doc, chunk in buffer:
            if doc.doc_id is None:  # the document's first rows: open its transaction
                doc.gen = self.store.begin()
                if chunk is None:  # no text at all: an update that emptied a document removes it
                    doc.doc_id, doc.replaced = 0, self.store.delete_documents([doc.key])[1]
                else:
                    doc.doc_id, doc.replaced = self.store.put_document(
                        doc.key, doc.source, doc.content_hash, doc.metadata)
            if chunk is not None:
                vector = next(vectors)
                doc.ids += self.store.put_chunks(
                    doc.doc_id, doc.gen, [(doc.position, chunk.start, chunk.end, chunk.text, vector)])
                doc.vectors.append(vector)
                doc.position += 1
            elif doc.spans_flushes:  # a long document: index it from the store, not from memory
                db.execute("COMMIT")
                self._sync_index()
            else:  # end of the document: commit it, then it may enter the index
                db.execute("COMMIT")
                added_ids += doc.ids
                added_vectors += doc.vectors
                replaced += doc.replaced
                gen = doc.gen
        open_doc = buffer[-1][0] if buffer and buffer[-1][1] is not None else None
        if open_doc is not None:  # continues in the next flush: don't hold its vectors
            open_doc.spans_flushes, open_doc.ids, open_doc.vectors = True, [], []
        if replaced:
            self._index.remove(np.array(replaced, np.int64))
        if added_ids:
            self._index.add(np.array(added_ids, np.int64), np.stack(added_vectors))
        if gen is not None:
            self._index_gen = gen

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many existed."""
        with self._writing():
            return self._delete(list(ids))

    def delete_path(self, path: str | os.PathLike) -> int:
        """Delete every document read from ``path`` (a file, or a folder's files)."""
        root = str(Path(path).expanduser().resolve())
        with self._writing():
            return self._delete([key for key, _ in self.store.documents_under(root)])

    def _delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        with self.store.transaction():
            found, chunk_ids = self.store.delete_documents(keys)
        self._index.remove(np.array(chunk_ids, np.int64))
        self._index_gen = self.store.generation()
        return found

    # -- reading -----------------------------------------------------------------------------
    def count(self) -> int:
        return self.store.counts()[0]

    def search(self, query: str | Sequence[str], k: int = 10, where: dict | None = None,
               mode: str = "hybrid", docs: bool = False, min_score: float | None = None,
               rrf_k: int = 60, weights: tuple[float, float] = (1.0, 1.0),
               feedback_docs: int = 5, feedback_weight: float = 0.6):
        """Ranked hits for one query (a list) or for several (a list of lists).

        ``mode``: dense (vectors), lexical (FTS5 BM25) or hybrid: Reciprocal Rank Fusion
        (constant ``rrf_k``, (dense, lexical) ``weights``) of the lexical ranking with a
        dense ranking whose query vector is moved towards the ``feedback_docs`` best fused
        chunks by ``feedback_weight`` (Rocchio pseudo-relevance feedback; 0 turns it off).
        ``where`` filters on document metadata before ranking, on both sides; ``docs``
        keeps one hit per document.
        """
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
            raise CollectionError("the query is empty")
        if k <= 0:
            raise CollectionError("k must be a positive number")
        if mode not in MODES:
            raise CollectionError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        fusion = (rrf_k, weights, feedback_docs, feedback_weight)
        if mode != "lexical":
            self._prefetch_index()
        vectors = self.embedder.embed(queries, kind="query") if mode != "lexical" else [None] * len(queries)
        depth = max(k, 100 if mode == "hybrid" else k)
        results = []
        with self.store.snapshot():
            allowed = self.store.filter_ids(where) if where else None
            first_dense = [None] * len(queries)
            if mode != "lexical":
                self._sync_index()
                first_dense = self._dense(vectors, depth, allowed)  # one FAISS call for all queries
            # chunks there are to rank; only --docs needs it, to know when to stop digging
            available = 0 if not docs else len(allowed) if allowed is not None else self.store.counts()[1]
            for text, vector, dense in zip(queries, vectors, first_dense):
                hits = self._hits(self._rank(text, vector, mode, depth, allowed, fusion, dense), k, docs, min_score)
                deeper = depth
                while len(hits) < k and deeper < available:  # dig until k documents
                    deeper *= 4
                    hits = self._hits(self._rank(text, vector, mode, deeper, allowed, fusion), k, docs, min_score)
                results.append(hits)
        return results[0] if single else results

    def search_vectors(self, vectors: np.ndarray, k: int = 10, where: dict | None = None) -> list[list[Hit]]:
        """Dense search with query vectors you embedded yourself: a list of hits per row."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.shape[1] != self.pinned["dim"]:
            raise CollectionError(f"query vectors must be {self.pinned['dim']}-d, got {vectors.shape[1]}")
        if k <= 0:
            raise CollectionError("k must be a positive number")
        with self.store.snapshot():
            allowed = self.store.filter_ids(where) if where else None
            self._sync_index()
            return [self._hits(ranked, k, False, None) for ranked in self._dense(vectors, k, allowed)]

    def _rank(self, text: str, vector, mode: str, depth: int, allowed, fusion,
              dense: list | None = None) -> list[tuple[int, float]]:
        """(chunk id, score) best first, for one query (``dense``: its ranking, if known)."""
        rrf_k, weights, feedback_docs, feedback_weight = fusion
        match = fts_query(text) if mode != "dense" else ""
        lexical = self.store.lexical(match, depth, allowed) if match else []
        if mode == "lexical":
            return lexical
        if dense is None:
            dense = self._dense(vector[None], depth, allowed)[0]
        if mode == "dense":
            return dense
        fused = rrf([dense, lexical], weights, rrf_k)
        if feedback_docs > 0 and feedback_weight > 0 and fused:
            top = np.array([c for c, _ in fused[:feedback_docs]], np.int64)
            moved = vector + feedback_weight * self.store.chunk_vectors(top).mean(0)
            dense = self._dense((moved / np.linalg.norm(moved))[None], depth, allowed)[0]
            fused = rrf([dense, lexical], weights, rrf_k)
        return fused

    def _dense(self, vectors: np.ndarray, depth: int, allowed) -> list[list[tuple[int, float]]]:
        """A (chunk id, score) ranking per query vector."""
        scores, ids = self._index.search(np.asarray(vectors, np.float32), depth, allowed_ids=allowed)
        return [[(c, s) for c, s in zip(row_ids, row_scores) if c >= 0]
                for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]

    def _hits(self, ranked: list[tuple[int, float]], k: int, docs: bool, min_score) -> list[Hit]:
        rows = self.store.chunk_rows(c for c, _ in ranked)
        hits, seen = [], set()
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None or (min_score is not None and score < min_score):
                continue
            key, position, start, end, text, source, metadata = row
            if docs:
                if key in seen:
                    continue
                seen.add(key)
            hits.append(Hit(key, score, text, source, metadata, position, start, end, chunk_id))
            if len(hits) == k:
                break
        return hits

    def info(self) -> dict:
        docs, chunks = self.store.counts()
        with self.store.snapshot():
            self._sync_index()
        return {
            "name": self.name, "path": str(self.path.resolve()), "model": self.pinned,
            "index": {"requested": self.config["index"], "spec": self._index.spec,
                      "params": self._index.params, "vectors": self._index.ntotal},
            "chunk_tokens": self.config["chunk_tokens"], "overlap": self.config["overlap"],
            "documents": docs, "chunks": chunks, "generation": self.store.generation(),
            "size_bytes": sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()),
        }

    @staticmethod
    def remove(name_or_path, home=None) -> Path:
        """Delete a collection's folder, refusing while someone writes to it."""
        path = collection_path(name_or_path, home)
        if not (path / STORE_FILE).is_file():
            raise CollectionError(f"no collection {name_or_path!r}")
        if _try_lock(path) is None:
            raise CollectionError(f"collection {path.name} is being written; not removing it")
        shutil.rmtree(path)
        return path


def _try_lock(path: Path):
    """The collection's writer lock if it is free right now, else None."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def fts_query(text: str) -> str:
    """An OR of the query's distinct words, each quoted so FTS5 syntax cannot break it."""
    words = dict.fromkeys(w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS)
    return " OR ".join(f'"{w}"' for w in words)


def rrf(rankings: list[list[tuple[int, float]]], weights: Sequence[float], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal Rank Fusion: sum of weight / (k + rank) over the rankings."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def _family(spec: str) -> str:
    return re.sub(r"\d+", "", spec.split(",")[0]).lower()


def _needs_no_training(spec: str, dim: int) -> bool:
    try:
        VectorIndex.empty(dim, spec)
        return True
    except ValueError as exc:
        if "needs training" in str(exc):
            return False
        raise CollectionError(str(exc)) from None


def _matches(key: str, glob: str) -> bool:
    import fnmatch
    path = key.split("#", 1)[0]
    return fnmatch.fnmatch(path, "*" + glob.lstrip("*")) or fnmatch.fnmatch(Path(path).name, glob)


class _Counted:
    """A document's segments; counts undecodable bytes into the report once read."""

    def __init__(self, doc, report: IndexReport):
        self.doc, self.report = doc, report

    def __iter__(self):
        yield from self.doc.segments()
        self.report.replaced_chars += self.doc.replaced_chars


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, unit="doc", disable=None, leave=False)


def _file_progress(files: list, enabled: bool, report: IndexReport):
    """Files done out of files found (so an ETA), with documents and documents/s alongside."""
    if not enabled:
        yield from files
        return
    from tqdm import tqdm
    with tqdm(total=len(files), unit="file", disable=None, leave=False) as bar:
        for file in files:
            yield file
            docs = report.added + report.updated + report.unchanged
            bar.set_postfix_str(f"{docs} docs, {docs / max(bar.format_dict['elapsed'], 1e-3):.1f} docs/s",
                                refresh=False)
            bar.update(1)
