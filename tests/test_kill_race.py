"""Writers and readers racing on a few collections while random SIGKILLs land among them.

Writers race to create the collections, then add and delete small documents, printing a
line only after each call returned; readers search all the while. The test kills random
processes (once they are past start-up, so most kills land in writes) and starts new
ones, for a bounded time. Afterwards every collection must open, every document a writer
reported as added (and not deleted) must be there exactly once and whole, nothing may be
there that nobody tried to add, and the store, the FTS5 index and the vector index must
hold exactly the same chunks. Set SEMSEARCH_RACE_SEED to replay a run's choices.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from semsearch.collection import Collection

CHAOS_SECONDS = 25  # the whole test stays under a minute on 2 cores
WRITERS, READERS, COLLECTIONS = 3, 2, 3
CHUNK_TOKENS, OVERLAP = 32, 8
WORK = {"added", "deleted", "searched"}

TEXT = ("Entry {key} of the harbour log: the master counted the boats, checked the tide "
        "tables and wrote the weather down before the ferry left at dawn, {key} done.")

WRITER = textwrap.dedent("""
    import json, random, sys, time
    from semsearch.collection import Collection
    from semsearch.embedder import Embedder
    from semsearch.errors import Conflict
    paths, name, seed, until = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    TEXT, rng, n, mine = {text!r}, random.Random(seed), 0, {{}}
    embedder = Embedder.load(device="cpu", threads=1)  # one model for every collection it opens

    def say(*words):
        print(*words, flush=True)

    while time.time() < until:
        c = rng.randrange(len(paths))
        try:
            coll = Collection.open_or_create(paths[c], chunk_tokens={ct}, overlap={ov}, embedder=embedder)
        except Conflict:  # another process is creating it this very moment
            time.sleep(rng.random() / 20)
            continue
        with coll:
            for _ in range(rng.randint(1, 4)):
                held = mine.setdefault(c, [])
                if rng.random() < 0.75 or not held:
                    keys = [f"{{name}}n{{n + i}}" for i in range(rng.randint(1, 3))]
                    n += len(keys)
                    say("try", c, *keys)
                    try:
                        coll.add_texts([TEXT.format(key=k) for k in keys], ids=keys)
                    except Conflict:  # another writer holds the lock: nothing was written
                        say("busy", c)
                        time.sleep(rng.random() / 20)
                        continue
                    say("added", c, *keys)
                    held.extend(keys)
                else:
                    key = held.pop(rng.randrange(len(held)))
                    say("trydel", c, key)
                    try:
                        found = coll.delete([key])
                    except Conflict:
                        held.append(key)
                        say("busy", c)
                        time.sleep(rng.random() / 20)
                        continue
                    assert found == 1, key
                    say("deleted", c, key)
                if time.time() > until:
                    break
    say("done")
""").format(text=TEXT, ct=CHUNK_TOKENS, ov=OVERLAP)

READER = textwrap.dedent("""
    import json, random, sys, time
    from semsearch.collection import Collection
    from semsearch.embedder import Embedder
    from semsearch.errors import NoSuchCollection
    paths, seed, until = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    TEXT, rng = {text!r}, random.Random(seed)
    embedder = Embedder.load(device="cpu", threads=1)
    while time.time() < until:
        try:
            coll = Collection.open(rng.choice(paths), embedder=embedder)
        except NoSuchCollection:
            time.sleep(0.05)
            continue
        with coll:
            for _ in range(rng.randint(1, 5)):
                mode = rng.choice(["dense", "lexical", "hybrid"])
                hits = coll.search("harbour boats tide ferry", k=20, mode=mode, docs=rng.random() < 0.5)
                for hit in hits:  # each hit is a slice of the document it names, never a mix
                    assert hit.text == TEXT.format(key=hit.id)[hit.start:hit.end], (hit.id, hit.text)
                assert len({{h.chunk_id for h in hits}}) == len(hits)
                print("searched", mode, len(hits), flush=True)
                time.sleep(rng.uniform(0.05, 0.2))  # leave the 2 cores mostly to the writers
    print("done", flush=True)
