"""The SQLite store: documents, chunks, their vectors and the FTS5 index; the truth.

Every write is one transaction that also bumps ``generation``; chunks remember the
generation that added them and deleted chunk ids are logged with theirs, so a FAISS file
built at generation G is brought up to date by replaying what came after G.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import math
import os
import sqlite3
import time
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import quote
from typing import Iterable, Iterator

import numpy as np

from .errors import CollectionError, InvalidInput, NoSuchCollection, OutOfSpace
from .lang import CJK_RUN, fts_positions, fts_text
from .validation import INT64, RANGE_OPERATORS

TOKENIZE = "porter unicode61 remove_diacritics 2"  # both lexical tables, and check's word test

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    source TEXT,
    content_hash TEXT,
    metadata TEXT NOT NULL DEFAULT '{{}}',
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    gen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_gen ON chunks(gen);
CREATE TABLE IF NOT EXISTS deleted_chunks (id INTEGER NOT NULL, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deleted_gen ON deleted_chunks(gen);
CREATE TABLE IF NOT EXISTS metadata_keys (key TEXT PRIMARY KEY);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='{TOKENIZE}'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO deleted_chunks(id, gen) VALUES (old.id, (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'));
END;
"""

GENERATION = "SELECT value FROM meta WHERE key = 'generation'"
BUILTIN_FILTERS = {"source": "d.source", "id": "d.key"}
METADATA_PREFIX = "metadata."  # where={"metadata.source": ...}: the metadata key a built-in filter's name hides
log = logging.getLogger("semsearch")

# Lexical search ranks whole documents (BM25 over a document, not over its overlapping
# chunks: benchmarks/README.md, "Retrieval quality"). The table is contentless: its text is
# rebuilt from the chunks by document_text(), the same way on insert and on delete. A store
# whose table is missing or of another LEXICAL_VERSION gets it (re)built when opened.
LEXICAL_VERSION = 1
# a chunks_fts MATCH looks up at most this many chunks one by one, more in one pass over the query's
# matches: at 1M chunks, 64 lookups took ~11 ms, a pass over 600k matches ~55 ms (/tmp/s17/h4_bench.md)
MATCH_SEEKS = 64
LEXICAL_SCHEMA = f"""
CREATE VIRTUAL TABLE documents_fts USING fts5(
    text, content='', tokenize='{TOKENIZE}'
);
"""


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. ``mode=ro`` reads a WAL store whose ``-shm`` file
    exists or can be made; in a read-only folder without one, nobody can be writing the
    store, so SQLite may read it as immutable."""
    uri = _uri(path)
    db = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM meta").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        db.close()
        if "unable to open" not in str(exc):
            raise
    return sqlite3.connect(uri + "?immutable=1", uri=True, isolation_level=None, check_same_thread=False)


def _uri(path: Path) -> str:
    return "file:" + quote(str(path.resolve()))


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` says the disk that holds ``folder`` is full: SQLite's SQLITE_FULL
    (its text before Python 3.11 gave the code), an OSError ENOSPC or EDQUOT, or SQLite's
    I/O error on a filesystem with no room left (it grows its -shm file by writing to it).
    Also faiss's write error (a RuntimeError, from write_index; a Ray task's comes wrapped
    as one), which names the cause only as strerror's text, if at all."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # Python 3.10
            full, io_error = "database or disk is full" in str(exc), "disk I/O error" in str(exc)
        else:
            full, io_error = code & 0xFF == sqlite3.SQLITE_FULL, code & 0xFF == sqlite3.SQLITE_IOERR
        if full or not io_error:
            return full
    elif isinstance(exc, RuntimeError) and "write error" in str(exc):
        if any(os.strerror(e) in str(exc) for e in (errno.ENOSPC, errno.EDQUOT)):
            return True
    else:
        return False
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 16  # less than the -shm file's next 32 KiB and a page


@contextmanager
def room_needed(folder: Path, outcome: str = "nothing of this write was stored"):
    """Writes inside fail on a full disk with OutOfSpace, in one line. Each write is one
    SQLite transaction (or a file made whole before it is renamed into place), so the
    failed one left nothing behind (``outcome`` says so)."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        if not disk_full(exc, folder):
            raise
        raise OutOfSpace.at(folder, outcome) from None


def is_store(path: Path) -> bool:
    """Whether ``path`` is a semsearch store (a SQLite file with our meta), read without
    writing a byte: what `rm` checks before deleting anything."""
    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\0":
                return False
        with closing(_read_only(path)) as db:
            keys = {row[0] for row in db.execute("SELECT key FROM meta")}
    except (OSError, sqlite3.Error):
        return False
    return {"generation", "model", "config"} <= keys


