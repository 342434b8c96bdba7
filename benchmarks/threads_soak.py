"""A randomized soak of ONE `Collection` object shared by threads in one process.

design.md promises that a server may share one Embedder and one Collection across threads.
Each round opens the collection once (`Collection.open_or_create`) and lets N threads share
it, each running a random mix of: add_texts (new ids, replaced ids, with metadata), delete
(by id, by where), search in every mode (dense / lexical / hybrid, with and without where,
docs=True), info(), now and then a second Collection object on the same folder in the same
process; with --processes a `semsearch add` process writes at the same time. Near the end
of the round one thread closes the shared object while the others still run: every call
from then on must raise a CollectionError (a call in flight may also finish).

Checked during the round, for every call:
  - no exception other than the documented ones (CollectionBusy under the 10 s lock wait,
    CollectionError once closed);
  - a search hit is a slice of a text its document was given, with that version's metadata,
    matching the where filter; no version that a write which ended before the search began
    had replaced or deleted (a search sees everything committed before it started); one
    hit per document where asked;
  - info() is consistent: the index holds as many vectors as the store chunks.
After each round, with nothing running:
  - SQLite integrity_check, FTS5 integrity-check, documents / chunks / both FTS tables in step,
    every chunk a slice of its document's text, positions 0..n-1, tiling the text;
  - every document is in one of the states the calls' order allows (every add that returned
    is there with its text and metadata unless a later call may have changed it), nothing
    is there that nobody added;
  - reopened, no warning about the index file, the index holds exactly the store's chunks and
    finds each by its own vector; the writer lock is free; no temporary file is left.

    SEMSEARCH_HOME=$(mktemp -d) nice -n 19 .venv/bin/python benchmarks/threads_soak.py \
        --rounds 20 --seconds 600 --threads 8 --seed 1 [--processes]

Prints one summary line; exits 1 on any defect (each printed as it is found).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from torture import index_out_of_step, lock_held, read_store, semsearch_warnings  # the kill -9 soak's checks

WORDS = ("harbour tide ferry boat master weather log dawn lantern rope anchor gull pier storm "
         "sail chart compass keel deck mast net fish salt wave reef cargo crew dock").split()
GROUPS = ("red", "green", "blue")
TEMP_PATTERNS = (".index.faiss.*.tmp", ".store.sqlite.*.new*")
SETTINGS = {"chunk_tokens": 24, "overlap": 4}  # short chunks: several per document, cheaply
INF = math.inf
ABSENT = None
SKIP = "skip"  # what an operation returns when it did not call the collection


def nonce(rng: random.Random) -> str:
    return "q" + "".join(rng.choice("bcdfghjklmnpstvwxz") for _ in range(9))


def make_text(rng: random.Random) -> str:
    """A unique text (its nonce word is what lexical search finds it by), 1 to ~6 chunks."""
    return f"{nonce(rng)} " + " ".join(rng.choice(WORDS) for _ in range(rng.choice((5, 12, 30, 60, 90)))) + "."


@dataclass
class Write:
    """One call's effect on one document: ``value`` (text, metadata) or ABSENT. ``sure``: the
    call returned, so it committed; a call that failed, or a delete by where (whose effect
    depends on what it found), may or may not have taken effect."""
    key: str
    value: tuple | None
    start: float
    end: float = INF
    sure: bool = False


class Ledger:
    """Every write to every document, with when it started and ended."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes: dict[str, list[Write]] = defaultdict(list)
        self.tags: dict[str, list[str]] = {}  # batch tag -> the keys one add gave it

    def begin(self, effects: list[tuple[str, tuple | None]]) -> list[Write]:
        with self.lock:
            now = time.monotonic()
            made = [Write(key, value, now) for key, value in effects]
            for w in made:
                self.writes[w.key].append(w)
            return made

    def end(self, made: list[Write], sure: bool) -> None:
        with self.lock:
            now = time.monotonic()
            for w in made:
                w.end, w.sure = now, sure

    def keys(self) -> list[str]:
        with self.lock:
            return list(self.writes)

    def of(self, key: str) -> list[Write]:
        with self.lock:
            return list(self.writes.get(key, ()))

    def allowed(self, key: str) -> list:
        """The states ``key`` may be in once every write has ended: a write's value unless a
        sure write started after it ended (then that one, or a later one, came last)."""
        writes = [Write(key, ABSENT, -INF, -INF, True)] + self.of(key)
        sure_starts = [w.start for w in writes if w.sure]
        return [w.value for w in writes if not any(s > w.end for s in sure_starts)]

    def stale(self, write: Write, search_start: float) -> bool:
        """Whether a sure write replaced or deleted ``write`` before a search began."""
        return any(w.sure and w.start > write.end and w.end < search_start for w in self.of(write.key))