""").format(text=TEXT)


class Fleet:
    """The child processes, each with its log file; killed ones are replaced."""

    def __init__(self, folder: Path, paths: list[Path], rng: random.Random, until: float):
        self.folder, self.paths, self.rng, self.until = folder, json.dumps([str(p) for p in paths]), rng, until
        self.live: list[tuple[str, str, subprocess.Popen]] = []  # (kind, name, process)
        self.killed: set[str] = set()
        self.exited: dict[str, int] = {}
        self.started = 0

    def start(self, kind: str) -> None:
        name = f"{kind[0]}{self.started}"
        self.started += 1
        seed = self.rng.randrange(2**31)
        script, args = (WRITER, [self.paths, name, str(seed), str(self.until)]) if kind == "writer" else \
            (READER, [self.paths, str(seed), str(self.until)])
        log = open(self.folder / f"{name}.log", "w")
        err = open(self.folder / f"{name}.err", "w")
        proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=log, stderr=err,
                                stdin=subprocess.DEVNULL)
        log.close()
        err.close()
        self.live.append((kind, name, proc))

    def lines(self, name: str) -> list[list[str]]:
        """Complete lines only: a kill can cut the last one short."""
        text = (self.folder / f"{name}.log").read_text()
        return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def reap(self) -> None:
        for entry in list(self.live):
            if entry[2].poll() is not None:
                self.live.remove(entry)
                self.exited[entry[1]] = entry[2].returncode

    def kill_one(self) -> None:
        """SIGKILL a random process that has done some work (so the kill lands in a write
        or a search, not in start-up), and start another of its kind."""
        self.reap()
        ready = [e for e in self.live if any(w[0] in WORK for w in self.lines(e[1]))]
        writers = [e for e in ready if e[0] == "writer"]
        if writers and (self.rng.random() < 0.75 or len(writers) == len(ready)):
            ready = writers  # mostly writers: their kills are the ones that can lose data
        if not ready:
            return
        kind, name, proc = self.rng.choice(ready)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.live.remove((kind, name, proc))
        self.killed.add(name)
        self.start(kind)

    def wait_all(self, timeout: float) -> list[str]:
        """Wait for every child to finish on its own; returns the names of those that hung."""
        deadline = time.time() + timeout
        for kind, name, proc in self.live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        hung = [name for _, name, proc in self.live if proc.poll() is None]
        for _, _, proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.reap()
        return hung


def writer_outcomes(fleet: Fleet, names: list[str]):
    """Per collection: keys reported added, reported deleted, tried to add, whose delete
    is in doubt (a killed writer's last call may or may not have been committed), and the
    groups of keys added by one call (all or none of each must be there)."""
    added, deleted, tried, doubtful = (defaultdict(set) for _ in range(4))
    calls = defaultdict(list)
    for name in names:
        pending = None
        for words in fleet.lines(name):
            kind, rest = words[0], words[1:]
            if kind in ("try", "trydel"):
                pending = (kind, int(rest[0]), set(rest[1:]))
                if kind == "try":
                    tried[pending[1]] |= pending[2]
                    calls[pending[1]].append(pending[2])
            elif kind in ("added", "deleted"):
                (added if kind == "added" else deleted)[int(rest[0])] |= set(rest[1:])
                pending = None
            elif kind == "busy":
                pending = None
        if pending is not None:
            assert name in fleet.killed, f"{name} stopped inside a call without being killed"
            if pending[0] == "trydel":
                doubtful[pending[1]] |= pending[2]
    return added, deleted, tried, doubtful, calls


FTS_ROWS = {"chunks_fts": "chunk", "documents_fts": "document"}  # what each full-text index's rowids are


def fts_rowids(db: sqlite3.Connection) -> dict[str, set[int]]:
    """Rowids each FTS5 index itself holds (read from the index, not its content table),
    after FTS5's own integrity check (against its content table, where it has one)."""
    out = {}
    for table, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql LIKE '%fts5%'"):
        assert table in FTS_ROWS, f"a new full-text index {table}: say what its rowids must equal"
        check = ", rank) VALUES ('integrity-check', 1)" if "content='chunks'" in sql else ") VALUES ('integrity-check')"
        db.execute(f"INSERT INTO {table}({table}{check}")
        db.execute(f"CREATE VIRTUAL TABLE temp.{table}_v USING fts5vocab(main, {table}, instance)")
        out[table] = {r[0] for r in db.execute(f"SELECT DISTINCT doc FROM temp.{table}_v")}
    return out


def check_collection(path: Path, must: set, may: set, never: set, calls: list[set], doubtful: set) -> int:
    """The invariants for one collection; returns its document count."""
    db = sqlite3.connect(path / "store.sqlite")
    try:
        docs = dict(db.execute("SELECT key, id FROM documents"))
        rows = db.execute("SELECT id, doc_id, position, start, end, text, vector FROM chunks "
                          "ORDER BY doc_id, position").fetchall()
        fts = fts_rowids(db)
    finally:
        db.close()
    keys = set(docs)
    assert must <= keys, f"{path.name}: reported added but missing: {sorted(must - keys)}"
    assert not keys & never, f"{path.name}: reported deleted but present: {sorted(keys & never)}"
    assert keys <= must | may, f"{path.name}: present but never tried: {sorted(keys - must - may)}"
    for call in calls:  # one add_texts call is one transaction: all of it or none
        live = call - never - doubtful  # less what was deleted one by one afterwards
        assert live & keys in (set(), live), f"{path.name}: part of one call: {sorted(live & keys)} of {sorted(live)}"

    by_doc = defaultdict(list)
    for row in rows:
        by_doc[row[1]].append(row)
    assert set(by_doc) == set(docs.values()), f"{path.name}: documents without chunks, or chunks without one"
    for key, doc_id in docs.items():  # every document whole: its chunks tile its text in order
        text, chunks = TEXT.format(key=key), by_doc[doc_id]
        assert [r[2] for r in chunks] == list(range(len(chunks))), key
        assert all(r[5] == text[r[3]:r[4]] for r in chunks), key
        assert chunks[0][3] == 0 and chunks[-1][4] == len(text), key

    chunk_ids = {r[0] for r in rows}
    for table, ids in fts.items():
        want = chunk_ids if FTS_ROWS[table] == "chunk" else set(docs.values())
        assert ids == want, f"{path.name}: {table} holds {len(ids)} rowids, the store {len(want)} {FTS_ROWS[table]}s"

    with Collection.open(path) as coll:
        assert coll.count() == len(keys)
        info = coll.info()
        assert info["index"]["vectors"] == info["chunks"] == len(chunk_ids)
        if rows:  # each chunk's own vector finds that chunk first: the index ids are the chunk ids
            vectors = np.stack([np.frombuffer(r[6], np.float32) for r in rows])
            found = [hits[0].chunk_id for hits in coll.search_vectors(vectors, k=1)]
            assert found == [r[0] for r in rows]
        for key in keys:  # and the user finds each document once
            hits = coll.search(key, k=10, mode="lexical", docs=True)
            assert [h.id for h in hits] == [key], (key, [h.id for h in hits])
    return len(keys)


def test_random_kills_and_races_keep_every_collection_whole(tmp_path, model_folder, caplog):
    seed = int(os.environ.get("SEMSEARCH_RACE_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    paths = [tmp_path / f"c{i}" for i in range(COLLECTIONS)]  # none exists: the writers race to create them
    logs = tmp_path / "logs"
    logs.mkdir()
    until = time.time() + CHAOS_SECONDS
    fleet = Fleet(logs, paths, rng, until)
    try:
        for _ in range(WRITERS):
            fleet.start("writer")
        for _ in range(READERS):
            fleet.start("reader")
        while time.time() < until - 1:
            time.sleep(rng.uniform(0.8, 2.0))  # a restart costs ~2 s of CPU: leave time for work
            fleet.kill_one()
        hung = fleet.wait_all(timeout=30)
    finally:
        for _, _, proc in fleet.live:
            proc.kill()
            proc.wait()
    context = f"seed {seed}; logs in {logs}"
    assert not hung, f"{hung} did not finish ({context})"
    assert len(fleet.killed) >= 5, f"only {len(fleet.killed)} kills landed ({context})"
    for name, code in fleet.exited.items():
        if name not in fleet.killed:
            err = (logs / f"{name}.err").read_text()
            assert code == 0 and "Traceback" not in err, f"{name} exited {code}: {err[-3000:]} ({context})"

    names = sorted(p.stem for p in logs.glob("w*.log"))
    added, deleted, tried, doubtful, calls = writer_outcomes(fleet, names)
    assert sum(len(v) for v in added.values()) >= 20, f"too little got written to judge ({context})"
    caplog.set_level(logging.WARNING, logger="semsearch")
    total = 0
    for c, path in enumerate(paths):
        if not (path / "store.sqlite").exists():
            assert not tried[c], f"{path.name} was written to but does not exist ({context})"
            continue
        total += check_collection(path, must=added[c] - deleted[c] - doubtful[c],
                                  may=tried[c] - deleted[c], never=deleted[c], calls=calls[c],
                                  doubtful=doubtful[c])
    assert total > 0
    troubles = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage() or "rebuild" in r.getMessage()]
    assert not troubles, f"{troubles} ({context})"
