"""`index --ray`: load, chunk and embed inside Ray Data; commit on the driver.

Files go through ``map_batches`` with an actor pool: each actor loads the collection's
pinned model once (one ONNX Runtime session; ``num_gpus=1`` an actor when the cluster has
GPUs, else intra-op threads = the actor's CPUs) and turns a few files, or a part of a big
JSONL file (``loaders.jsonl_parts``: a corpus that is one file goes over every actor), into
prepared documents with the local path's own functions (``loaders.load_file``,
``ingest.embed_documents``). Only the driver writes: it consumes the results as
they stream back, in file order, and commits each document in its own transaction
(``coll.writer``, taking the writer lock a batch of results at a time, so other writers
get in between), so a killed driver loses nothing committed and a re-run skips it
by content hash before any embedding. Ray retries a killed worker's task; a document
that came back twice would replace itself by key, never duplicate.

A moved, renamed or copied file is not embedded again, as on the local path: every actor
gets the first 8 bytes of each content hash the collection holds (``held_prefixes``, put
once: 8 bytes a document), and a document whose hash is among them comes back unembedded,
with its text; the driver copies the holder's chunks and vectors (``Writer.reuser``) and
embeds it there only where that fails (the holder changed meanwhile, or holds the same bytes
read as another type).
"""
from __future__ import annotations

import bisect
import json
import logging
import os
import pickle
import time
import warnings

import numpy as np
from collections import deque
from contextlib import closing
from itertools import chain
from typing import Callable, Iterable, Iterator

from ..errors import SemsearchError
from ..loaders import NO_RECORDS, duplicate
from .cluster import connected, resources

FILES_PER_CALL = 4  # files one actor call loads and embeds together (the unit of retry)
# A JSONL file is cut in 4 parts an actor (late actors and uneven parts even out), each between
# these sizes. A part comes back when its call ends: the most bounds what a killed worker
# redoes and how long commits wait (16 MiB: ~40,000 abstracts, seconds on a GPU, ~10 min
# on one CPU core); the least keeps small files whole (256 KiB: ~800 abstracts).
PART_BYTES = 16 << 20
PART_FLOOR = 256 << 10
RETRIES = 3  # times Ray runs a call again whose worker died (Ray Data's default: for ever)
BLOCK_BYTES = 8 << 20  # records an actor sends at a time (~3,000 chunks; Ray Data's default 128 MiB)
log = logging.getLogger("semsearch")