class Soak:
    def __init__(self, path: Path, embedder, seed: int, threads: int = 8, ops: int = 40,
                 processes: bool = False, close: bool = True, log=print):
        self.path, self.embedder, self.threads, self.ops = path, embedder, threads, ops
        self.processes, self.close_it, self.log = processes, close, log
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.defects: list[str] = []
        self.counts = Counter()
        self.rounds = 0
        self._guard = threading.Lock()

    def defect(self, message: str) -> None:
        with self._guard:
            self.defects.append(message)
        self.log(f"DEFECT: {message}")

    # -- one round -------------------------------------------------------------------------
    def round(self, deadline: float) -> None:
        from semsearch import Collection
        coll = Collection.open_or_create(self.path, embedder=self.embedder, **SETTINGS)
        self.rounds += 1
        closing, closed = threading.Event(), threading.Event()  # close() called; close() returned
        seeds = [self.rng.randrange(2**32) for _ in range(self.threads)]
        close_after = self.rng.randint(self.ops * 3 // 5, self.ops - 1) if self.close_it else None
        workers = [threading.Thread(target=self.worker, name=f"soak-{i}",
                                    args=(coll, random.Random(s), deadline, closing, closed,
                                          close_after if i == 0 else None))
                   for i, s in enumerate(seeds)]
        if self.processes:
            workers.append(threading.Thread(target=self.cli_writer, args=(random.Random(seeds[0] + 1), deadline)))
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if not closing.is_set():
            coll.close()
        self.check()

    def worker(self, coll, rng: random.Random, deadline: float, closing: threading.Event,
               closed: threading.Event, close_after: int | None) -> None:
        from semsearch.errors import CollectionBusy, CollectionError
        kinds = ["add", "replace", "retag", "delete", "delete_where", "search", "present", "info", "second"]
        weights = [14, 6, 6, 5, 3, 24, 12, 3, 1]
        for n in range(self.ops):
            if time.monotonic() > deadline:
                return
            if n == close_after:
                closing.set()  # a write in flight finishes first: close() waits for it
                coll.close()
                closed.set()
                self.counts["close"] += 1
                continue
            kind = rng.choices(kinds, weights)[0]
            after_close = closed.is_set()
            try:
                touched = getattr(self, "op_" + kind)(coll, rng) != SKIP
                if after_close and touched and kind != "second":
                    self.defect(f"{kind} on a closed Collection returned instead of raising CollectionError")
                self.counts[kind] += 1
            except CollectionBusy:
                self.counts["busy"] += 1
            except CollectionError as exc:
                if not closing.is_set():
                    self.defect(f"{kind}: CollectionError on an open collection: {exc}")
                self.counts["refused_closed"] += 1
            except Exception as exc:  # noqa: BLE001 - any other exception is a defect
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.defect(f"{kind}{' (closing)' if closing.is_set() else ''}: {type(exc).__name__}: {exc} "
                            f"at {Path(where.filename).name}:{where.lineno}")

    # -- the operations ----------------------------------------------------------------------
    def _put(self, coll, keys: list[str], rng: random.Random, texts: list[str] | None = None) -> None:
        tag = nonce(rng)
        texts = texts or [make_text(rng) for _ in keys]
        meta = [{"batch": tag, "group": rng.choice(GROUPS), "n": i} for i in range(len(keys))]
        made = self.ledger.begin([(k, (t, m)) for k, t, m in zip(keys, texts, meta)])
        try:
            got = coll.add_texts(texts, ids=keys, metadata=meta)
        except BaseException:
            self.ledger.end(made, False)
            raise
        self.ledger.end(made, True)
        with self.ledger.lock:
            self.ledger.tags[tag] = keys
        if got != keys:
            self.defect(f"add_texts returned ids {got}, not {keys}")

    def op_add(self, coll, rng):
        self._put(coll, [f"d{nonce(rng)}" for _ in range(rng.randint(1, 4))], rng)

    def op_replace(self, coll, rng):
        keys = self.ledger.keys()
        if not keys:
            return self.op_add(coll, rng)
        chosen = rng.sample(keys, min(len(keys), rng.randint(1, 3)))
        self._put(coll, chosen + [f"d{nonce(rng)}" for _ in range(rng.randint(0, 1))], rng)

    def op_retag(self, coll, rng):
        """Replace documents with their own (latest begun) text and new metadata: a metadata
        update, after which a search must still find them (see op_present)."""
        keys = [k for k in self.ledger.keys() if any(w.value for w in self.ledger.of(k))]
        if not keys:
            return self.op_add(coll, rng)
        chosen = rng.sample(keys, min(len(keys), rng.randint(1, 3)))
        texts = [[w for w in self.ledger.of(k) if w.value][-1].value[0] for k in chosen]
        self._put(coll, chosen, rng, texts)

    def op_present(self, coll, rng):
        """Dense search for a document's whole text (one chunk: its own vector is the query's)
        finds it whenever it is surely there all along the search in versions of that text:
        a replacement of a document by its own text, committed while a search runs, does
        not hide it."""
        keys = self.ledger.keys()
        if not keys:
            return SKIP
        key = rng.choice(keys)
        start = time.monotonic()
        versions = [w for w in self.ledger.of(key) if w.sure and w.value and w.end < start]
        if not versions:
            return SKIP
        text = versions[-1].value[0]
        hits = coll.search(text, k=5, mode=rng.choice(("dense", "hybrid")), docs=rng.random() < 0.5)
        end = time.monotonic()
        self.check_hits(hits, start, end, None, False, "search for a whole text")
        writes = self.ledger.of(key)
        # surely there: a sure write of this text ended before the search, and every write that
        # may have come after it (started before the search ended) writes this text too
        last = [w for w in writes if w.sure and w.end < start and w.value and w.value[0] == text]
        if len(text.split()) > 6 or not last or any(
                w.start < end and w.end > last[-1].start and w is not last[-1] and (not w.value or w.value[0] != text)
                for w in writes):
            return
        self.counts["present_checked"] += 1
        if key not in [h.id for h in hits]:
            self.defect(f"search for the whole text of {key}, there all along, did not find it "
                        f"(found {[h.id for h in hits]})")

    def op_delete(self, coll, rng):
        keys = self.ledger.keys()
        chosen = rng.sample(keys, min(len(keys), rng.randint(1, 3))) + [f"missing-{nonce(rng)}"]
        made = self.ledger.begin([(k, ABSENT) for k in chosen])
        try:
            coll.delete(chosen)
        except BaseException:
            self.ledger.end(made, False)
            raise
        self.ledger.end(made, True)

    def op_delete_where(self, coll, rng):
        with self.ledger.lock:
            tags = list(self.ledger.tags.items())
        if not tags:
            return SKIP
        tag, keys = rng.choice(tags)
        # it deletes a key only if that key's version then is this batch's: maybe, for each
        made = self.ledger.begin([(k, ABSENT) for k in keys])
        try:
            self._delete_where(coll, tag)
        finally:
            self.ledger.end(made, False)

    @staticmethod
    def _delete_where(coll, tag: str) -> None:
        """A delete by where (the library deletes by id or path): the ids whose metadata
        matches, read in one snapshot, then deleted."""
        with coll.store.snapshot():
            keys = [r[0] for r in coll.store.db.execute(
                "SELECT key FROM documents WHERE json_extract(metadata, '$.batch') = ?", (tag,))]
        if keys:
            coll.delete(keys)

    def op_search(self, coll, rng):
        keys = self.ledger.keys()
        mode = rng.choice(("dense", "lexical", "hybrid"))
        committed = any(w.sure and w.value for key in keys for w in self.ledger.of(key))
        where = {"group": rng.choice(GROUPS)} if rng.random() < 0.35 and committed else None
        docs = rng.random() < 0.4
        if keys and rng.random() < 0.7:  # a known document's nonce word (lexical finds it)
            versions = [w for w in self.ledger.of(rng.choice(keys)) if w.value]
            query = versions[-1].value[0].split()[0] if versions else rng.choice(WORDS)
        else:
            query = " ".join(rng.sample(WORDS, 2))
        k = rng.randint(1, 15)
        start = time.monotonic()
        hits = coll.search(query, k=k, where=where, mode=mode, docs=docs)
        self.check_hits(hits, start, time.monotonic(), where, docs or mode == "lexical", f"{mode} search")

    def op_info(self, coll, rng):
        info = coll.info()
        if info["index"]["vectors"] != info["chunks"]:
            self.defect(f"info(): the index holds {info['index']['vectors']} vectors, the store "
                        f"{info['chunks']} chunks")

    def op_second(self, coll, rng):
        """A second Collection object on the same folder, in this process: a write and a search."""
        from semsearch import Collection
        with Collection.open(self.path, embedder=self.embedder) as other:
            self._put(other, [f"d{nonce(rng)}" for _ in range(rng.randint(1, 2))], rng)
            start = time.monotonic()
            hits = other.search(rng.choice(WORDS), k=5, mode="hybrid")
            self.check_hits(hits, start, time.monotonic(), None, False, "second object's search")

    def cli_writer(self, rng: random.Random, deadline: float) -> None:
        """`semsearch add` processes writing to the collection while the threads run."""
        cli = str(Path(sys.executable).with_name("semsearch"))
        for _ in range(self.ops):
            if time.monotonic() > deadline:
                return
            keys = self.ledger.keys()
            key = rng.choice(keys) if keys and rng.random() < 0.5 else f"p{nonce(rng)}"
            text, tag, group = make_text(rng), nonce(rng), rng.choice(GROUPS)
            made = self.ledger.begin([(key, (text, {"batch": tag, "group": group}))])
            run = subprocess.run([cli, "add", str(self.path), "--text", text, "--id", key,
                                  "--meta", f"batch={tag}", "--meta", f"group={group}"],
                                 capture_output=True, text=True)
            self.ledger.end(made, run.returncode == 0)
            self.counts["process_add"] += 1
            if run.returncode == 0:
                with self.ledger.lock:
                    self.ledger.tags[tag] = [key]
            elif run.returncode != 75:
                self.defect(f"semsearch add exited {run.returncode}: {run.stderr.strip()[-300:]}")
            time.sleep(rng.uniform(0, 0.5))

    # -- checks ----------------------------------------------------------------------------
    def check_hits(self, hits, start: float, end: float, where, per_doc: bool, what: str) -> None:
        seen = Counter(h.id for h in hits)
        if per_doc and any(n > 1 for n in seen.values()):
            self.defect(f"{what}: a document twice in one-hit-per-document results: {seen.most_common(1)}")
        for hit in hits:
            versions = [w for w in self.ledger.of(hit.id) if w.value is not None and w.start < end
                        and w.value[0][hit.start:hit.end] == hit.text and w.value[1] == hit.metadata]
            if not versions:
                self.defect(f"{what}: hit {hit.id} [{hit.start}:{hit.end}] {hit.text[:40]!r} "
                            f"{hit.metadata} is no text+metadata its document was given")
            elif all(self.ledger.stale(w, start) for w in versions):
                self.defect(f"{what}: hit {hit.id} is a version replaced or deleted before the search began")
            if where and any(hit.metadata.get(key) != value for key, value in where.items()):
                self.defect(f"{what}: hit {hit.id} with metadata {hit.metadata} does not match where={where}")

    def check(self) -> None:
        self.check_lock()
        self.check_store()
        self.check_open()
        leaked = [p.name for pattern in TEMP_PATTERNS for p in self.path.glob(pattern)]
        if leaked:
            self.defect(f"temporary files left: {leaked}")

    def check_lock(self) -> None:
        if lock_held(self.path / "write.lock"):
            self.defect("the writer lock is held with nothing running")

    def check_store(self) -> None:
        found, docs, by_doc = read_store(self.path / "store.sqlite")
        for defect in found:
            self.defect(defect)
        for key, (doc_id, meta) in docs.items():
            chunks = by_doc.get(doc_id, [])
            allowed = [v for v in self.ledger.allowed(key) if v is not ABSENT]
            if not self.ledger.of(key):
                self.defect(f"{key} is there, and nobody added it")
                continue
            text = next((t for t, m in allowed if m == meta and chunks and chunks[0][3] == 0
                         and chunks[-1][4] == len(t) and all(r[5] == t[r[3]:r[4]] for r in chunks)), None)
            if text is None:
                self.defect(f"{key} holds none of the versions (text and metadata) it may hold")
            if [r[2] for r in chunks] != list(range(len(chunks))):
                self.defect(f"{key}: chunk positions {[r[2] for r in chunks]}")
        for key in self.ledger.keys():
            if key not in docs and ABSENT not in self.ledger.allowed(key):
                self.defect(f"{key} was added by a call that returned, and is missing")

    def check_open(self) -> None:
        from semsearch import Collection
        with semsearch_warnings() as records:
            try:
                with Collection.open(self.path, embedder=self.embedder) as coll:
                    rows = coll.store.db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
                    for problem in index_out_of_step(coll, [r[0] for r in rows], [r[1] for r in rows]):
                        self.defect(f"reopened: {problem}")
            except Exception as exc:  # noqa: BLE001
                self.defect(f"reopening failed: {type(exc).__name__}: {exc}")
        for r in records:
            self.defect(f"warning: {r.getMessage()}")


def soak(path: Path, embedder, rounds: int, seconds: float, seed: int, threads: int = 8, ops: int = 40,
         processes: bool = False, log=print) -> Soak:
    """Run rounds on the collection at ``path`` until ``rounds`` or ``seconds``; returns the Soak."""
    s = Soak(Path(path), embedder, seed, threads, ops, processes, log=log)
    end = time.monotonic() + seconds
    for _ in itertools.repeat(None, rounds):
        if time.monotonic() > end:
            break
        s.round(end)
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=40, help="calls per thread per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", action="store_true", help="`semsearch add` processes write too")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from semsearch import Embedder
    home = Path(os.environ.get("SEMSEARCH_HOME") or tempfile.mkdtemp(prefix="threads-soak-"))
    path = home / f"threads-{args.seed}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    started = time.monotonic()
    s = soak(path, Embedder.load(device="cpu"), args.rounds, args.seconds, args.seed, args.threads,
             args.ops, args.processes)
    ops = sum(v for k, v in s.counts.items() if k != "close")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    print(f"threads_soak: seed {args.seed}, {s.rounds} rounds, {args.threads} threads, {ops} operations "
          f"({detail}), {len(s.defects)} defects, {time.monotonic() - started:.0f} s")
    return 1 if s.defects else 0


if __name__ == "__main__":
    sys.exit(main())
