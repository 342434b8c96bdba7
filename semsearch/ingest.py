"""Documents in: chunk -> embed -> write, one transaction per document.

A document is prepared whole (chunks and vectors, at most MAX_DOCUMENT_CHARS of text)
before its transaction opens, so every transaction is short and a document is either
all there or not there. The vector index is never written here: after each batch the
collection replays the store's new generations into it (the store is the truth).
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .chunking import Chunk, chunk_documents
from .embedder import background
from .errors import InvalidInput, OutOfSpace, TooLarge
from .loaders import SUPPORTED, Document, Selection, canonical_json, load_file
from .validation import MAX_DOCUMENT_CHARS, vectors as checked_vectors

FLUSH_CHUNKS = 1024  # chunks embedded together: length-sorting 1024 is within 2 % of sorting all
CHUNK_GROUP_CHARS = 1 << 20  # documents chunked together (~1,000 chunks of 254 tokens of English)


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    reused: int = 0  # of added and updated: chunks and vectors copied, not embedded (Writer.reused)
    removed: int = 0
    # documents whose files are gone, outside the paths indexed, whose chunks a reuse copied:
    # the old place of files moved here, left in the collection (`delete --missing`)
    left_behind: int = 0
    chunks: int = 0
    replaced_chars: int = 0
    seconds: float = 0.0
    skipped: list = field(default_factory=list)  # (source, reason)
    unread: set = field(default_factory=set)  # skipped sources whose indexed documents stay

    def reused_note(self) -> str:
        """A report line's count of documents written without embedding, where there are any."""
        return f" {self.reused} reused (moved or copied: not embedded);" if self.reused else ""

    def skip(self, source: str, reason: str, transient: bool = False) -> None:
        """Report a file or document left out. ``transient``: it may read fine next time
        (see loaders.Skipped), so a re-index keeps what was indexed from it."""
        self.skipped.append((source, reason))
        if transient:
            self.unread.add(source)


@dataclass
class IndexPlan:
    """What an `index` run would do (collection.plan_files), none of it done: the ids it
    would add (new), update (changed), copy rather than embed (reused: of new and changed),
    and remove, how many it would find unchanged, and the files it would skip."""
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list = field(default_factory=list)  # (source, reason)
    exists: bool = False  # the collection; if not, the run would create it


@dataclass
class AddReport:
    """What one add of texts did (Collection.add_texts_report): the ids, given or
    generated, in order, and how many were new, replaced a document of the same id with
    another text (embedded), held that text already with other metadata (only the
    metadata written: not embedded) or held it already as given (nothing written)."""
    ids: list[str]
    added: int = 0
    replaced: int = 0
    metadata_updated: int = 0
    unchanged: int = 0


def text_hash(text: str) -> str:
    """The content_hash of a text added directly: sha256 of its UTF-8, as a file's is of its bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def holds_text(held: tuple | None, doc: "DocumentInfo") -> bool:
    """Whether the store's row for doc's id (Store.held's (source, content_hash,
    metadata), None: no such document) is doc's very text, added as text (a file's
    document of that id keeps the file's hash and was chunked from what the file holds)."""
    return held is not None and held[0] is None and held[1] is not None and held[1] == doc.content_hash


@dataclass
class DocumentInfo:
    """What is stored about a document besides its chunks."""
    key: str
    source: str | None = None
    content_hash: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class PreparedDocument(DocumentInfo):
    """A document ready to write: its chunks and one vector per chunk (no chunks: it is
    empty, and writing it removes any earlier version)."""
    chunks: list[Chunk] = field(default_factory=list)
    vectors: np.ndarray | None = None


def read_text(segments: Iterable[str]) -> list[str]:
    """A document's segments, read whole; TooLarge past MAX_DOCUMENT_CHARS, before any of
    it is tokenised, so refusing a document costs a read, not minutes of tokenising."""
    text, total = [], 0
    for segment in segments:
        total += len(segment)
        if total > MAX_DOCUMENT_CHARS:
            raise TooLarge(f"document too large (over {MAX_DOCUMENT_CHARS // 1_000_000} million "
                           "characters): split it into several files")
        text.append(segment)
    return text