class PrepareFiles:
    """Ray Data actor: a unit of work in (a few files or a part of one, see units), pickled
    per-document records out (see _records)."""

    def __init__(self, pin: dict, device: str, threads: int | None, chunk_tokens: int, overlap: int,
                 cpus: int = 1, held=None):
        self.pin, self.device, self.threads, self.cpus = pin, device, threads, cpus
        # [object ref] of held_prefixes, what the collection holds (for reuse): in a list, so the
        # constructor's arguments are not in the object store (Ray warns on each actor's start
        # that a restart could not find them) and the actor gets it itself, on first use
        self._held = held
        self.chunk_tokens, self.overlap = chunk_tokens, overlap
        self._embedder = None
        self._shared = (None, {})  # the known hashes of the file last loaded in parts, and their ref

    @property
    def embedder(self):
        """Loaded on first use: a re-run that finds nothing changed never loads the model."""
        if self._embedder is None:
            from ..collection import load_pinned
            from ..runtime import tokenizer_processes
            self._embedder = load_pinned(self.pin, self.device, self.threads)
            if self._embedder.session.on_gpu:  # the actor's share of the node, not all its cores
                tokenizing = self._embedder.tokenizing
                tokenizing.processes, tokenizing.threads = tokenizer_processes(self.cpus)
        return self._embedder

    def __call__(self, batch: dict) -> Iterator[dict]:
        """Yields its records a batch at a time (see _records), which Ray Data stores as 8 MiB
        blocks: one big file (a JSONL dump of millions of records) is never held whole in the
        actor's memory or the driver's. Ray Data (2.60) hands the blocks on when the call
        ends (the object store keeps them meanwhile, spilling to disk), so a call's files, or
        part, are committed then."""
        for unit, known in zip(batch["unit"], batch["known"]):
            try:
                for records in self._records(**json.loads(unit), known=self._known(known)):
                    yield {"record": [pickle.dumps(r, protocol=5) for r in records]}
            except SemsearchError as exc:  # e.g. the pinned model does not load here: the driver stops
                # with it; as an exception it would reach the driver wrapped
                yield {"record": [pickle.dumps(("error", exc), protocol=5)]}

    def _known(self, known) -> dict:
        """A unit's known hashes: its own (JSON), or its file's, put once for all its parts."""
        if isinstance(known, str):
            return json.loads(known)
        if self._shared[0] != known:
            import ray
            self._shared = (known, json.loads(ray.get(known)))
        return self._shared[1]

    @property
    def held(self) -> np.ndarray | None:
        if isinstance(self._held, list):
            import ray
            self._held = ray.get(self._held[0])
        return self._held

    def _records(self, paths, part, files: int, known: dict) -> Iterator[list[tuple]]:
        """Lists of records, one per embedded batch (~ingest.FLUSH_CHUNKS chunks), in file order:
        ("skipped", source, reason, transient) for unreadable files, ("unchanged", key, where)
        for documents whose hash is known, ("reuse", key, DocumentInfo, text, replaced
        characters, where) for those whose hash the collection holds under another key,
        ("doc", key, PreparedDocument | None, skip, replaced characters, where) for the rest
        (None: embedding left it out; ``skip``: (source, reason, transient) where embedding
        skipped it, else None), and last ("done", files).
        A document's skip and undecodable bytes come with it: the driver may find it a
        duplicate (see _apply), and then counts neither, as `index` never reads it.
        ``where``: a record's path:line when ``part`` (loaders.Part) is loaded, else None. A
        semsearch error comes back as the one record ("error", exception) (see __call__)."""
        from ..collection import _Counted
        from ..ingest import IndexReport, TooLarge, embed_documents, info_of, read_text, text_kind
        from ..loaders import Part, Skipped, load_file

        report = IndexReport()  # embedding's: a skip for each document it leaves out or finds without text, in order
        said = 0  # of report.skipped, those sent with their document
        loose: deque = deque()  # records of documents not embedded (appended by a reading thread on GPUs)
        fed: deque = deque()  # (key, where, _Counted or a "reuse" record) of the documents read, in order

        part = part and Part(*part)

        def todo():
            for path in paths:
                for doc in load_file(path, part, as_text=True):  # list_files took it
                    if isinstance(doc, Skipped):
                        loose.append(("skipped", doc.source, doc.reason, doc.transient))
                    elif known.get(doc.key) == doc.content_hash:
                        loose.append(("unchanged", doc.key, part and doc.where))
                    elif held_by_another(doc) and (text := whole(doc)) is not None:
                        # not embedded: the driver copies it, in order as it was fed
                        fed.append((doc.key, part and doc.where, ("reuse", doc.key, info_of(doc), text,
                                                                doc.replaced_chars, part and doc.where)))
                    else:
                        counted = _Counted(doc, IndexReport())  # its own count of undecodable bytes
                        fed.append((doc.key, part and doc.where, counted))
                        yield info_of(doc), counted

        def held_by_another(doc) -> bool:
            if self.held is None or text_kind(doc.key, doc.source, doc.metadata) is None:
                return False
            prefix = np.uint64(int(doc.content_hash[:16], 16))
            at = int(np.searchsorted(self.held, prefix))
            return at < len(self.held) and self.held[at] == prefix

        def whole(doc) -> list[str] | None:
            """The document's text, for the driver to embed if it cannot copy it; None where it
            cannot be read whole (embedding reads it again and says why)."""
            try:
                return read_text(doc.segments())
            except (TooLarge, OSError):
                return None

        def sent(key, where, counted, doc=None) -> tuple:
            """A fed document's record, with its skip (left out: it may read fine next time)."""
            nonlocal said
            if isinstance(counted, tuple):  # a "reuse" record
                return counted
            skip = None
            if doc is None or not doc.chunks:
                skip = (*report.skipped[said], doc is None)
                said += 1
            return ("doc", key, doc, skip, counted.report.replaced_chars, where)

        def taken(upto=None) -> list[tuple]:
            """What is loose, and the documents fed before ``upto`` that embedding left out."""
            out = [loose.popleft() for _ in range(len(loose))]
            while fed and (isinstance(fed[0][2], tuple) or fed[0][0] != upto):  # a reuse, or left out
                out.append(sent(*fed.popleft()))
            return out

        docs = todo()
        first = next(docs, None)  # the model loads only if something is to be embedded
        batches = () if first is None else embed_documents(chain([first], docs), self.embedder,
                                                           self.chunk_tokens, self.overlap, report)
        for batch in batches:
            out = []
            for doc in batch:
                out += taken(doc.key)
                out.append(sent(*fed.popleft(), doc))
            yield out
        yield taken() + [("done", files)]