class Store:
    """One SQLite database in WAL mode; many readers, one writer (the collection's lock).

    Each thread gets its own connection, so threads may read concurrently and a
    snapshot in one thread never sees another thread's transaction half done.
    Every write goes through write(); nothing outside this class runs BEGIN/COMMIT.
    close() waits for the snapshots and writes other threads have in progress: closing a
    connection under a thread that is using it raised sqlite3's ProgrammingError there,
    and could crash the process.
    """

    def __init__(self, path: Path, create: bool = False):
        self.path = path
        if not create and not path.is_file():
            raise NoSuchCollection(f"no store at {path}")
        # a store we may not write (a read-only mount, another user's files) is still searchable
        self.read_only = not create and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        self._local = threading.local()
        self.closed = False
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}  # each thread's
        self._guard = threading.Condition()  # over closed, _connections and _active
        self._active = 0  # snapshots and writes in progress, in all threads
        if create:
            try:
                with room_needed(path.parent), closing(sqlite3.connect(path, isolation_level=None)) as db:
                    db.execute("PRAGMA journal_mode=WAL")  # kept in the file: readers need not set it
                    db.executescript(SCHEMA)
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            except sqlite3.DatabaseError as exc:
                raise CollectionError(f"cannot create a store at {path} ({exc})") from None
        try:
            self._file = _identity(path)
        except FileNotFoundError:  # removed since the check above
            raise NoSuchCollection(f"no store at {path}") from None
        try:
            self.db  # open (and check) this thread's connection now, so a bad file fails here
            self._upgrade_lexical()
        except sqlite3.DatabaseError as exc:  # a page that meta's reads need is damaged
            raise self._unreadable(exc) from None

    def replaced(self) -> bool:
        """Whether the file at our path is no longer the one this store opened (removed by
        `semsearch rm`, perhaps created anew): writing on would write into an orphan."""
        try:
            return _identity(self.path) != self._file
        except FileNotFoundError:
            return True

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self.closed and not getattr(self._local, "depth", 0):  # a late thread (a server past
            raise CollectionError(f"{self.path} is closed")  # its drain time): one clear error
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                db = _read_only(self.path)
            else:  # mode=rw: never create the file (`rm` may have removed it since we opened it)
                db = sqlite3.connect(_uri(self.path) + "?mode=rw", uri=True, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.OperationalError as exc:
            if disk_full(exc, self.path.parent):
                raise OutOfSpace.at(self.path.parent, f"SQLite cannot make room for {self.path.name}-shm, "
                                    "which reading needs too") from None
            if "unable to open" in str(exc) and not self.path.exists():
                raise NoSuchCollection(f"no store at {self.path} (removed since it was opened)") from None
            if "unable to open" in str(exc):
                raise CollectionError(f"cannot open {self.path} ({exc}): check its permissions") from None
            raise self._unreadable(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        with self._guard:
            if self.closed:  # close() ran while it was being opened: it would outlive the store
                db.close()
                raise CollectionError(f"{self.path} is closed")
            for thread in [t for t in self._connections if not t.is_alive()]:  # ended: a server's
                self._connections.pop(thread).close()  # threadpool ends idle threads and starts new ones
            self._connections[threading.current_thread()] = db
        return db

    def _unreadable(self, exc: sqlite3.DatabaseError) -> CollectionError:
        return CollectionError(f"{self.path} is not a readable semsearch store ({exc}); if the file is "
                               "damaged, restore a backup or index again")

    def close(self) -> None:
        """Close every thread's connection once the snapshots and writes in progress have
        ended (new ones raise CollectionError); the store cannot be used after this."""
        with self._guard:
            self.closed = True
            mine = 1 if getattr(self._local, "depth", 0) else 0  # closed from inside a snapshot
            while self._active > mine:
                self._guard.wait()
            for db in self._connections.values():
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file now, or raise: close() does it
        too but fails silently (on a full disk), leaving the data in the -wal file, which a
        file renamed into place leaves behind."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def generation(self) -> int:
        return int(self.db.execute(GENERATION).fetchone()[0])

    def latest_generation(self) -> int:
        """The last committed generation, past this thread's snapshot (a connection of its
        own for this one read); this snapshot's if the file cannot be read now."""
        try:
            with closing(_read_only(self.path)) as db:
                return int(db.execute(GENERATION).fetchone()[0])
        except sqlite3.Error:
            return self.generation()

    @contextmanager
    def write(self):
        """One atomic write: everything inside commits together or not at all.

        The generation is bumped first, so triggers log deletes under it; yields the new
        generation. A write that changed no row (a delete of unknown ids) is rolled back,
        bump and all: every reader replays each new generation, and writers save the index."""
        with room_needed(self.path.parent), self._transaction() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                bumped = db.total_changes  # counts rows triggers change too
                yield self.generation()
                db.execute("COMMIT" if db.total_changes != bumped else "ROLLBACK")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self):
        """A consistent read: everything inside sees one state of the store (re-entrant)."""
        if self.in_snapshot:  # re-entrant
            yield
            return
        with self._transaction() as db:
            db.execute("BEGIN")
            try:
                yield
            finally:
                db.execute("COMMIT")

    def copy_to(self, target: Path) -> None:
        """Write this thread's snapshot of the store into the new file ``target`` with
        SQLite's online backup, in one step (stepwise, every commit by another connection
        would restart it): writers go on meanwhile, as with any reader. The copy is checked
        (quick_check) before it is closed. Call inside a snapshot that has read."""
        if not self.in_snapshot:
            raise RuntimeError("copy_to reads one snapshot: call it inside snapshot()")
        with closing(sqlite3.connect(target, isolation_level=None)) as copy:
            self.db.backup(copy)
            verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise CollectionError(f"the copy of {self.path} at {target} fails SQLite's check ({verdict})")

    @property
    def in_snapshot(self) -> bool:
        """Whether this thread is inside a snapshot or write of this store."""
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def _transaction(self):
        """This thread's connection for one transaction, counted so that close() waits
        for it to end; CollectionError once the store is closed."""
        with self._guard:
            if self.closed:
                raise CollectionError(f"{self.path} is closed")
            self._active += 1
        local = self._local
        local.depth = getattr(local, "depth", 0) + 1
        try:
            yield self.db
        finally:
            local.depth -= 1
            with self._guard:
                self._active -= 1
                self._guard.notify_all()

    # -- writes (inside write()) ------------------------------------------------------
    def put_document(self, key: str, source: str | None, content_hash: str | None,
                     metadata: dict) -> tuple[int, list[int]]:
        """Insert or replace a document; returns its row id and the chunk ids it replaced."""
        old = self.delete_documents([key])[1]
        cur = self.db.execute(
            "INSERT INTO documents(key, source, content_hash, metadata, added_at) VALUES (?,?,?,?,?)",
            (key, source, content_hash, json.dumps(metadata, ensure_ascii=False), time.time()))
        self._note_keys(metadata)
        return cur.lastrowid, old

    def set_metadata(self, key: str, metadata: dict) -> None:
        """Replace a document's metadata alone: its chunks, vectors and added_at stay."""
        self.db.execute("UPDATE documents SET metadata = ? WHERE key = ?",
                        (json.dumps(metadata, ensure_ascii=False), key))
        self._note_keys(metadata)

    def _note_keys(self, metadata: dict) -> None:
        """Record metadata's keys: a where filter refuses a key no document was written with."""
        self.db.executemany("INSERT OR IGNORE INTO metadata_keys VALUES (?)", [(k,) for k in metadata])

    def put_chunks(self, doc_id: int, gen: int, rows: Iterable[tuple[int, int, int, str, np.ndarray]]) -> list[int]:
        """Insert ALL of a new document's (position, start, end, text, vector) rows, in
        order, and its lexical index entry; returns the new chunk ids."""
        ids, spans = [], []
        for position, start, end, text, vector in rows:
            cur = self.db.execute(
                "INSERT INTO chunks(doc_id, position, start, end, text, vector, gen) VALUES (?,?,?,?,?,?,?)",
                (doc_id, position, start, end, text, np.asarray(vector, np.float32).tobytes(), gen))
            ids.append(cur.lastrowid)
            spans.append((start, end, text))
        if spans:
            self._index_text(doc_id, spans)
        return ids

    def delete_documents(self, keys: Iterable[str]) -> tuple[int, list[int]]:
        """Delete documents by key; returns how many existed and the ids of their chunks."""
        found, gone = 0, []
        for key in keys:
            row = self.db.execute("SELECT id FROM documents WHERE key = ?", (key,)).fetchone()
            if row:
                found += 1
                gone += [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", row)]
                self._unindex_text(row[0])
                self.db.execute("DELETE FROM chunks WHERE doc_id = ?", row)
                self.db.execute("DELETE FROM documents WHERE id = ?", row)
        return found, gone

    def delete_matching(self, where: dict) -> tuple[int, list[int]]:
        """Delete the documents that match ``where`` as a search filter matches them (inside
        write(): matched and deleted in one transaction); as delete_documents returns."""
        clause, params = self._matching(where)
        return self.delete_documents([r[0] for r in self.db.execute(
            "SELECT d.key FROM documents d WHERE " + clause, params).fetchall()])

    # -- reads ------------------------------------------------------------------------------
    def document_hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, content_hash FROM documents"))

    def held(self, keys: Iterable[str]) -> dict[str, tuple[str | None, str | None, dict]]:
        """Key -> (source, content_hash, metadata) of the documents of ``keys`` that exist."""
        rows = self.db.execute("SELECT key, source, content_hash, metadata FROM documents "
                               "WHERE key IN (SELECT value FROM json_each(?))", (json.dumps(list(keys)),))
        return {key: (source, digest, json.loads(meta)) for key, source, digest, meta in rows}

    def chunks_of(self, key: str) -> list[tuple[int, int, str, bytes]]:
        """(start, end, text, vector) of document ``key``'s chunks, in order (Writer.reused)."""
        return self.db.execute("SELECT c.start, c.end, c.text, c.vector FROM chunks c JOIN documents d "
                               "ON d.id = c.doc_id WHERE d.key = ? ORDER BY c.position", (key,)).fetchall()

    def wrote(self, key: str, gen: int) -> bool:
        """Whether the write of generation ``gen`` committed chunks of document ``key``."""
        return self.db.execute("SELECT 1 FROM chunks c JOIN documents d ON d.id = c.doc_id "
                               "WHERE d.key = ? AND c.gen = ? LIMIT 1", (key, gen)).fetchone() is not None

    def metadata_keys(self) -> list[str]:
        """Every metadata key a document was written with, sorted: the keys a where may name."""
        return [r[0] for r in self.db.execute("SELECT key FROM metadata_keys ORDER BY key")]

    def documents_under(self, root: str) -> list[tuple[str, str]]:
        """(key, source) of documents whose source file lies under ``root``."""
        prefix = root.rstrip("/") + "/"  # compared literally: LIKE would treat _ and % as wildcards
        return list(self.db.execute(
            "SELECT key, source FROM documents WHERE source = ? OR substr(source, 1, ?) = ?",
            (root, len(prefix), prefix)))

    def documents(self, keys: list[str] | None = None, where: dict | None = None,
                  after: str | None = None, limit: int = 256) -> list[tuple]:
        """(row id, key, source, metadata, added_at, chunk count) of up to ``limit``
        documents in key order: those of ``keys`` that exist, and (or else) those ``where``
        matches (_matching's rule), with keys past ``after`` (a page's last key)."""
        clauses, params = ["1"], []
        if where:
            clause, params = self._matching(where)
            clauses.append(clause)
        if keys is not None:
            params.append(json.dumps(keys))
            clauses.append(f"d.key IN (SELECT value FROM json_each(?{len(params)}))")
        if after is not None:
            params.append(after)
            clauses.append(f"d.key > ?{len(params)}")
        params.append(limit)
        rows = self.db.execute(
            "SELECT d.id, d.key, d.source, d.metadata, d.added_at, "
            "(SELECT count(*) FROM chunks c WHERE c.doc_id = d.id) FROM documents d "
            f"WHERE {' AND '.join(clauses)} ORDER BY d.key LIMIT ?{len(params)}", params).fetchall()
        return [(*r[:3], json.loads(r[3]), *r[4:]) for r in rows]

    def original_texts(self, doc_ids: Iterable[int]) -> dict[int, str]:
        """Row id -> the document's text rebuilt from its chunks (each a slice of it). What
        lies between chunks (whitespace the tokenizer skips) comes back as as many spaces,
        so a hit's start and end index into it; whitespace past the last chunk is not kept."""
        rows = self._in("SELECT doc_id, start, end, text FROM chunks WHERE doc_id IN ({}) "
                        "ORDER BY doc_id, position", doc_ids)
        return {doc_id: "".join(" " * gap + piece for gap, piece in _pieces(row[1:] for row in group))
                for doc_id, group in itertools.groupby(rows, key=lambda row: row[0])}

    def chunks_per_document(self) -> dict[str, int]:
        """Document key -> number of chunks (0 for none): for checks and tests."""
        return dict(self.db.execute(
            "SELECT d.key, count(c.id) FROM documents d LEFT JOIN chunks c ON c.doc_id = d.id GROUP BY d.key"))

    def counts(self) -> tuple[int, int]:
        docs = self.db.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def vectors(self, since_gen: int = 0, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of live chunks added after ``since_gen``, in batches, in id order
        (a later generation's chunks have larger ids). Past a generation, ordered as the gen
        index is: ``ORDER BY id`` made SQLite scan every chunk for the few new ones, on
        every replay (1.6 s at 1M chunks)."""
        order = "gen, id" if since_gen else "id"
        cur = self.db.execute(f"SELECT id, vector FROM chunks WHERE gen > ? ORDER BY {order}", (since_gen,))
        while rows := cur.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)

    def deleted_since(self, gen: int) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM deleted_chunks WHERE gen > ?", (gen,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def chunk_vectors(self, ids: np.ndarray) -> np.ndarray:
        rows = self._in("SELECT id, vector FROM chunks WHERE id IN ({})", ids)
        by_id = {r[0]: r[1] for r in rows}
        return np.frombuffer(b"".join(by_id[i] for i in ids.tolist()), np.float32).reshape(len(ids), -1)

    def chunk_rows(self, ids: Iterable[int]) -> dict[int, tuple]:
        """Chunk id -> (document key, position, start, end, text, source, metadata):
        everything a search hit shows, in one query."""
        rows = self._in(
            "SELECT c.id, d.key, c.position, c.start, c.end, c.text, d.source, d.metadata "
            "FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({})", ids)
        return {r[0]: r[1:7] + (json.loads(r[7]) if r[7] != "{}" else {},) for r in rows}

    def filter_ids(self, where: dict) -> np.ndarray:
        """Chunk ids whose document matches ``where`` (_matching's rule). The documents are
        matched first, each once, then their chunks looked up: a join would match a
        document's metadata once per chunk (10x the work for documents of 10 chunks)."""
        clause, params = self._matching(where)
        sql = f"SELECT c.id FROM chunks c WHERE c.doc_id IN (SELECT d.id FROM documents d WHERE {clause})"
        return np.array([r[0] for r in self.db.execute(sql, params)], dtype=np.int64)

    def _matching(self, where: dict) -> tuple[str, list]:
        """The SQL condition (on documents ``d``) and its parameters for a document that
        matches every condition in ``where`` (validation.where_filter's form, not empty):
        ``source`` and ``id`` are the document's file and id, ``metadata.KEY`` is metadata's
        KEY (a record's own "source" field: ``metadata.source``), any other key is a metadata
        key. A metadata list matches when the list as a whole or one of its items does."""
        known = set(self.metadata_keys())
        params: list = []

        def param(value) -> str:
            params.append(value)
            return f"?{len(params)}"

        clauses = []
        for key, condition in where.items():
            ops = condition if isinstance(condition, dict) else {"$eq": condition}
            if key in BUILTIN_FILTERS:
                column = BUILTIN_FILTERS[key]
                if list(ops) == ["$eq"]:  # the plain case as it always was: the key's index serves it
                    value = ops["$eq"]
                    clauses.append(f"{column} IS {param(None if value is None else _as_text(value))}")
                    continue
                kind = f"CASE WHEN {column} IS NULL THEN 'null' ELSE 'text' END"
                matched, present = (lambda test: f"({test(kind, column)})"), f"{column} IS NOT NULL"
            else:
                if key.startswith(METADATA_PREFIX) and key not in known:
                    key = key[len(METADATA_PREFIX):]
                if key not in known:
                    choices = ", ".join(sorted(known | set(BUILTIN_FILTERS)))
                    hidden = ", ".join(f"{METADATA_PREFIX}{k}" for k in sorted(known & set(BUILTIN_FILTERS)))
                    raise InvalidInput(f"unknown metadata key {key!r} in where (known: {choices}"
                                       f"{f'; the metadata keys named as built-in filters: {hidden}' if hidden else ''})")
                member = f"SELECT 1 FROM json_each(d.metadata) e WHERE e.key = {param(key)}"  # one parse

                def matched(test, member=member):  # the value, or one item of a list value
                    return (f"EXISTS ({member} AND ({test('e.type', 'e.value')} OR e.type = 'array' AND "
                            f"EXISTS (SELECT 1 FROM json_each(e.value) i WHERE {test('i.type', 'i.value')})))")
                present = f"EXISTS ({member})"
            clauses += _conditions(ops, matched, present, param)
        return " AND ".join(clauses), params

    def lexical_documents(self, match: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """BM25 over whole documents: (document row id, score) best first; higher is better.
        ``allowed`` (chunk ids) keeps the documents those chunks belong to."""
        sql = "SELECT rowid, -bm25(documents_fts) FROM documents_fts WHERE documents_fts MATCH ?"
        params: list = [match]
        if allowed is not None:
            if not len(allowed):
                return []
            sql += " AND rowid IN (SELECT doc_id FROM chunks WHERE id IN (SELECT value FROM json_each(?)))"
            params.append(json.dumps(allowed.tolist()))
        sql += " ORDER BY bm25(documents_fts), rowid LIMIT ?"  # ties: the document added first
        params.append(k)
        try:
            return [(r[0], float(r[1])) for r in self.db.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            raise CollectionError(f"lexical query failed: {exc}") from None

    def sample_texts(self, n: int = 100) -> list[str]:
        """Up to n chunk texts spread evenly over the store (for lang.script_notice)."""
        lo, hi = self.db.execute("SELECT min(id), max(id) FROM chunks").fetchone()
        if lo is None:
            return []
        ids = sorted({int(i) for i in np.linspace(lo, hi, n)})
        return [r[0] for r in self._in("SELECT text FROM chunks WHERE id IN ({})", ids)]

    def chunk_documents(self, chunk_ids: Iterable[int]) -> dict[int, int]:
        """Chunk id -> its document's row id."""
        return dict(self._in("SELECT id, doc_id FROM chunks WHERE id IN ({})", chunk_ids))

    def document_chunks(self, doc_ids: Iterable[int]) -> dict[int, list[int]]:
        """Document row id -> its chunk ids in order."""
        out: dict[int, list[int]] = {}
        for doc_id, chunk_id in self._in(
                "SELECT doc_id, id FROM chunks WHERE doc_id IN ({}) ORDER BY doc_id, position", doc_ids):
            out.setdefault(doc_id, []).append(chunk_id)
        return out

    def best_lexical_chunks(self, match: str, chunk_ids: Iterable[int]) -> dict[int, float]:
        """Chunk-level BM25 of the given chunks that match: which part of a document matched."""
        chunk_ids = list(chunk_ids)
        rows = self._in("SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                        f"AND {_rowid_in(len(chunk_ids))} IN ({{}})", chunk_ids, first=(match,))
        return dict(rows)

    def match_spans(self, match: str, chunks: dict[int, str]) -> dict[int, list[list[int]]]:
        """Chunk id -> where in its text (``chunks``: id -> text, as stored) the FTS5 query
        ``match`` matches, as the lexical index reads it: sorted, disjoint [start, end) spans
        in code points; a chunk it does not match gets none. FTS5's own highlight() marks
        the words, so stemming, folded diacritics and quoting are the index's. chunks_fts
        holds the stored text; a text with CJK is read as lang.fts_text writes it (its runs
        as bigrams, which chunks_fts does not hold): _cjk_spans. One statement for all the
        chunks (three more when some hold CJK), whatever their number."""
        if not match or not chunks:
            return {}
        opening, closing_ = _markers(chunks.values())
        cjk = {c: t for c, t in chunks.items() if CJK_RUN.search(t)}
        plain = [c for c in chunks if c not in cjk]
        try:
            marked = dict(self._in(f"SELECT rowid, highlight(chunks_fts, 0, ?, ?) FROM chunks_fts WHERE chunks_fts "
                                   f"MATCH ? AND {_rowid_in(len(plain))} IN ({{}})", plain,
                                   first=(opening, closing_, match)))
            spans = {c: _marked_spans(text, opening, closing_) for c, text in marked.items()}
            if cjk:
                spans.update(self._cjk_spans(match, cjk, opening, closing_))
        except sqlite3.OperationalError as exc:
            raise CollectionError(f"lexical query failed: {exc}") from None
        return {c: s for c, s in spans.items() if s}

    def _cjk_spans(self, match: str, texts: dict[int, str], opening: str, closing_: str) -> dict[int, list[list[int]]]:
        """match_spans of texts with CJK: each as lang.fts_text writes it in a temp FTS5 table
        (emptied again), the marks found there mapped back to the text's own positions."""
        positions = {c: fts_positions(text) for c, text in texts.items()}
        self.db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.match_spans USING fts5(text, tokenize='{TOKENIZE}')")
        self.db.execute("INSERT INTO temp.match_spans(rowid, text) SELECT CAST(key AS INTEGER), value FROM json_each(?)",
                        (json.dumps({c: fts for c, (fts, _) in positions.items()}),))
        try:
            rows = self.db.execute("SELECT rowid, highlight(match_spans, 0, ?, ?) FROM temp.match_spans WHERE "
                                   "match_spans MATCH ?", (opening, closing_, match)).fetchall()
        finally:
            self.db.execute("DELETE FROM temp.match_spans")
        return {c: _merged([[positions[c][1][a][0], positions[c][1][b - 1][1]]
                            for a, b in _marked_spans(text, opening, closing_)]) for c, text in rows}

    # -- the lexical index ------------------------------------------------------------------
    def _index_text(self, doc_id: int, spans: list[tuple[int, int, str]]) -> None:
        """Add a document to documents_fts from its chunks' (start, end, text) in order."""
        self.db.execute("INSERT INTO documents_fts(rowid, text) VALUES (?, ?)", (doc_id, document_text(spans)))

    def _unindex_text(self, doc_id: int) -> None:
        """Remove a document from documents_fts (before its chunks go)."""
        spans = self.db.execute("SELECT start, end, text FROM chunks WHERE doc_id = ? ORDER BY position",
                                (doc_id,)).fetchall()
        if spans:
            self.db.execute("INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', ?, ?)",
                            (doc_id, document_text(spans)))

    def _upgrade_lexical(self) -> None:
        """Build documents_fts from the chunks when this store predates it (or its version)."""
        if self.get_meta("lexical_version") == LEXICAL_VERSION:
            return
        try:
            with self.write():
                if self.get_meta("lexical_version") == LEXICAL_VERSION:  # another process did it
                    return
                self._build_lexical()
        except (sqlite3.OperationalError, OutOfSpace) as exc:  # read-only, or a full disk: lexical search says so
            log.warning("cannot build the document-level lexical index of %s (%s); lexical and "
                        "hybrid search need it: open the collection once with write access and room on its disk",
                        self.path, exc)

    def _build_lexical(self) -> None:
        """(Re)build documents_fts from the chunks (inside write())."""
        self.db.execute("DROP TABLE IF EXISTS documents_fts")
        self.db.execute(LEXICAL_SCHEMA)
        rows = self.db.execute("SELECT doc_id, start, end, text FROM chunks ORDER BY doc_id, position")
        for doc_id, group in itertools.groupby(rows, key=lambda row: row[0]):
            self._index_text(doc_id, [row[1:] for row in group])
        self.set_meta("lexical_version", LEXICAL_VERSION)

    # -- checks and repairs (`semsearch check`) ----------------------------------------------
    def problems(self) -> dict[str, list[str]]:
        """check_store's findings (not inside a snapshot: it takes its own)."""
        if self.in_snapshot:
            raise RuntimeError("problems() takes its own transactions: call it outside snapshot()")
        with self._transaction() as db:
            return check_store(db)

    def repair(self, found: dict[str, list[str]]) -> list[str]:
        """Fix, in one write, what check_store ``found`` that can be rebuilt from the chunks;
        returns what was done. Documents without chunks and chunks without a document are
        deleted: only damage makes them (every write stores a document with all its chunks,
        and deletes them together), their text is gone or unreachable (search shows a chunk
        through its document), and their ids come back with the next `index` or `add`. Then
        both lexical tables are rebuilt from the chunks (FTS5's 'rebuild'; documents_fts as
        an upgrade builds it), as an orphan's entries go with them."""
        done = []
        with self.write():
            if found.get("documents"):
                gone = self.db.execute("DELETE FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)").rowcount
                empty = self.db.execute("DELETE FROM documents WHERE id NOT IN (SELECT doc_id FROM chunks)").rowcount
                if gone or empty:
                    done.append(f"deleted {empty} document(s) without chunks and {gone} chunk(s) without a document")
            if found.get("lexical") or done:
                self.db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
                self._build_lexical()
                done.append("rebuilt the lexical indexes (chunks_fts, documents_fts) from the chunks")
        return done

    def sample_chunks(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of up to ``n`` chunks spread evenly over the store in id order, of
        the pinned dimension (a vector of another length is check_store's finding)."""
        total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        dim = self.get_meta("model")["dim"]
        rows = self.db.execute(
            "SELECT id, vector FROM chunks WHERE length(vector) = ? AND id IN (SELECT id FROM (SELECT id, "
            "row_number() OVER (ORDER BY id) AS r FROM chunks) WHERE (r - 1) % ? = 0) ORDER BY id LIMIT ?",
            (dim * 4, max(1, total // n), n)).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)

    def _in(self, sql: str, ids: Iterable[int], first: tuple = ()) -> list:
        """Rows for ``ids``: placeholders for the usual few, a JSON array past SQLite's limit
        (``first``: parameters that come before them)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        if len(ids) <= 500:
            return self.db.execute(sql.format(",".join("?" * len(ids))), (*first, *ids)).fetchall()
        return self.db.execute(sql.format("SELECT value FROM json_each(?)"), (*first, json.dumps(ids))).fetchall()


def _rowid_in(ids: int) -> str:
    """How a MATCH on chunks_fts is limited to ``ids`` chunks: FTS5 answers "rowid IN" by
    running the query once per id (0.2 ms each); "+rowid" hides the ids from it, so the
    query runs once over the whole index, cheaper past MATCH_SEEKS ids."""
    return "rowid" if ids <= MATCH_SEEKS else "+rowid"


def document_text(spans: Iterable[tuple[int, int, str]]) -> str:
    """A document's text as documents_fts indexes it, from its chunks' (start, end, text) in
    order: each chunk less what it shares with the one before, CJK as lang.fts_text writes it."""
    return fts_text(" ".join(piece for _, piece in _pieces(spans)))


def _pieces(spans: Iterable[tuple[int, int, str]]) -> Iterator[tuple[int, str]]:
    """(characters skipped before it, the new part of it) for each chunk in order: chunks
    overlap, and may leave out what lies between them."""
    reached = 0
    for start, end, text in spans:
        yield max(0, start - reached), text[max(0, reached - start):]
        reached = max(reached, end)


def _markers(texts: Iterable[str]) -> tuple[str, str]:
    """Two characters that none of ``texts`` holds, to mark matches with: private-use ones
    first (a text holding all million characters past them is too big to be a hit's)."""
    joined = "\0".join(texts)
    free = (chr(c) for c in range(0xE000, 0x110000) if chr(c) not in joined)
    return next(free), next(free)


def _marked_spans(marked: str, opening: str, closing_: str) -> list[list[int]]:
    """The [start, end) spans that highlight() put between the markers, in the unmarked text."""
    spans, removed, at = [], 0, marked.find(opening)
    while at >= 0:
        end = marked.index(closing_, at)
        spans.append([at - removed, end - removed - 1])
        removed += 2
        at = marked.find(opening, end)
    return _merged(spans)


def _merged(spans: list[list[int]]) -> list[list[int]]:
    """Sorted spans, overlapping or touching ones joined (CJK bigrams of two query words overlap)."""
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


STORE_CHECKS = ("sqlite", "lexical", "documents", "positions", "vectors")  # check_store's, in its order
LEXICAL_TABLES = ("chunks_fts", "documents_fts")


def check_store(db: sqlite3.Connection) -> dict[str, list[str]]:
    """What is wrong with a store, by check (STORE_CHECKS; an empty list: passed; "notes":
    what could not be checked here), read with ``db`` alone, an autocommit connection
    (benchmarks/torture.py passes a plain one). The invariants every write keeps: SQLite's
    full integrity_check; FTS5's integrity-check of both lexical tables (chunks_fts against
    the chunks, rank 1), each holding exactly the chunks, and the documents with chunks;
    every document with chunks at positions 0..n-1 and every chunk with a document; every
    vector of the pinned dimension, finite and of length 1 (validation.UNIT_TOLERANCE).
    FTS5's integrity-check is an INSERT, so SQLite runs it only under its write lock: in a
    transaction of its own, rolled back (a writer waits for it; a read-only store skips it,
    its other checks still run). The rest reads one snapshot. A check the damage keeps from
    reading says so as its finding."""
    found: dict[str, list[str]] = {name: [] for name in STORE_CHECKS}
    found["notes"] = []
    for table in LEXICAL_TABLES:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # read-only, or a writer held the store 10 s
            found["notes"].append(f"FTS5's integrity-check of {table} was not run ({exc})")
            continue
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                db.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', ?)",
                           (int(table == "chunks_fts"),))
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc):  # BEGIN IMMEDIATE is allowed on some read-only connections
                found["notes"].append(f"FTS5's integrity-check of {table} was not run ({exc})")
            else:
                found["lexical"].append(f"{table} fails FTS5's integrity-check ({exc})")
        finally:
            db.execute("ROLLBACK")
    db.execute("BEGIN")
    try:
        for name, check in (("sqlite", _check_sqlite), ("lexical", _check_lexical),
                            ("documents", _check_documents), ("vectors", _check_vectors)):
            try:
                check(db, found)
            except sqlite3.DatabaseError as exc:
                found[name].append(f"the {name} check cannot read the store ({exc})")
    finally:
        try:
            db.execute("COMMIT")
        except sqlite3.DatabaseError:  # on a damaged file: a read transaction, nothing to keep
            if db.in_transaction:
                db.execute("ROLLBACK")
    return found


def _check_sqlite(db: sqlite3.Connection, found: dict) -> None:
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:  # a page too damaged to walk
        rows = [str(exc)]
    # a newer SQLite checks FTS5 tables here too: those findings are the lexical check's
    fts = [r for r in rows if any(t in r for t in LEXICAL_TABLES)]
    found["lexical"] += fts
    pages = [r for r in rows if r != "ok" and r not in fts]
    if pages:
        found["sqlite"].append(f"integrity_check: {pages[0]}" + (f" (and {len(pages) - 1} more)" if len(pages) > 1 else ""))


def _check_lexical(db: sqlite3.Connection, found: dict) -> None:
    chunks = {r[0] for r in db.execute("SELECT id FROM chunks")}
    docs = {r[0] for r in db.execute("SELECT DISTINCT doc_id FROM chunks WHERE doc_id IN (SELECT id FROM documents)")}
    for table, should in (("chunks_fts", chunks), ("documents_fts", docs)):
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
            found["lexical"].append(f"{table} is missing")
            continue
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{table}_check USING fts5vocab(main, {table}, instance)")
        held = {r[0] for r in db.execute(f"SELECT DISTINCT doc FROM temp.{table}_check")}
        missing = should - held
        if missing:  # a text with no word in it (punctuation alone) has no entry to see
            texts = dict(db.execute("SELECT id, text FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                                    (json.dumps(sorted(missing)),))) if table == "chunks_fts" \
                else _document_texts(db, missing)
            missing -= _wordless(db, texts)
        extra = held - should
        if missing or extra:
            what = "chunks" if table == "chunks_fts" else "documents"
            found["lexical"].append(f"{table} lacks {len(missing)} of the {what} (e.g. {sorted(missing)[:3]}) "
                                    f"and holds {len(extra)} that are not (e.g. {sorted(extra)[:3]})")


def _document_texts(db: sqlite3.Connection, doc_ids: set[int]) -> dict[int, str]:
    rows = db.execute("SELECT doc_id, start, end, text FROM chunks WHERE doc_id IN "
                      "(SELECT value FROM json_each(?)) ORDER BY doc_id, position", (json.dumps(sorted(doc_ids)),))
    return {doc_id: document_text(row[1:] for row in group)
            for doc_id, group in itertools.groupby(rows, key=lambda row: row[0])}


def _wordless(db: sqlite3.Connection, texts: dict[int, str]) -> set[int]:
    """The ids of ``texts`` in which the lexical tokenizer finds no word."""
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.words_check USING fts5(text, content='', "
               f"tokenize='{TOKENIZE}')")
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.words_check_v USING fts5vocab(temp, words_check, instance)")
    db.execute("INSERT INTO temp.words_check(words_check) VALUES ('delete-all')")
    db.executemany("INSERT INTO temp.words_check(rowid, text) VALUES (?, ?)", texts.items())
    return set(texts) - {r[0] for r in db.execute("SELECT DISTINCT doc FROM temp.words_check_v")}


def _check_documents(db: sqlite3.Connection, found: dict) -> None:
    empty = [r[0] for r in db.execute("SELECT key FROM documents WHERE id NOT IN (SELECT doc_id FROM chunks) "
                                      "ORDER BY key LIMIT 4")]
    if empty:
        n = db.execute("SELECT count(*) FROM documents WHERE id NOT IN (SELECT doc_id FROM chunks)").fetchone()[0]
        found["documents"].append(f"{n} document(s) without chunks (e.g. {empty[:3]})")
    orphans = db.execute("SELECT count(*), min(rowid) FROM pragma_foreign_key_check('chunks')").fetchone()
    if orphans[0]:
        found["documents"].append(f"{orphans[0]} chunk(s) without a document (e.g. chunk {orphans[1]})")
    gaps = [r[0] for r in db.execute(
        "SELECT d.key FROM documents d JOIN chunks c ON c.doc_id = d.id GROUP BY d.id "
        "HAVING min(c.position) != 0 OR max(c.position) != count(*) - 1 OR count(DISTINCT c.position) != count(*) "
        "ORDER BY d.key LIMIT 4")]
    if gaps:
        found["positions"].append(f"document(s) whose chunk positions are not 0..n-1 (e.g. {gaps[:3]})")


def _check_vectors(db: sqlite3.Connection, found: dict) -> None:
    from .validation import UNIT_TOLERANCE
    dim = json.loads(db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()[0])["dim"]
    wrong = db.execute("SELECT count(*), min(id) FROM chunks WHERE length(vector) != ? OR typeof(vector) != 'blob'",
                       (dim * 4,)).fetchone()
    if wrong[0]:
        found["vectors"].append(f"{wrong[0]} chunk vector(s) are not {dim}-d float32 (e.g. chunk {wrong[1]})")
    bad, first = 0, None
    cur = db.execute("SELECT id, vector FROM chunks WHERE length(vector) = ? AND typeof(vector) = 'blob'", (dim * 4,))
    while rows := cur.fetchmany(20_000):
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        with np.errstate(all="ignore"):
            off = ~(np.abs(np.linalg.norm(vectors, axis=1) - 1) <= UNIT_TOLERANCE)  # NaN and inf too
        if off.any():
            bad += int(off.sum())
            first = first if first is not None else rows[int(np.flatnonzero(off)[0])][0]
    if bad:
        found["vectors"].append(f"{bad} chunk vector(s) are not finite vectors of length 1 (e.g. chunk {first})")


def _conditions(ops: dict, matched, present: str, param) -> list[str]:
    """SQL for one key's operators. ``matched(test)``: SQL true where test(type, value) holds
    for the key's value (or, for a metadata list, one of its items); ``present``: true where
    the key is."""
    def equals_any(values) -> str:  # each set once, as a lookup: not an OR (or a scan) per value
        texts = param(json.dumps([_as_text(v) for v in values]))
        numbers = param(json.dumps([n for n in map(_as_number, values) if n is not None]))
        return matched(lambda t, a: _equals(t, a, f"IN (SELECT value FROM json_each({texts}))",
                                            f"IN (SELECT value FROM json_each({numbers}))"))

    out = []
    for op, operand in ops.items():
        if op in ("$eq", "$ne"):
            text, number = param(_as_text(operand)), param(_as_number(operand))
            test = matched(lambda t, a: _equals(t, a, f"= {text}", f"= {number}"))
            out.append(test if op == "$eq" else f"NOT COALESCE({test}, 0)")
        elif op in ("$in", "$nin"):
            test = equals_any(operand)
            out.append(test if op == "$in" else f"NOT COALESCE({test}, 0)")
        elif op == "$exists":
            out.append(present if operand else f"NOT ({present})")
    bounds = [(RANGE_OPERATORS[op], bound) for op, bound in ops.items() if op in RANGE_OPERATORS]
    if bounds:  # one value (or one item of a list) must lie within all of a key's bounds
        bounds = [(sign, param(_as_text(b)), param(_as_number(b))) for sign, b in bounds]
        out.append(matched(lambda t, a: " AND ".join(_compares(t, a, *bound) for bound in bounds)))
    return out


def _equals(t: str, a: str, text_test: str, number_test: str) -> str:
    """SQL: a stored value (JSON type t, SQL value a) equals a filter value: its JSON text
    (true/false/null, numbers and strings as written) passes ``text_test`` ("= ?2", "IN
    (...)"), or it is a number that passes ``number_test``."""
    return (f"(CASE {t} WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null' "
            f"ELSE CAST({a} AS TEXT) END {text_test} OR {t} IN ('integer', 'real') AND {a} {number_test})")


def _compares(t: str, a: str, sign: str, text: str, number: str) -> str:
    """SQL: a stored value lies on ``sign``'s side of a bound. Numbers, and texts that spell
    one, compare as numbers with a bound that is or spells a number; other texts compare
    character by character with the bound as written (ISO dates sort right: 2024-01-05 >=
    2024); booleans, null, lists and dicts never do."""
    spells_number = f"CASE WHEN json_valid({a}) THEN json_type({a}) IN ('integer', 'real') END"
    return (f"CASE WHEN {t} IN ('integer', 'real') THEN {a} {sign} {number} WHEN {t} = 'text' THEN "
            f"CASE WHEN {spells_number} THEN CAST({a} AS NUMERIC) {sign} {number} ELSE {a} {sign} {text} END END")


def _as_number(value) -> int | float | None:
    """A filter value as a number, or None (which equals nothing in SQL): 1 finds a stored
    1.0 (a data frame's float column) and 1.0, or '1' from the CLI, a stored 1."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        number = json.loads(value)  # a number in JSON's grammar, as the CLI's --where n=1 gives it
    except (ValueError, RecursionError):  # '[' * 1000 is too deep to read: no number either
        return None
    if isinstance(number, int) and not isinstance(number, bool):
        return number if INT64[0] <= number <= INT64[1] else None  # past SQLite's integers: equals none
    return number if isinstance(number, float) and math.isfinite(number) else None


def _as_text(value) -> str:
    """A filter value as the text its JSON form has: True -> 'true', 5 -> '5', None -> 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