def info_of(doc: Document) -> DocumentInfo:
    return DocumentInfo(doc.key, doc.source, doc.content_hash, doc.metadata)


def changed_documents(files: Iterable, known: dict[str, str], report: IndexReport,
                      seen: set[str]) -> Iterator[Document]:
    """The documents of ``files`` (paths, or Skipped from the walk) that ``known`` (key ->
    content hash: what the collection holds) does not hold as they are, which an index run
    embeds; skips are reported and unchanged ones counted, and every key read goes into
    ``seen`` (what remove_missing keeps)."""
    for file in files:
        for doc in load_file(file, as_text=True) if isinstance(file, str) else [file]:
            if not hasattr(doc, "key"):  # Skipped
                report.skip(doc.source, doc.reason, doc.transient)
                continue
            seen.add(doc.key)
            if known.get(doc.key) == doc.content_hash:
                report.unchanged += 1
                continue
            yield doc


def missing_documents(store, roots: list[str], seen: set[str], select: Selection,
                      unread: Iterable[str] = (), listed: Iterable[str] = ()) -> list[str]:
    """The documents under ``roots`` that a run which read ``seen`` removes (call inside a
    snapshot or the writer lock), limited to what ``select`` takes (the rule that walked
    the folders). A file the run could not read (``unread``: IndexReport.unread) keeps what
    was indexed from it, and so does one the run did not list but that exists (another
    writer indexed it since the run listed the files); of a file it ``listed`` and read,
    what it no longer holds goes."""
    unread, listed = set(unread), set(listed)
    return sorted({key for root in roots for key, source in store.documents_under(root)
                   if key not in seen and source not in unread
                   and (source in listed or not os.path.exists(source))
                   and (not os.path.isdir(root) or select.selects(source, root))})


def reusable(store, info: DocumentInfo, key: str | None) -> bool:
    """Whether document ``key`` holds the very text of ``info`` under another id, so its
    chunks and vectors are what embedding it would give: the same content hash and
    text_kind (call inside a snapshot)."""
    kind = text_kind(info.key, info.source, info.metadata)
    if kind is None or key is None or key == info.key:
        return False
    held = store.held([key]).get(key)
    return held is not None and held[1] == info.content_hash and text_kind(key, held[0], held[2]) == kind


def text_kind(key: str, source: str | None, metadata: dict) -> tuple | None:
    """What decides a document's text besides its content hash: a file's loader type (the
    same bytes give another text as .md, whose front matter is read, than as .txt); for a
    record, nothing (its text is its record's, whether from .jsonl, .json or .csv). None: a
    text added directly (its hash is of the text, not of a file's bytes)."""
    if source is None:
        return None
    return ("file", metadata.get("type")) if key == source else ("record",)


def by_lines(info: DocumentInfo) -> bool:
    """Whether a document is cut into chunks at line breaks (chunking.iter_chunks's lines):
    a whole file of a type with no reader, read as text (source code, logs, configs), whose
    units are lines. Prose and records are cut as they were."""
    return info.source is not None and info.key == info.source and f".{info.metadata.get('type')}" not in SUPPORTED


Reuse = Callable[[DocumentInfo], "PreparedDocument | None"]


def embed_documents(docs: Iterable[tuple[DocumentInfo, Iterable[str]]], embedder, chunk_tokens: int,
                    overlap: int, report: IndexReport, reuse: Reuse | None = None) -> Iterator[list[PreparedDocument]]:
    """Batches of prepared documents, embedding ~FLUSH_CHUNKS chunks at a time.

    A document that cannot be read or is too large is skipped (reported), never fatal. One
    that ``reuse`` (Writer.reuser) prepares from the store is neither read nor embedded.
    Where the Embedder overlaps its stages (a GPU), the next batch is read, chunked and
    embedded on a thread while the caller stores this one: there the GPU's share of
    ingest is small, and it would otherwise wait on every store."""
    batches = _prepared(docs, embedder, chunk_tokens, overlap, report, reuse)
    return background(batches) if embedder.overlap else batches