def plan(cpus: float, gpus: float, actors: int | None = None) -> dict:
    """Actor pool shape for a cluster: one actor per GPU, else one per CPU (1 thread each:
    on a CPU actors scale better than threads, and file loading overlaps embedding)."""
    if gpus >= 1:
        n = actors or int(gpus)
        return {"actors": n, "num_gpus": 1, "num_cpus": max(1, int(cpus // n) - 1) if cpus > n else 1,
                "device": "cuda", "threads": None}
    n = actors or max(1, int(cpus))
    per = max(1, int(cpus // n))
    return {"actors": n, "num_gpus": None, "num_cpus": per, "device": "cpu", "threads": per}


def known_by_file(files: list[str], known: dict[str, str]) -> list[dict[str, str]]:
    """For each file, the known hashes of its documents (key = the path, or path#record):
    each row carries its own, nothing collection-wide is sent to every actor."""
    keys = sorted(known)
    out = []
    for f in files:
        i = bisect.bisect_left(keys, f)
        mine = {}
        while i < len(keys) and keys[i].startswith(f):
            if keys[i] == f or keys[i].startswith(f + "#"):
                mine[keys[i]] = known[keys[i]]
            i += 1
        out.append(mine)
    return out


def units(ray, files: list[str], known: dict, actors: int, part_bytes: int | None = None):
    """The rows of the job, in file order: FILES_PER_CALL files each, or one part of a JSONL
    file bigger than ``part_bytes`` (default: part_size), whose known hashes are put in the
    object store once for all its parts.
    Also {file: parts} of the files cut."""
    from ..loaders import jsonl_parts

    rows, group, split = [], [], {}

    def flush():
        if group:
            hashes = {k: v for _, mine in group for k, v in mine.items()}
            rows.append({"unit": json.dumps({"paths": [f for f, _ in group], "part": None, "files": len(group)}),
                         "known": json.dumps(hashes)})
            group.clear()

    for f, mine in zip(files, known_by_file(files, known)):
        parts = []
        if f.lower().endswith(".jsonl"):
            parts = jsonl_parts(f, part_bytes or part_size(f, actors))
        if not parts:
            group.append((f, mine))
            if len(group) == FILES_PER_CALL:
                flush()
            continue
        flush()
        split[f] = len(parts)
        ref = ray.put(json.dumps(mine))
        rows += [{"unit": json.dumps({"paths": [f], "part": p, "files": int(p is parts[-1])}), "known": ref}
                 for p in parts]
    flush()
    return rows, split


def part_size(path: str, actors: int) -> int:
    """The size a JSONL file is cut in: 4 parts an actor, between PART_FLOOR and PART_BYTES."""
    try:
        size = os.path.getsize(path)
    except OSError:  # load_file says why
        size = 0
    return min(PART_BYTES, max(PART_FLOOR, size // (4 * actors)))


def held_prefixes(known: dict[str, str]) -> np.ndarray | None:
    """The first 8 bytes of every content hash the collection holds, sorted: what an actor
    needs to tell that a document may be a moved file's (see module). None: nothing held."""
    prefixes = set()
    for digest in known.values():
        try:
            prefixes.add(int(digest[:16], 16))
        except (TypeError, ValueError):  # a text added directly: no file's hash
            pass
    return np.array(sorted(prefixes), np.uint64) if prefixes else None


def prepared_stream(ray, rows: list[dict], files: list[str], coll, shape: dict,
                    held: np.ndarray | None = None) -> Iterable[list[tuple]]:
    """Lists of records, one per actor call, in file order, as they finish."""
    if not files:
        return
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # our own bar, report and errors instead
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # commit in file order: same chunk ids as local
    ctx.print_on_execution_start = False
    ctx.target_max_block_size = BLOCK_BYTES  # the driver holds a few blocks, and commits one a lock
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for max_task_retries yet
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        ds = ray.data.from_items(rows).map_batches(
            PrepareFiles, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=shape["actors"]), max_task_retries=RETRIES,
            num_cpus=shape["num_cpus"], num_gpus=shape["num_gpus"],
            fn_constructor_kwargs=dict(pin=coll.pinned, device=shape["device"], threads=shape["threads"],
                                       chunk_tokens=coll.config["chunk_tokens"], overlap=coll.config["overlap"],
                                       cpus=shape["num_cpus"], held=None if held is None else [ray.put(held)]))
    log.info("ray: %d actor(s), %s CPU(s)%s each", shape["actors"], shape["num_cpus"],
             " and 1 GPU" if shape["num_gpus"] else "")
    done = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            records = [pickle.loads(r) for r in batch["record"]]
            errors = [i for i, r in enumerate(records) if r[0] == "error"]
            if errors:  # what came before it is committed; then one line, as the local path
                yield records[:errors[0]]  # gives it, not Ray's task traceback
                raise records[errors[0]][1]
            done += _files_done(records)
            yield records
        if log.isEnabledFor(logging.DEBUG):  # Ray's account of the job: the calls it made, their times
            log.debug("ray: %s", ds.stats())
    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
        log.debug("ray: %s", exc)
        raise SemsearchError(f"a Ray worker died {RETRIES + 1} times on the same files (out of memory, or a "
                             "crash: Ray's lines above say which); what was committed is kept and a re-run "
                             f"skips it; not indexed: the files from {files[min(done, len(files) - 1)]} on") from None


def index_paths(coll, paths: Iterable, address: str | None = None, glob=None,
                remove_missing: bool = True, progress: bool = False, actors: int | None = None,
                on_commit: Callable[[str], None] | None = None, part_bytes: int | None = None,
                exclude=None, gitignore: bool = False):
    """``coll.add_files`` with loading, chunking and embedding on Ray: same documents,
    chunks, vectors, report and incremental behaviour. ``on_commit(key)`` runs after each
    document is committed; ``part_bytes``: the size a JSONL file is cut in (see units)."""
    from .. import validation
    from ..ingest import IndexReport
    from ..loaders import Selection, list_files
    from ..progress import bar

    started = time.time()
    roots = [validation.source_path(p) for p in validation.path_list(paths)]  # as add_files
    select = Selection.of(glob, exclude, gitignore)
    listed = list_files(roots, select)  # NotFound for a missing path, before any write
    report = IndexReport()
    for s in listed:
        if not isinstance(s, str):
            report.skip(s.source, s.reason, s.transient)
    files = [f for f in listed if isinstance(f, str)]
    with connected(address) as ray, coll.writer(hold=False) as w:  # the lock a batch of records at a time
        known = w.known_hashes()
        seen: set[str] = set()
        cluster = resources(ray)
        shape = plan(*cluster, actors)
        rows, split = units(ray, files, known, shape["actors"], part_bytes)
        if 0 < len(rows) < shape["actors"]:  # no actor without a call to make (each loads the model);
            shape = plan(*cluster, len(rows))  # the ones there are get the CPUs' threads
        for f, n in split.items():
            log.info("ray: %s in %d parts", f, n)
        # closed here, while Ray is up, whatever stops the loop (a full disk): else the
        # failure's traceback kept it until after Ray shut down, and closing it then printed
        # Ray Data's own traceback ("Exception ignored in ... _iter_batches") below our one line
        stream = prepared_stream(ray, rows, files, coll, shape, held_prefixes(known))
        reuse = _reuse(coll, w.reuser(known), report)
        with closing(stream), bar(stream, progress, unit="file", total=len(files), weight=_files_done) as batches:
            for records in batches:
                with w.locked():
                    for record in records:
                        _apply(record, w, known, seen, report, on_commit, split, reuse)
                w.flush()
                docs = report.added + report.updated + report.unchanged
                batches.note(f"{docs} docs, {report.chunks / batches.elapsed():.0f} chunks/s")
        if remove_missing:
            report.removed = w.remove_missing(roots, seen, select, report.unread, files)
        report.left_behind = w.left_behind()
    report.seconds = time.time() - started
    return report


def _files_done(records: list[tuple]) -> int:
    return sum(r[1] for r in records if r[0] == "done")


def _reuse(coll, reuser, report):
    """A "reuse" record's document, prepared: the holder's chunks and vectors copied
    (reuser: Writer.reuser), or, where it no longer holds that text, embedded here on the
    driver's model; None where embedding leaves it out (its skip reported)."""
    from ..ingest import IndexReport, embed_documents

    def reuse(info, text):
        doc = reuser(info)
        if doc is not None:
            report.reused += 1
            return doc
        left = IndexReport()
        done = [d for batch in embed_documents([(info, text)], coll.embedder, coll.config["chunk_tokens"],
                                               coll.config["overlap"], left) for d in batch]
        for skip in left.skipped:
            report.skip(*skip)
        return done[0] if done else None
    return reuse


def _apply(record: tuple, w, known: dict, seen: set, report, on_commit, split: dict, reuse) -> None:
    """One record from an actor, written or counted as add_files would. Of a file loaded in
    parts (``split``: {file: parts yet to say "no records"; None once the file's own skip is
    said}): a key an earlier part had is a duplicate, and only that (`index` never reads
    it); the file's own skip (unreadable, gone or changed since the cut: every part may say
    it) is said once; "no records" only if every part says so."""
    kind = record[0]
    if kind in ("unchanged", "doc", "reuse") and record[-1] is not None and record[1] in seen:
        dup = duplicate(record[-1], record[1])
        report.skip(dup.source, dup.reason)
    elif kind == "skipped" and record[1] in split:
        left = split[record[1]]
        if left is not None and record[2] == NO_RECORDS and left > 1:
            split[record[1]] = left - 1
        elif left is not None:
            split[record[1]] = None
            report.skip(*record[1:])
    elif kind == "skipped":
        report.skip(*record[1:])
    elif kind == "unchanged":
        seen.add(record[1])
        report.unchanged += 1
    elif kind in ("doc", "reuse"):
        key, replaced = record[1], record[4]
        seen.add(key)
        report.replaced_chars += replaced
        if kind == "reuse":
            doc = reuse(record[2], record[3])  # from its DocumentInfo and text
        else:
            doc, skip = record[2], record[3]
            if skip is not None:
                report.skip(*skip)
        if doc is None:  # left out while embedding (too large): counted as add_files does
            return
        if key in known:
            report.updated += 1
        elif doc.chunks:
            report.added += 1
        report.chunks += len(doc.chunks)
        w.put(doc)
        if on_commit is not None:
            on_commit(key)


def index_files(name_or_path, paths: Iterable, address: str | None = None, **kwargs):
    """``collection.index_files`` with ingest on Ray (``index_paths``). Ray is joined
    first: an address it cannot join fails before a new collection is created."""
    from ..collection import index_files

    with connected(address):
        return index_files(name_or_path, paths, ingest=index_paths, **kwargs)