def _prepared(docs, embedder, chunk_tokens: int, overlap: int, report: IndexReport,
              reuse: Reuse | None) -> Iterator[list[PreparedDocument]]:
    batch: list[PreparedDocument] = []
    pending = 0
    for group in _read_groups(docs, report, reuse):
        read = [(info, text) for info, text in group if text is not None]
        chunked = iter(chunk_documents([text for _, text in read], embedder.tokenizer, chunk_tokens, overlap,
                                       [by_lines(info) for info, _ in read]))
        for info, text in group:
            if text is None:  # reused: its chunks and vectors are the store's
                doc = info
                report.reused += 1
            else:
                doc = PreparedDocument(info.key, info.source, info.content_hash, info.metadata, next(chunked))
                if not doc.chunks:
                    report.skip(info.source or info.key, "no text")
            report.chunks += len(doc.chunks)
            batch.append(doc)
            pending += len(doc.chunks)  # reused ones too: a moved folder is written batch by batch
            if pending >= FLUSH_CHUNKS:
                yield _embedded(batch, embedder)
                batch, pending = [], 0
    if batch:
        yield _embedded(batch, embedder)


def _read_groups(docs: Iterable[tuple[DocumentInfo, Iterable[str]]], report: IndexReport,
                 reuse: Reuse | None = None) -> Iterator[list[tuple[DocumentInfo, list[str] | None]]]:
    """Documents read whole, in groups of about CHUNK_GROUP_CHARS to chunk together; one
    that cannot be read or is too large is reported and left out. One that ``reuse``
    prepares comes as (that PreparedDocument, None), unread."""
    group, size = [], 0
    for info, segments in docs:
        prepared = reuse(info) if reuse is not None else None
        if prepared is not None:
            group.append((prepared, None))
            size += prepared.chunks[-1].end
        else:
            try:
                text = read_text(segments)
            except (TooLarge, OSError) as exc:
                report.skip(info.source or info.key, getattr(exc, "strerror", None) or str(exc), transient=True)
                continue
            group.append((info, text))
            size += sum(map(len, text))
        if size >= CHUNK_GROUP_CHARS:
            yield group
            group, size = [], 0
    if group:
        yield group


def _embedded(batch: list[PreparedDocument], embedder) -> list[PreparedDocument]:
    todo = [doc for doc in batch if doc.vectors is None]  # not those reused
    texts = [c.text for doc in todo for c in doc.chunks]
    vectors = embedder.embed(texts, kind="passage") if texts else np.zeros((0, embedder.dim), np.float32)
    start = 0
    for doc in todo:
        doc.vectors, start = vectors[start:start + len(doc.chunks)], start + len(doc.chunks)
    return batch


class Writer:
    """A write session on one collection (see Collection.writer).

    Each put() is one store transaction; flush() brings the vector index up to the store.
    This is the public way in for any ingest engine (local, Ray) and for precomputed
    vectors. ``lock`` (a context manager) is taken for each write when the session does not
    hold the writer lock itself."""

    def __init__(self, collection, lock=None):
        self.collection = collection
        self.store = collection.store
        self.dim = collection.pinned["dim"]
        self._lock = lock
        self._locked = lock is None
        self.stored = 0  # documents this session wrote (committed)
        self.reused_from: set[str] = set()  # the documents reused() copied
        self._last = None  # the last write's (stored before, after, generation, a key it wrote chunks of)

    @contextmanager
    def locked(self):
        """The writer lock for what runs inside (re-entrant): one batch of writes that other
        writers must not interleave with."""
        if self._locked:
            yield
            return
        with self._lock():
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    @contextmanager
    def session(self):
        """A long ingest stopped part-way (a full disk, Ctrl-C, SIGTERM) says how many
        documents it stored before: it commits each on its own, so those are there, and a
        re-run of `index` skips them."""
        try:
            yield self
        except (OutOfSpace, KeyboardInterrupt) as exc:
            stored = self._settled()
            if not stored:
                raise
            said = f"{exc}; " if str(exc) else ""
            raise type(exc)(f"{said}the {stored} document(s) this run wrote before it are stored") from None

    def _counting(self, gen: int, docs: list[PreparedDocument], n: int) -> None:
        """Inside a write, its last step before the commit: what ``stored`` becomes once it
        commits, in ONE assignment. A stop raises at any instant (SIGTERM, Ctrl-C), also
        between the commit and the count, so _settled asks the store which holds."""
        key = next((doc.key for doc in docs if doc.chunks and doc.vectors is not None), None)
        self._last = (self.stored, self.stored + n, gen, key)

    def _settled(self) -> int:
        """How many documents this session stored, exactly, whatever instant it stopped at."""
        if self._last is None:
            return self.stored
        before, after, gen, key = self._last
        try:
            committed = self.store.wrote(key, gen) if key is not None else self.store.generation() >= gen
        except Exception:  # the store unreadable now: the count as last known
            return self.stored
        return after if committed else before

    def known_hashes(self) -> dict[str, str]:
        with self.store.snapshot():  # a transaction: Collection.close() waits for it
            return self.store.document_hashes()

    def reuser(self, known: dict[str, str]) -> Reuse:
        """embed_documents's ``reuse`` for a run that found ``known`` (known_hashes()): a
        moved, renamed or copied file is not embedded again (see reused). Inverted here, in
        memory (a lookup by hash needs no index in the store), one document a hash: where
        documents of two kinds share one (the same bytes as .md and .txt), the other kind's
        file is embedded."""
        holders = {digest: key for key, digest in known.items() if digest is not None}
        return lambda info: self.reused(info, holders.get(info.content_hash))

    def reused(self, info: DocumentInfo, key: str | None) -> PreparedDocument | None:
        """``info`` ready to write with the chunks and vectors of document ``key`` if that
        holds its very text now: the same content hash and text_kind. Chunking settings and
        the model are the collection's own (pinned), so they are what embedding would give.
        The source is read whole in one snapshot, so a copy is complete, and stays so
        whatever happens to the source after; None where ``key`` does not hold that text
        (any more: another writer may have changed or deleted it since the run listed it),
        and the caller embeds it."""
        with self.store.snapshot():
            if not reusable(self.store, info, key):
                return None
            rows = self.store.chunks_of(key)
        if not rows:
            return None
        self.reused_from.add(key)
        chunks = [Chunk(text, start, end, 0) for start, end, text, _ in rows]  # n_tokens: not stored, not needed
        vectors = np.frombuffer(b"".join(r[3] for r in rows), np.float32).reshape(len(rows), -1)
        return PreparedDocument(info.key, info.source, info.content_hash, info.metadata, chunks, vectors)

    def put(self, doc: PreparedDocument) -> None:
        """Insert or replace one document (with no chunks: remove it), atomically."""
        self.put_many([doc])

    def put_many(self, docs: list[PreparedDocument]) -> None:
        """Insert or replace several documents in ONE transaction: all or none."""
        rows = [(doc, self._checked(doc)) for doc in docs]
        with self.locked(), self.store.write() as gen:
            for doc, vectors in rows:
                self._write(doc, vectors, gen)
            self._counting(gen, docs, len(rows))
        self.stored = self._last[1]

    def put_texts(self, docs: list[PreparedDocument], embed) -> AddReport:
        """put_many for texts added directly (content_hash: text_hash), in ONE transaction,
        writing only what changed: a document the store holds with that very text is not
        written again, only its metadata if that differs (its chunks, vectors and added_at
        stay). What the store holds is read inside the transaction, under the writer lock.
        A document given without vectors (the caller found its text held) that another
        writer changed or deleted since is embedded there, by ``embed(docs)``: the store
        ends with this call's text and its vectors all the same."""
        report = AddReport([doc.key for doc in docs])
        rows = {doc.key: self._checked(doc) for doc in docs if doc.vectors is not None}
        with self.locked(), self.store.write() as gen:
            held = self.store.held(report.ids)
            stale = [doc for doc in docs if doc.vectors is None and not holds_text(held.get(doc.key), doc)]
            if stale:  # rare: changed by another writer since the caller looked
                embed(stale)
                rows.update((doc.key, self._checked(doc)) for doc in stale)
            written = []
            for doc in docs:
                if not holds_text(held.get(doc.key), doc):
                    self._write(doc, rows[doc.key], gen)
                    written.append(doc)
                    report.replaced += doc.key in held
                    report.added += doc.key not in held
                elif canonical_json(held[doc.key][2]) != canonical_json(doc.metadata):
                    self.store.set_metadata(doc.key, doc.metadata)
                    report.metadata_updated += 1
                else:
                    report.unchanged += 1
            self._counting(gen, written, len(docs) - report.unchanged)
        self.stored = self._last[1]
        return report

    def _checked(self, doc: PreparedDocument) -> np.ndarray:
        """The document's vectors, checked: one per chunk, of the collection's dimension."""
        vectors = checked_vectors(doc.vectors if doc.chunks else np.zeros((0, self.dim)), self.dim)
        if len(vectors) != len(doc.chunks):
            raise InvalidInput(f"{doc.key}: {len(doc.chunks)} chunks but {len(vectors)} vectors")
        return vectors

    def _write(self, doc: PreparedDocument, vectors: np.ndarray, gen: int) -> None:
        """Insert or replace one document (no chunks: remove it), inside a write."""
        if not doc.chunks:
            self.store.delete_documents([doc.key])
            return
        doc_id, _ = self.store.put_document(doc.key, doc.source, doc.content_hash, doc.metadata)
        self.store.put_chunks(doc_id, gen, ((i, c.start, c.end, c.text, v)
                                            for i, (c, v) in enumerate(zip(doc.chunks, vectors))))

    def put_all(self, batches: Iterable[list[PreparedDocument]]) -> None:
        """Each document its own transaction, the writer lock taken once a batch, and the
        index brought up to date after each."""
        for batch in batches:
            with self.locked():
                for doc in batch:
                    self.put(doc)
            self.flush()

    def left_behind(self) -> int:
        """How many of the documents reused() copied are still here with their files gone:
        the old place of files moved (remove_missing removes those under the paths indexed)."""
        with self.store.snapshot():
            held = self.store.held(sorted(self.reused_from))
        return sum(1 for source, _, _ in held.values() if source and not os.path.exists(source))

    def delete(self, keys: list[str]) -> int:
        """Delete documents by key; returns how many existed."""
        if not keys:
            return 0
        with self.locked(), self.store.write():
            found, _ = self.store.delete_documents(keys)
        return found

    def delete_where(self, where: dict) -> int:
        """Delete the documents a search filter ``where`` matches; returns how many. Matched
        and deleted in one transaction under the lock: a document another writer adds or
        changes meanwhile is matched as it is once that write has committed."""
        with self.locked(), self.store.write():
            found, _ = self.store.delete_matching(where)
        return found

    def remove_missing(self, roots: list[str], seen: set[str], select: Selection,
                       unread: Iterable[str] = (), listed: Iterable[str] = ()) -> int:
        """Delete the documents under ``roots`` this run did not see (missing_documents)."""
        with self.locked():
            return self.delete(missing_documents(self.store, roots, seen, select, unread, listed))

    def flush(self) -> None:
        self.collection.sync_index()
