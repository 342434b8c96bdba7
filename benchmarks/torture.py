"""A randomized kill -9 soak of one collection: real `semsearch` processes, several at once.

Not part of the test suite (it runs for as long as it is allowed). Each round changes a
folder of files (.txt; .md with YAML or TOML front matter; .org and .adoc with their
headers; mail: .eml, and .mbox mailboxes that later rounds append messages to, some without
a Message-ID; .py and .log, read only when a --glob takes them; subfolders; moved,
renamed, copied: what `index` reuses; beside them a collection's folder, which no walk
enters), then runs real CLI processes against one collection under a temporary
SEMSEARCH_HOME: `index` of the folder (some with --exclude of subfolders or *.log, some
with a --glob set), of a subfolder or a file (a source of its own), `index --name NAME`
alone (a resync of the remembered sources: what it reads is modelled from the sources
the ledger holds and those the round's other commands may make, plan_resync),
`delete --path` (its documents, and the sources under it), `add` (new ids and replacements, with
metadata; resends of a text an id may hold, with its --meta or other: some on an id another
command of the round is writing), `delete`, `search`, `info`, `rm`, the reads `get`,
`documents --text` (some a page: --after, --limit) and `similar`, and `backup` into a folder
of its own (check_backup: the copy is checked as a collection); searches and reads take
a --where at times (tide=V, year>=V, year<V with tide!=V, a JSON object with $in; from=ADDRESS,
tags=T, date>=D, date<D with tags!=T: the fields of mail and notes), and with --ray
`build` and `index --ray`, a few at a time, and SIGKILLs some of them: a quarter early (start-up, creation), the rest late in their run, where they
commit and save the index (the delay learnt from earlier runs of the same command).

After each round, with nothing running, it checks that:
  - the writer lock (and the build lock) can be taken at once: no holder died with it held;
  - the store passes SQLite's and FTS5's integrity checks, every document has chunks and
    every chunk a document, the chunks tile the document's text, FTS5 holds exactly the
    store's rows, the vectors are of length 1 (semsearch.store.check_store);
  - every document a command that exited 0 wrote (and nothing later may have removed) is
    there with its text and metadata (a version: a resend with other metadata is a new one),
    found by dense and lexical search; every one a delete or index that
    exited 0 removed is gone; nothing is there that no command wrote;
  - the collection opens without an index file that is corrupt or out of step with the
    store after replay, and its index holds exactly the store's chunks;
  - `info` works, `semsearch check` exits 0 (store.check_store's rule, which the store
    check above uses too, and the index file read on its own), every command not killed exited 0 or with a one-line error (no traceback),
    every search hit is a slice of a text its document had (with the metadata it had with
    it) and matches the search's where (`matches`: design.md's rule);
  - every document a read printed holds, whole, a text (and its metadata) it may have held
    during the round, not an older one; `documents` lists ids in strictly increasing order,
    only matching ones, and leaves out none that was there all round; `get` and `similar`
    say an id is missing (exit 3, HTTP 404) only if it may have been; `similar` leaves the
    asked id out and ranks by score;
  - an `index` (or `index --ray`, or a resync of one run) that exited 0 reused (its line's
    "N reused") exactly the files whose text and type another document held, and added,
    updated, left unchanged and removed exactly what it must (a mailbox appended to: its new
    messages alone embedded), where that is certain (reusable, expect_counts, check_reuse);
    a moved file's document is under its new id, the old id gone, by the ledger above;
  - the collection's sources (Collection.sources) are a list of well-formed entries, and one
    of the lists its commands may have left: a killed `index` or `delete --path` leaves
    them old or new, never corrupt (settle_sources, check_sources);
  - after one more write (a sentinel `add`), no temporary file is left.

With --serve, a real `semsearch serve` of the collection takes part: HTTP clients add,
replace, delete and search through it alongside the commands, and in half the rounds it is
SIGKILLed (mostly while an HTTP write is in flight), then started again after the round;
else it runs on through `rm` and the commands that make the collection anew.
The HTTP clients also read: GET one document, GET the
pages of the list (following has_more and last_id to the end), POST similar; checked as the
commands are. A write answered 2xx counts as a command that exited 0, one left without an answer by the
kill as a killed command (whole or not at all), and a server that was not killed must answer
every request (a 4xx it may give is one line in OpenAI's error shape; a 500 is a defect).
After each round it also checks that the server, up all along or restarted, finds every
document in the store (lexical search for its nonce word) and those written this round by
dense search too: what the CLI committed under a running server is served; and that its log
holds no traceback.

    nice -n 19 .venv/bin/python benchmarks/torture.py --rounds 100 --minutes 20 [--ray] [--serve] [--seed N]

It stops at the first defect and keeps that round's logs (--keep-going: count them all).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import email.utils
import fcntl
import fnmatch
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).with_name("semsearch"))]
NAME = "torture"
WORDS = ("harbour tide ferry boat master weather log dawn lantern rope anchor gull pier storm "
         "sail chart compass keel deck mast net fish salt wave reef cargo crew dock").split()
TEMP_PATTERNS = (".index.faiss.*.tmp", ".store.sqlite.*.new*", ".ondisk-changes.npz.*.tmp")
BENIGN = {"add": {3, 75}, "replace": {3, 75}, "resend": {3, 75}, "delete": {3, 75}, "index": {3, 75}, "search": {3},
          "info": {3}, "rm": {3, 75}, "build": {2, 3, 75}, "rayindex": {3, 75},
          "get": {3, 75}, "documents": {3, 75}, "similar": {3, 75}, "backup": {3},
          "resync": {75}, "delpath": {75}}  # one-line refusals (resync's 2/3, delpath's 3: see refused)
WEIGHTS = {"add": 30, "replace": 10, "resend": 10, "delete": 12, "index": 14, "search": 14, "info": 4, "rm": 5, "build": 3,
           "rayindex": 3, "get": 5, "documents": 5, "similar": 4, "backup": 4, "resync": 7, "delpath": 3}
SOURCES_CHANGED = ("index", "rayindex", "resync", "delpath", "rm")  # what may change the collection's sources
FILE_WRITERS = ("index", "rayindex", "resync", "delpath", "rm")  # what writes or removes files' documents
RAY = ("build", "rayindex")  # run only with --ray: each starts a local Ray (seconds)
HTTP_WEIGHTS = {"hadd": 20, "hreplace": 8, "hdelete": 8, "hsearch": 12,
                "hget": 4, "hdocuments": 4, "hsimilar": 4}  # with --serve
READS = ("get", "documents", "similar", "hget", "hdocuments", "hsimilar")  # what they print is checked (check_read)
TIDES = ("high", "low")  # the metadata keys writes set (tide=..., year=..., a batch nonce) and reads filter on
YEARS = (2000, 2030)
TAGS = ("sea", "port", "mid")  # notes' tags (Org FILETAGS, AsciiDoc :tags:, TOML tags); HTTP adds write "mid" too
ADDRESSES = ("ann@sea.example", "bob@port.example", "cy@ship.example")  # mail's From and To
KINDS = {"txt": 30, "md": 12, "toml": 6, "org": 8, "adoc": 8, "eml": 10, "mbox": 8, "py": 9, "log": 9}  # new files
SUFFIX = {"toml": ".md"}  # a kind's file suffix where it is not ".KIND"
WALKED = {".txt", ".md", ".org", ".adoc", ".eml", ".mbox"}  # the suffixes written that a walk takes without --glob
GLOBS = (("*.py", "*.txt"), ("*.md", "*.org", "*.adoc"), ("*.eml", "*.mbox", "*.log"), ("*.py", "*.log", "*.mbox"))
DOWN, NO_ANSWER = -1, -2  # an HTTP op's rc: the server was not up (refused); it hung up unasked
HTTP_BENIGN = {404, 409, 503, DOWN}  # the collection removed (or the document), the writer lock busy, overloaded
BENIGN.update(dict.fromkeys(HTTP_WEIGHTS, HTTP_BENIGN))
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy from the environment
ABSENT = None  # the state of a document that is not there


def version(text: str, meta: dict) -> tuple[str, str]:
    """What a document holds: its text and its metadata (as canonical JSON, so hashable)."""
    return text, json.dumps(meta, sort_keys=True)


def meta_of(v: tuple[str, str]) -> dict:
    return json.loads(v[1])


def source_of(key: str) -> str | None:
    """The file a document id the soak uses was read from: the id itself, or an mbox's
    path before "#MESSAGE-ID"; None for a text added by id (no soak path holds a "#")."""
    return key.split("#", 1)[0] if key.startswith("/") else None


def _number(value):
    """A number, or a text that spells one, as a number (the rule compares those as numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(stored, value) -> bool:
    return stored == value or (_number(stored) is not None and _number(stored) == _number(value))


SIGNS = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b,
         "$lte": lambda a, b: a <= b}


def matches(meta: dict, where: dict | None) -> bool:
    """design.md's rule for the metadata the soaks write (texts, numbers and texts that spell
    one, lists of texts): a value means $eq, a list matches by any item, $ne/$nin are the
    complements (a document without the key included), ranges compare numbers and texts that
    spell one as numbers, other texts by character (ISO dates; one item must meet all of a
    key's bounds), $exists asks for the key. threads_soak.py checks with it too."""
    for key, condition in (where or {}).items():
        ops = condition if isinstance(condition, dict) else {"$eq": condition}
        items = [] if key not in meta else meta[key] if isinstance(meta[key], list) else [meta[key]]
        for op, operand in ops.items():
            if op == "$exists" and (key in meta) != operand:
                return False
            if op in ("$eq", "$ne") and any(_equal(i, operand) for i in items) != (op == "$eq"):
                return False
            if op in ("$in", "$nin") and any(_equal(i, v) for i in items for v in operand) != (op == "$in"):
                return False
        bounds = [(SIGNS[op], b) for op, b in ops.items() if op in SIGNS]
        if bounds and not any(all(_within(i, sign, b) for sign, b in bounds) for i in items):
            return False
    return True


def _within(item, sign, bound) -> bool:
    """One stored value on ``sign``'s side of a bound (store._compares): a number, or a text
    that spells one in JSON, as a number with a bound that is or spells one; another text
    by character with the bound as written; anything else never."""
    if isinstance(item, bool) or not isinstance(item, (int, float, str)):
        return False
    if isinstance(item, str):
        try:
            spelled = json.loads(item)
        except ValueError:
            spelled = None
        if not isinstance(spelled, (int, float)) or isinstance(spelled, bool):
            return sign(item, str(bound))
        item = spelled
    return _number(bound) is not None and sign(item, _number(bound))


def random_filter(rng: random.Random) -> tuple[dict, list[str]]:
    """A filter as the library reads it and as --where strings (a URL's where= too): none, a
    tide, ranges over year (KEY>=V, KEY<V with KEY!=V), or a JSON object with $in; or on the
    fields of notes and mail: a sender (from=, a list), a tag (tags=), a range of dates
    (date>=D: ISO texts, compared by character)."""
    year = rng.randint(*YEARS)
    day = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return rng.choice((
        lambda: ({"from": (a := rng.choice(ADDRESSES))}, [f"from={a}"]),
        lambda: ({"tags": (t := rng.choice(TAGS))}, [f"tags={t}"]),
        lambda: ({"date": {"$gte": day}}, [f"date>={day}"]),
        lambda: ({"date": {"$lt": day}, "tags": {"$ne": (t := rng.choice(TAGS))}}, [f"date<{day}", f"tags!={t}"]),
        lambda: ({"tags": {"$in": (ts := rng.sample(TAGS, 2))}, "date": {"$lte": day}},
                 [json.dumps({"tags": {"$in": ts}, "date": {"$lte": day}})]),
        lambda: ({}, []),
        lambda: ({}, []),
        lambda: ({"tide": (t := rng.choice(TIDES))}, [f"tide={t}"]),
        lambda: ({"year": {"$gte": year}}, [f"year>={year}"]),
        lambda: ({"year": {"$lt": year}, "tide": {"$ne": (t := rng.choice(TIDES))}}, [f"year<{year}", f"tide!={t}"]),
        lambda: ({"tide": {"$in": (ts := rng.sample(TIDES, 1))}, "year": {"$lte": year}},
                 [json.dumps({"tide": {"$in": ts}, "year": {"$lte": year}})]),
    ))()


def lock_held(lock: Path) -> bool:
    """Whether some process holds the file lock ``lock`` (a missing file: nobody)."""
    if not lock.exists():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def semsearch_warnings():
    """The warning records semsearch logs while the block runs (a list, filled as they come)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("semsearch")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def index_out_of_step(coll, ids: list[int], vectors: list[bytes]) -> list[str]:
    """What is wrong between ``coll``'s index and its store's chunks (``ids``, ``vectors``,
    read in one snapshot): the counts, and every chunk found first by its own vector (or by
    one of the same vector: a copied file's)."""
    import numpy as np
    found, info = [], coll.info()
    if not info["index"]["vectors"] == info["chunks"] == len(ids):
        found.append(f"index holds {info['index']['vectors']} vectors, the store {len(ids)} chunks")
    if ids:
        first = [hits[0].chunk_id if hits else None
                 for hits in coll.search_vectors(np.stack([np.frombuffer(v, np.float32) for v in vectors]), k=1)]
        vector = dict(zip(ids, vectors))
        wrong = [i for i, f in zip(ids, first) if f != i and vector.get(f) != vector[i]]
        if wrong:
            found.append(f"{len(wrong)} chunks are not found by their own vector (e.g. {wrong[:3]})")
    return found


def read_store(path: Path) -> tuple[list[str], dict[str, tuple[int, dict]], dict[int, list[tuple]]]:
    """The store as sqlite3 alone reads it, and what is wrong with its structure by the
    library's own rule (semsearch.store.check_store, what `semsearch check` runs: SQLite's
    and FTS5's integrity checks, documents without chunks or chunks without one, FTS5 not
    holding exactly the chunks and documents, positions, vectors). Returns (defects, key ->
    (document row id, metadata), document row id -> its chunks (id, doc_id, position, start,
    end, text) in order); threads_soak.py checks a store with it too."""
    from semsearch.store import check_store

    db = sqlite3.connect(path, isolation_level=None)
    try:
        found = [f"{check}: {problem}" for check, problems in check_store(db).items() if check != "notes"
                 for problem in problems]
        docs = {key: (doc_id, json.loads(meta)) for key, doc_id, meta
                in db.execute("SELECT key, id, metadata FROM documents")}
        rows = db.execute("SELECT id, doc_id, position, start, end, text FROM chunks ORDER BY doc_id, position").fetchall()
    finally:
        db.close()
    by_doc = defaultdict(list)
    for row in rows:
        by_doc[row[1]].append(row)
    return found, docs, by_doc


def nonce(rng: random.Random) -> str:
    return "q" + "".join(rng.choice("bcdfghjklmnpstvwxz") for _ in range(9))


def within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (collection._within)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def remember(runs: list[tuple]):
    """Collection.remember_sources of ``runs`` (path, globs, excludes), as a function of the
    sources: a path already one takes the new selection in its place, a new one goes last."""
    def change(now: tuple) -> tuple:
        now = list(now)
        for path, globs, excludes in runs:
            entry = (path, tuple(globs), tuple(excludes), False)
            i = next((i for i, o in enumerate(now) if o[0] == path), None)
            if i is None:
                now.append(entry)
            else:
                now[i] = entry
        return tuple(now)
    return change


def forget(root: str):
    """`delete --path ROOT`'s change of the sources: those at or under it go."""
    return lambda now: tuple(o for o in now if not within(o[0], root))


def runs_of(sources: tuple) -> list[tuple]:
    """cli.index_sources's runs of a sources list: consecutive sources of one selection in
    one run (paths, globs, excludes), the paths gone left out, runs left empty dropped."""
    runs = []
    for path, globs, excludes, _ in sources:
        if runs and runs[-1][1:] == (globs, excludes):
            runs[-1][0].append(path)
        else:
            runs.append(([path], globs, excludes))
    runs = [([p for p in paths if os.path.lexists(p)], g, e) for paths, g, e in runs]
    return [run for run in runs if run[0]]


def random_day(rng: random.Random) -> datetime.date:
    return datetime.date(rng.randint(*YEARS), rng.randint(1, 12), rng.randint(1, 28))


def make_text(rng: random.Random, long: bool = False) -> str:
    """A unique text: a nonce word (what lexical search finds it by) and sea words."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(300, 500) if long else rng.randint(8, 40))]
    return f"{nonce(rng)} " + " ".join(words) + "."


@dataclass
class Op:
    kind: str
    args: list
    effects: dict = field(default_factory=dict)  # key -> text (or ABSENT) it writes if it commits
    maybe: set = field(default_factory=set)  # keys of effects it may leave alone, even when it exits 0
    ask: dict = field(default_factory=dict)  # a read's question: ids or id, where (and its --where strings), after, limit, k, docs, page
    kill_at: float | None = None
    start: float = 0.0
    end: float = 0.0
    rc: int | None = None
    killed: bool = False
    out: str = ""
    err: str = ""


class Server:
    """A real `semsearch serve` of the torture collection on a free loopback port, its log in
    the work folder; started again after each kill."""

    def __init__(self, torture: "Torture"):
        self.t = torture
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.log: Path | None = None
        self.read = 0  # how much of the log has been looked at
        self.killed_at: float | None = None
        self.starts = 0

    def start(self) -> list[str]:
        self.starts += 1
        self.log = self.t.work / "server" / f"{self.starts}.log"
        self.log.parent.mkdir(exist_ok=True)
        self.read, self.killed_at = 0, None
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(CLI + ["serve", NAME, "--port", "0"], stdout=log, stderr=log,
                                         env=self.t.env, cwd=self.t.work, start_new_session=True)
        deadline = time.monotonic() + self.t.args.hang
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.log.read_text().splitlines():
                if line.startswith("serving ") and " on http://127.0.0.1:" in line:
                    self.url = "http://127.0.0.1:" + line.rsplit(":", 1)[1].split()[0]
                    return []
            time.sleep(0.1)
        self.stop()
        return [f"the server did not start (log {self.log}): {self.log.read_text()[-600:]}"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(self.t.args.hang)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = self.url = None

    def kill_during(self, ops: list[Op], workers: list[threading.Thread], mid_write: bool, delay: float) -> None:
        """SIGKILL the server: ``mid_write``, soon after an HTTP write is sent (within the time
        one takes); else ``delay`` seconds in. Not at all if the round ends first."""
        start = time.monotonic()
        while any(w.is_alive() for w in workers):
            sending = [op for op in ops if op.kind in ("hadd", "hreplace", "hdelete") and op.start and not op.end]
            if (mid_write and sending) or (not mid_write and time.monotonic() - start > delay):
                if sending:
                    time.sleep(self.t.rng.uniform(0, 1.1 * self.t.took[sending[0].kind]))
                self.killed_at = time.monotonic()
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.proc = self.url = None
                self.t.server_kills += 1
                return
            time.sleep(0.01)

    def log_defects(self) -> list[str]:
        if self.log is None or not self.log.exists():
            return []
        text = self.log.read_text()
        new, self.read = text[self.read:], len(text)
        if "Traceback" in new or "ERROR" in new:
            return [f"the server's log ({self.log}) holds: {new.strip()[-800:]}"]
        return []

    def post(self, route: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/v1/collections/{NAME}/{route}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with HTTP.open(request, timeout=self.t.args.hang) as response:
            return json.loads(response.read())


class Torture:
    benign = BENIGN  # the exits that are no defect, by kind of command

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="semsearch-torture-", dir="/tmp"))
        self.home = self.work / "home"
        self.docs = self.work / "docs"
        self.home.mkdir()
        self.docs.mkdir()
        self.env = {**os.environ, "SEMSEARCH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("SEMSEARCH_DEBUG", None)
        self.coll = self.home / NAME
        self.state: dict[str, set] = {}  # key -> the versions (text, metadata) or ABSENT it may hold now
        self.history: dict[str, set] = defaultdict(set)  # key -> every version it ever held
        self.files: dict[str, tuple] = {}  # file key (its path) -> its version now (absent: deleted)
        self.took = defaultdict(lambda: 1.0)  # command -> seconds it takes (running mean)
        self.took["build"] = self.took["rayindex"] = 6.0
        self.kills = self.rounds = self.commands = 0
        self.defects: list[str] = []
        self.sentinel = 0
        self.embedder = None
        self.server = Server(self) if args.serve else None
        self.server_kills = self.server_follows = 0
        self.there = False  # whether the collection was there at the round's start
        self.reads, self.checked = Counter(), Counter()  # read kind -> how many ran; were checked
        self.ran = Counter()  # resends (racing: on an id another write of the round sends to), filtered ops
        self.mailboxes: dict[str, int] = {}  # an .mbox file's path -> how many messages it holds
        self.inner = self.docs / "zinner"  # a collection inside the folder: no walk enters it
        # the collection's sources (Collection.sources) it may hold: each a tuple of (path,
        # globs, excludes, gitignore); after each round's check, the one it holds
        self.sources: set[tuple] = {()}
        self.sources_after: set[tuple] = {()}  # those it may hold after the round (settle_sources)

    # -- the folder `index` reads -------------------------------------------------------------
    def mutate_folder(self) -> None:
        """Change, delete and write files (.txt; .md with YAML or TOML front matter; .org and
        .adoc with their headers; .eml and .mbox mail; .py and .log, read only when a --glob
        takes them; some in subfolders; messages appended to a mailbox), then at times move or
        rename one, rename a whole subfolder, copy one (os.rename, copyfile): what `index` then
        reuses (Writer.reused)."""
        rng = self.rng
        if not self.inner.exists():  # a collection, with files a walk would read if it went in
            subprocess.run(CLI + ["add", str(self.inner), "--text", "not the soak's", "--id", "x"], env=self.env,
                           capture_output=True, check=True)
            (self.inner / "notes.txt").write_text("qinnerxxxx a collection's folder is not walked into.")
            (self.inner / "notes.py").write_text("qinnerxxxx = 1\n")
        files = self.tree()
        for path in rng.sample(files, min(len(files), rng.randint(0, 3))):
            if rng.random() < 0.4:
                path.unlink()
                self.drop(str(path.resolve()))
            elif path.suffix == ".mbox" and rng.random() < 0.7:
                self.append_mail(path, rng.randint(1, 3))
            else:
                self.write_file(path)
        for _ in range(rng.randint(0 if files else 2, 3)):
            kind = rng.choices(list(KINDS), list(KINDS.values()))[0]
            self.write_file(self.folder() / f"f{nonce(rng)}{SUFFIX.get(kind, '.' + kind)}", kind)
        files, dirs = self.tree(), self.dirs()
        if files and rng.random() < 0.4:  # move or rename a file, into any folder
            src = rng.choice(files)
            self.moved(src, self.folder() / f"f{nonce(rng)}{src.suffix}", os.rename)
        if dirs and rng.random() < 0.2:  # rename a subfolder, all its files with it
            self.moved(rng.choice(dirs), self.docs / f"d{nonce(rng)}", os.rename)
        if files and rng.random() < 0.3:  # a copy: two documents of one text
            src = rng.choice(self.tree())
            self.moved(src, src.parent / f"f{nonce(rng)}{src.suffix}", shutil.copyfile)

    def tree(self) -> list[Path]:
        """The soak's files in the folder (not the inner collection's)."""
        return sorted(p for p in self.docs.rglob("*") if p.is_file() and self.inner not in p.parents)

    def dirs(self) -> list[Path]:
        return sorted(p for p in self.docs.iterdir() if p.is_dir() and p != self.inner)

    def folder(self) -> Path:
        """Where a new file goes: the top, a subfolder, or a new one (d<nonce>, top level)."""
        dirs = self.dirs()
        if self.rng.random() < 0.5:
            return self.docs
        if dirs and self.rng.random() < 0.7:
            return self.rng.choice(dirs)
        (path := self.docs / f"d{nonce(self.rng)}").mkdir()
        return path

    def moved(self, src: Path, dst: Path, how) -> None:
        """``how(src, dst)`` (a rename or copy; src a file or a folder) and the files' versions
        after it: the same texts and metadata under the new paths (a copy keeps the old ones);
        a mailbox's messages go with it."""
        old, new = str(src.resolve()), str(dst.resolve())
        how(src, dst)
        self.ran["renamed" if how is os.rename else "copied"] += 1
        for key in [k for k in self.files if source_of(k) == old or k.startswith(old + os.sep)]:
            v = self.files.pop(key) if how is os.rename else self.files[key]
            key = new + key[len(old):]
            self.files[key] = version(v[0], {**meta_of(v), "path": source_of(key)})
            self.history[key].add(self.files[key])
        for box in [b for b in self.mailboxes if b == old or b.startswith(old + os.sep)]:
            self.mailboxes[new + box[len(old):]] = self.mailboxes.pop(box) if how is os.rename else self.mailboxes[box]

    def drop(self, path: str) -> None:
        """Forget the documents file ``path`` held (deleted, or about to be written anew)."""
        for key in [k for k in self.files if source_of(k) == path]:
            del self.files[key]
        self.mailboxes.pop(path, None)

    def write_file(self, path: Path, kind: str | None = None) -> None:
        """A new text in ``path`` of ``kind`` (by default its suffix's; a .md's front matter
        YAML or TOML): its documents' versions as the loaders read them. A header's fields are
        metadata and its title the text's first line (loaders._body_segments); a .txt,
        .py or .log is its text as it is; mail is mail.py's (write_mail)."""
        rng, key = self.rng, str(path.resolve())
        kind = kind or (rng.choice(("md", "md", "toml")) if path.suffix == ".md" else path.suffix[1:])
        self.drop(key)
        if kind in ("eml", "mbox"):
            if kind == "mbox":
                path.write_text("")
                self.mailboxes[key] = 0
                return self.append_mail(path, rng.randint(1, 4))
            raw, text, meta = self.message(key, "eml", nonce(rng) + "@sea.example" if rng.random() < 0.7 else None)
            path.write_text(raw)
            return self.wrote(key, text, meta)
        body = make_text(rng, long=rng.random() < 0.3)
        meta = {"path": key, "type": path.suffix[1:]}  # what `index` gives a file
        title, day, tide = f"{nonce(rng)} {rng.choice(WORDS)}", random_day(rng), rng.choice(TIDES)
        tags = rng.sample(TAGS, rng.randint(1, 2))
        if kind == "md":
            fields = {"title": title, "tide": tide, "year": rng.randint(*YEARS)}
            path.write_text("---\n" + "".join(f"{k}: {x}\n" for k, x in fields.items()) + "---\n" + body)
            text = f"{title}\n{body}"
        elif kind == "toml":  # Hugo's front matter: a TOML date is a date, written as ISO text
            fields = {"title": title, "tags": tags, "date": day.isoformat(), "tide": tide, "year": rng.randint(*YEARS)}
            path.write_text(f'+++\ntitle = "{title}"\ntags = {json.dumps(tags)}\ndate = {day.isoformat()}\n'
                            f'tide = "{tide}"\nyear = {fields["year"]}\n+++\n{body}')
            text = f"{title}\n{body}"
        elif kind == "org":  # FILETAGS :a:b: are tags, a timestamp a date
            fields = {"title": title, "tags": tags, "date": day.isoformat(), "tide": tide}
            path.write_text(f"#+TITLE: {title}\n#+FILETAGS: :{':'.join(tags)}:\n"
                            f"#+DATE: <{day.isoformat()} {day.strftime('%a')}>\n#+TIDE: {tide}\n{body}")
            text = f"{title}\n{body}"
        elif kind == "adoc":  # the header ends at the blank line, which stays in the text
            fields = {"title": title, "tags": tags, "date": day.isoformat(), "tide": tide}
            path.write_text(f"= {title}\n:tags: {', '.join(tags)}\n:date: {day.isoformat()}\n:tide: {tide}\n\n{body}")
            text = f"{title}\n\n{body}"
        elif kind in ("py", "log"):  # read as text only when a glob takes it; chunked at line breaks
            fields, text = {}, self.code(kind, long=rng.random() < 0.3)
            path.write_text(text)
            text = text.rstrip()  # a document's text runs from its first word to its last (chunking)
        else:
            fields, text = {}, body
            path.write_text(body)
        self.wrote(key, text, {**fields, **meta})

    def wrote(self, key: str, text: str, meta: dict) -> None:
        self.files[key] = version(text, meta)
        self.history[key].add(self.files[key])

    def code(self, kind: str, long: bool) -> str:
        """Lines of source code or of a log, the first led by a nonce word (lexical search's)."""
        rng = self.rng
        lines = [f"{nonce(rng)} = {rng.randint(0, 999)}" if kind == "py" else f"{nonce(rng)} started"]
        for i in range(rng.randint(60, 120) if long else rng.randint(3, 12)):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
            if kind == "py":
                lines.append(f"def {rng.choice(WORDS)}_{i}(x):\n    return x + {i}  # {words}")
            else:
                lines.append(f"2024-03-05T09:{i % 60:02d}:00 {rng.choice(('INFO', 'WARN'))} {words}")
        return "\n".join(lines) + "\n"

    def append_mail(self, path: Path, n: int) -> None:
        """``n`` messages appended to a mailbox (some without a Message-ID: id their number
        in the file): its earlier messages' documents stay as they are."""
        key = str(path.resolve())
        with open(path, "a") as f:
            for _ in range(n):
                self.mailboxes[key] += 1
                mid = nonce(self.rng) + "@sea.example" if self.rng.random() < 0.7 else None
                raw, text, meta = self.message(key, "mbox", mid)
                f.write(f"From {meta['from'][0]} Tue Mar  5 09:30:00 2024\n{raw}\n")
                self.wrote(f"{key}#{mid or self.mailboxes[key]}", text, meta)
        self.ran["mail_appended"] += n

    def message(self, path: str, kind: str, mid: str | None) -> tuple[str, str, dict]:
        """A message (its raw text), its document's text (subject, then body) and metadata as
        mail.py reads them: addresses as lists, the date in UTC ISO 8601, the subject the title."""
        rng = self.rng
        subject, body = f"{nonce(rng)} {rng.choice(WORDS)}", make_text(rng, long=rng.random() < 0.2)
        sender, to = rng.choice(ADDRESSES), rng.sample(ADDRESSES, rng.randint(1, 2))
        when = datetime.datetime.combine(random_day(rng), datetime.time(rng.randint(0, 23), rng.randint(0, 59)),
                                         datetime.timezone(datetime.timedelta(hours=rng.randint(-8, 9))))
        raw = (f"From: Sailor <{sender}>\nTo: {', '.join(to)}\nSubject: {subject}\n"
               f"Date: {email.utils.format_datetime(when)}\n" + (f"Message-ID: <{mid}>\n" if mid else "")
               + f"\n{body}\n")
        meta = {"path": path, "type": kind, "from": [sender], "to": to, "subject": subject, "title": subject,
                "date": when.astimezone(datetime.timezone.utc).isoformat(), **({"message_id": mid} if mid else {})}
        return raw, f"{subject}\n{body}", meta

    def reusable(self, keys: list[str]) -> int | None:
        """How many of the files ``keys`` an `index` run that lists them (and no other writer of
        files) must reuse: those the collection does not hold as they are, whose text (and
        type: their metadata less path) another document holds at the round's start. None
        where that is not certain: a file's document may or may not hold it as it is, a holder
        may or may not hold it, or a holder is a file the run updates (written before or after
        the copy is read)."""
        def kind(v):
            return v[0], json.dumps({**meta_of(v), "path": None}, sort_keys=True)
        sure, maybe = defaultdict(set), defaultdict(set)  # kind -> documents that hold it; may
        for k, s in self.state.items():
            for v in s - {ABSENT} if k.startswith("/") else ():
                (sure if len(s) == 1 else maybe)[kind(v)].add(k)
        if any(self.files[k] in self.state.get(k, {ABSENT}) and len(self.state[k]) > 1 for k in keys):
            return None
        new = [k for k in keys if self.state.get(k) != {self.files[k]}]
        holders = [sure[kind(self.files[k])] - {k} for k in new]
        if any((m := maybe[kind(self.files[k])] - {k}) and not h or (h | m) & set(new) for k, h in zip(new, holders)):
            return None
        return sum(bool(h) for h in holders)

    # -- one round ----------------------------------------------------------------------------
    def plan(self) -> list[Op]:
        rng, ops, used = self.rng, [], set()
        weights = {k: w for k, w in WEIGHTS.items() if k not in RAY or self.args.ray}
        weights.update(HTTP_WEIGHTS if self.server else {})
        kinds = list(weights)
        for _ in range(rng.randint(4, 10) + 4 * bool(self.server)):
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            if kind in ("rm", *RAY) and any(o.kind == kind for o in ops):
                kind = "add"
            held = [k for k, s in self.state.items() if not k.startswith("/") and k not in used and s != {ABSENT}]
            if kind in ("replace", "delete", "hreplace", "hdelete") and not held:
                kind = "add"
            # what this op's adds write with their texts (the command line writes strings)
            meta = {"tide": rng.choice(TIDES), "batch": nonce(rng), "year": str(rng.randint(*YEARS))}
            if kind == "resend" and not (texts := self.resendable(used, ops)):
                kind = "add"
            if kind in HTTP_WEIGHTS:
                op = self.plan_http(kind, held, meta, used, ops)
            elif kind == "add":
                keys = [f"k{nonce(rng)}" for _ in range(rng.randint(1, 3))]
                op = Op(kind, ["add", NAME], {k: version(make_text(rng), meta) for k in keys})
                for k, v in op.effects.items():
                    op.args += ["--text", v[0], "--id", k]
            elif kind == "replace":
                key = rng.choice(held)
                op = Op(kind, ["add", NAME, "--text", make_text(rng), "--id", key])
                op.effects[key] = version(op.args[3], meta)
            elif kind == "resend":  # a text the id may hold, as it is (unchanged) or with other --meta
                key, v = rng.choice(texts)
                if rng.random() < 0.5 and all(isinstance(x, str) for x in meta_of(v).values()):
                    meta = meta_of(v)
                op = Op(kind, ["add", NAME, "--text", v[0], "--id", key], {key: version(v[0], meta)})
                self.ran["resend"] += 1
                op.args += [a for k, x in meta.items() for a in ("--meta", f"{k}={x}")]
            elif kind in READS:
                op = Op(kind, [kind, NAME], ask=self.ask(kind))
                op.args += list(op.ask.get("ids", [])) + ([op.ask["id"], "-k", str(op.ask["k"])] if "id" in op.ask else [])
                op.args += ["--json"] + ["--text"] * (kind == "documents") + ["--chunks"] * (op.ask.get("docs") is False)
                op.args += [a for cond in op.ask.get("strings", []) for a in ("--where", cond)]
                op.args += [a for name in ("after", "limit") if op.ask.get(name) is not None
                            for a in (f"--{name}", str(op.ask[name]))]
            elif kind == "delete":
                key = rng.choice(held)
                op = Op(kind, ["delete", NAME, "--id", key], {key: ABSENT})
            elif kind in ("index", "rayindex"):
                op = self.plan_index(kind)
            elif kind == "resync":  # `index --name NAME` alone: what it reads once the round is planned (plan_resync)
                op = Op(kind, ["index", "--name", NAME])
            elif kind == "delpath":
                op = self.plan_delpath()
            elif kind == "search":
                where, strings = random_filter(rng)
                op = Op(kind, ["search", NAME, " ".join(rng.sample(WORDS, 3)), "--json", "-k", "20",
                               "--mode", rng.choice(["dense", "lexical", "hybrid"])]
                        + (["--docs"] if rng.random() < 0.5 else []) + [a for c in strings for a in ("--where", c)],
                        ask={"where": where, "strings": strings})
            elif kind == "info":
                op = Op(kind, ["info", NAME, "--json"])
            elif kind == "rm":
                op = Op(kind, ["rm", NAME, "--yes"])
            elif kind == "backup":  # into a folder of its own (check_backup)
                op = Op(kind, ["backup", NAME, str(self.work / "backups" / nonce(rng))])
            else:
                op = Op(kind, ["build", NAME])
            if kind in ("add", "replace"):
                op.args += [a for k, x in meta.items() for a in ("--meta", f"{k}={x}")]
            used |= set(op.effects) if kind not in FILE_WRITERS else set()
            for key, v in op.effects.items():
                if v is not ABSENT:
                    self.history[key].add(v)
            if rng.random() < self.args.kill and kind not in HTTP_WEIGHTS:
                early = rng.random() < 0.25
                op.kill_at = rng.uniform(0, 0.4) if early else self.took[kind] * rng.uniform(0.5, 1.1)
            ops.append(op)
        for op in ops:
            if op.kind == "resync":
                self.plan_resync(op, ops)
        return ops

    def plan_index(self, kind: str) -> Op:
        """`index` of the folder (some with --exclude of subfolders or of *.log: neither added
        nor removed), at times of a subfolder or a file (a source of its own), some with a
        --glob set (a .py or .log read as text only then)."""
        rng, docs = self.rng, str(self.docs.resolve())
        root, out, globs = docs, [], ()
        if kind == "index" and rng.random() < 0.25 and (paths := self.dirs() + self.tree()):
            root = str(rng.choice(paths).resolve())
        elif kind == "index":
            dirs = [p.name for p in self.dirs()]
            out = [rng.choice((d, f"{d}/", f"/{d}")) for d in rng.sample(dirs, min(len(dirs), rng.choice((0, 0, 1, 2))))]
            out += ["*.log"] * (rng.random() < 0.15)
        if rng.random() < (0.35 if kind == "index" else 0.2):
            globs = rng.choice(GLOBS)
        runs = [(root, tuple(globs), tuple(out))]
        keys = self.selected(runs)
        op = Op(kind, ["index", root, "--name", NAME] + [a for g in globs for a in ("--glob", g)]
                + [a for e in out for a in ("--exclude", e)] + ["--ray"] * (kind == "rayindex"),
                {k: self.files.get(k, ABSENT) for k in keys}, ask={"runs": runs})
        self.expect_counts(op, keys)
        self.ran["excluded"] += bool(out)
        self.ran["globbed"] += bool(globs)
        self.ran["own_source"] += root != docs
        return op

    def plan_resync(self, op: Op, ops: list[Op]) -> None:
        """A resync reads the sources as they are when it starts: those at the round's start,
        or any list the round's other commands may make of them (remember, forget, rm, in
        any order). It writes what every such list selects (its effects), and may write what
        some do (``maybe``); refusable where one has no source left, or none whose path exists."""
        others = [f for o in ops if o is not op and o.kind in SOURCES_CHANGED and o.kind != "resync"
                  for f in self.source_changes(o)]
        lists, todo = set(self.sources), list(self.sources)
        while todo and len(lists) < 2000:
            now = todo.pop()
            for change in others:
                if (after := change(now)) not in lists:
                    lists.add(after)
                    todo.append(after)
        op.ask["lists"] = lists
        runnable = [runs for runs in map(runs_of, lists) if runs]
        op.ask["refusable"] = len(runnable) < len(lists)
        selected = [self.selected([(p, g, e) for paths, g, e in runs for p in paths]) for runs in runnable]
        sure, every = set.intersection(*selected) if selected else set(), set().union(*selected)
        op.effects, op.maybe = {k: self.files.get(k, ABSENT) for k in every}, every - sure
        if len(runnable) == len(lists) == 1 and len(runnable[0]) == 1:  # one run: its line's counts are certain
            self.expect_counts(op, every)
        self.ran["resync_certain"] += not op.maybe and not op.ask["refusable"]

    def plan_delpath(self) -> Op:
        """`delete --path` of a file, a subfolder or (rarely) the folder: its documents go, and
        the sources at or under it are forgotten."""
        rng, docs = self.rng, str(self.docs.resolve())
        paths = self.dirs() + self.tree()
        path = docs if rng.random() < 0.1 or not paths else str(rng.choice(paths).resolve())
        keys = [k for k in set(self.history) | set(self.state) if (s := source_of(k)) and within(s, path)]
        return Op("delpath", ["delete", NAME, "--path", path], dict.fromkeys(keys, ABSENT), ask={"path": path})

    def selected(self, runs: list[tuple]) -> set[str]:
        """The ids of file documents an `index` of ``runs`` (path, globs, excludes) reads or
        removes: those of the files under a path that its selection takes."""
        return {k for k in set(self.history) | set(self.state)
                if (s := source_of(k)) and any(self.takes(s, *run) for run in runs)}

    def takes(self, path: str, root: str, globs: tuple, excludes: tuple) -> bool:
        """loaders.Selection's rule, for the patterns this soak gives: a file named is taken;
        under a folder, not in the inner collection, not in an excluded top subfolder or
        named by an excluded *.SUFFIX; one a glob matches by name, or without globs, one of
        the types a walk reads (WALKED)."""
        if path == root:
            return True
        if not path.startswith(root + os.sep) or within(path, str(self.inner.resolve())):
            return False
        parts = path[len(root) + 1:].split(os.sep)
        if any(fnmatch.fnmatch(parts[-1], e) if e.startswith("*") else e.strip("/") in parts[:-1][:1]
               for e in excludes):
            return False
        return any(fnmatch.fnmatch(parts[-1], g) for g in globs) if globs else os.path.splitext(path)[1] in WALKED

    def expect_counts(self, op: Op, keys) -> None:
        """What an `index` of ``keys`` must say it did, where the collection's state of each is
        certain: "N reused" (reusable) and its added, updated, unchanged and removed."""
        op.ask["reuse"] = self.reusable([k for k in keys if k in self.files])
        counts = Counter()
        for k in keys:
            state, now = self.state.get(k, {ABSENT}), self.files.get(k, ABSENT)
            if len(state) != 1:
                return
            (was,) = state
            if now is ABSENT:
                counts["removed"] += was is not ABSENT
            else:
                counts["unchanged" if now == was else "added" if was is ABSENT else "updated"] += 1
        op.ask["counts"] = tuple(counts[c] for c in ("added", "updated", "unchanged", "removed"))

    def source_changes(self, op: Op) -> list:
        """How ``op`` may change the sources: functions from one list to another (a resync's
        one for each list it may have read, each for every prefix of its runs: killed part-way)."""
        if op.kind == "rm":
            return [lambda now: ()]
        if op.kind in ("index", "rayindex"):
            return [remember(op.ask["runs"])]
        if op.kind == "delpath":
            return [forget(op.ask["path"])]
        if op.kind == "resync":
            entries = [[(p, g, e) for paths, g, e in runs for p in paths] for runs in map(runs_of, op.ask["lists"])]
            return [remember(each[:n]) for each in entries for n in range(1, len(each) + 1)] or [lambda now: now]
        return []

    def resendable(self, used: set, ops: list[Op]) -> list[tuple[str, tuple]]:
        """(id, version) pairs to send again: a text an id added as text may hold now; at times
        an id a write planned this round is sending another text to, so the two race (a
        resend that found its text held, then another writer's text: put_texts embeds it)."""
        racing = [(k, v) for op in ops if op.kind in ("replace", "resend", "hreplace") for k, v in op.effects.items()]
        if racing and self.rng.random() < 0.4:
            self.ran["resend_racing"] += 1
            return racing
        return sorted((k, v) for k, s in self.state.items() if not k.startswith("/") and k not in used
                      for v in s if v is not ABSENT)

    def ask(self, kind: str) -> dict:
        """A read's question: ids the soak wrote (most there at the round's start, some perhaps
        deleted since), at times a tide filter; a `documents` sometimes a page (after, limit),
        an HTTP one walked to the end in pages of ``page``."""
        rng = self.rng
        known = sorted(self.state) or [f"k{nonce(rng)}"]
        there = [k for k in known if ABSENT not in self.state.get(k, {ABSENT})]

        def pick() -> str:
            return rng.choice(there if there and rng.random() < 0.8 else known)
        where, strings = random_filter(rng)
        if kind in ("get", "hget"):
            return {"ids": list(dict.fromkeys(pick() for _ in range(rng.randint(1, 3) if kind == "get" else 1)))}
        if kind in ("similar", "hsimilar"):
            return {"id": pick(), "k": rng.randint(1, 20), "where": where, "strings": strings, "docs": rng.random() < 0.7}
        paged = rng.random() < 0.4
        return {"where": where, "strings": strings, "after": pick() if paged else None,
                "limit": rng.randint(1, 20) if paged and kind == "documents" else None, "page": rng.randint(1, 30)}

    def plan_http(self, kind: str, held: list, meta: dict, used: set, ops: list[Op]) -> Op:
        """An HTTP request to the server: args are (method, path, JSON body). Its adds write
        year as a number and a list of tags; a third of its replacements resend a text the
        id may hold (with its metadata, or new)."""
        rng, docs = self.rng, f"/v1/collections/{NAME}/documents"
        meta = {**meta, "year": int(meta["year"]), "tags": rng.sample(TIDES + ("mid",), rng.randint(1, 2))}
        if kind == "hadd":
            op = Op(kind, ["POST", docs], {f"k{nonce(rng)}": version(make_text(rng), meta)
                                           for _ in range(rng.randint(1, 3))})
        elif kind == "hreplace" and rng.random() < 0.35 and (texts := self.resendable(used, ops)):
            key, v = rng.choice(texts)
            op = Op(kind, ["POST", docs], {key: v if rng.random() < 0.5 else version(v[0], meta)})
            self.ran["hresend"] += 1
        elif kind == "hreplace":
            op = Op(kind, ["POST", docs], {rng.choice(held): version(make_text(rng), meta)})
        elif kind == "hdelete":
            key = rng.choice(held)
            return Op(kind, ["DELETE", f"{docs}/{key}", None], {key: ABSENT})
        elif kind == "hget":
            ask = self.ask(kind)
            return Op(kind, ["GET", f"{docs}/{urllib.parse.quote(ask['ids'][0], safe='')}", None], ask=ask)
        elif kind == "hdocuments":  # run_http adds the query string of each page
            return Op(kind, ["GET", docs, None], ask=self.ask(kind))
        elif kind == "hsimilar":
            ask = self.ask(kind)
            return Op(kind, ["POST", f"/v1/collections/{NAME}/similar",
                             {"id": ask["id"], "k": ask["k"], "where": ask["where"] or None, "docs": ask["docs"]}], ask=ask)
        else:  # a body's where: the library's object, or the --where strings
            where, strings = random_filter(rng)
            return Op(kind, ["POST", f"/v1/collections/{NAME}/search",
                             {"query": " ".join(rng.sample(WORDS, 3)), "k": 20, "docs": rng.random() < 0.5,
                              "mode": rng.choice(["dense", "lexical", "hybrid"]),
                              "where": rng.choice((where, strings)) or None}], ask={"where": where, "strings": strings})
        op.args.append({"documents": [{"id": k, "text": v[0], "metadata": meta_of(v)} for k, v in op.effects.items()]})
        return op

    def run_http(self, op: Op, logs: Path, n: int) -> None:
        """Send an HTTP op; rc 0 for a 2xx, else its status (DOWN: refused, NO_ANSWER: the
        connection closed unanswered). No answer while the server was being killed: killed.
        An `hdocuments` walks the pages, each past the last one's last_id, while has_more
        (and while ids advance): out is then the pages, a JSON list."""
        method, path, body = op.args
        op.start = time.monotonic()
        sent, pages, after = [], [], op.ask.get("after")
        while True:
            if op.kind == "hdocuments":
                query = [("limit", op.ask["page"])] + [("where", c) for c in op.ask["strings"]]
                path = op.args[1] + "?" + urllib.parse.urlencode(query + ([("after", after)] if after else []))
            self.send(op, method, path, body)
            sent.append(f"{method} {path} {json.dumps(body)}\n{op.rc}\n{op.out}\n{op.err}")
            if op.kind != "hdocuments" or op.rc != 0 or op.killed:
                break
            pages.append(json.loads(op.out))
            last = pages[-1]["last_id"]
            if not pages[-1]["has_more"] or last is None or (after is not None and last <= after):
                break
            after = last
        op.end = time.monotonic()
        (logs / f"{n}.out").write_text("\n".join(sent))
        if not op.killed and op.rc == 0:
            self.took[op.kind] = 0.7 * self.took[op.kind] + 0.3 * (op.end - op.start)
            if op.kind in ("hsearch", "hsimilar"):
                op.out = json.dumps(json.loads(op.out)["data"])  # the hits, as `search --json` prints them
            elif op.kind == "hdocuments":
                op.out = json.dumps(pages)

    def send(self, op: Op, method: str, path: str, body) -> None:
        """One HTTP request of ``op``: its rc, out, err (or killed)."""
        url = self.server.url
        try:
            if url is None:
                raise ConnectionRefusedError
            request = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with HTTP.open(request, timeout=self.args.hang) as response:
                    op.rc, op.out = 0, response.read().decode()
            except urllib.error.HTTPError as exc:
                op.out = exc.read().decode()  # IncompleteRead if the server died between headers and body
                op.rc = exc.code
                try:
                    error = json.loads(op.out)["error"]
                    op.err = f"error: {error['message']}\n" if set(error) == {"message", "type", "param", "code"} else op.out
                except (ValueError, KeyError, TypeError):
                    op.err = f"not OpenAI's error shape: {op.out[:300]}"
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                op.rc, op.err = NO_ANSWER, f"HUNG: no answer after {self.args.hang} s"
            elif isinstance(reason, ConnectionRefusedError):
                op.rc, op.err = DOWN, "error: the server is down\n"
            elif self.server.killed_at is not None:  # this round
                op.killed = True
            else:
                op.rc, op.err = NO_ANSWER, f"no answer, and the server was not killed: {reason!r}"

    def run(self, op: Op, logs: Path, n: int) -> None:
        if op.kind in HTTP_WEIGHTS:
            return self.run_http(op, logs, n)
        op.start = time.monotonic()
        with open(logs / f"{n}.out", "w+") as out, open(logs / f"{n}.err", "w+") as err:
            proc = subprocess.Popen(CLI + op.args, stdout=out, stderr=err, env=self.env, cwd=self.work,
                                    start_new_session=True)
            try:
                proc.wait(timeout=op.kill_at)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                op.killed = True
            try:
                op.rc = proc.wait(timeout=self.args.hang)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                op.rc, op.killed = proc.wait(), False
                err.write(f"\nHUNG: still running after {self.args.hang} s\n")
            try:  # a killed `build` leaves Ray's processes of its session
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            op.end = time.monotonic()
            out.seek(0), err.seek(0)
            op.out, op.err = out.read(), err.read()
        if not op.killed:
            self.took[op.kind] = 0.7 * self.took[op.kind] + 0.3 * (op.end - op.start)

    def round(self) -> None:
        self.rounds += 1
        logs = self.work / "logs" / f"r{self.rounds}"
        logs.mkdir(parents=True)
        self.mutate_folder()
        self.there = (self.coll / "store.sqlite").is_file()  # the collection, at the round's start
        if not self.there:
            self.sources = {()}  # (disk_soak.py's reset removes it between rounds)
        ops = self.plan()
        queue, lock = list(enumerate(ops)), threading.Lock()

        def worker():
            while True:
                with lock:
                    if not queue:
                        return
                    n, op = queue.pop(0)
                time.sleep(self.rng.uniform(0, 0.3))
                self.run(op, logs, n)

        threads = [threading.Thread(target=worker) for _ in range(self.rng.randint(2, self.args.jobs))]
        if self.server and self.server.url and self.rng.random() < self.args.server_kill:
            mid_write, delay = self.rng.random() < 0.75, self.rng.uniform(0, 8)
            threads.append(threading.Thread(target=self.server.kill_during, args=(ops, threads[:], mid_write, delay)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.commands += len(ops)
        self.kills += sum(op.killed for op in ops)
        (logs / "plan.json").write_text(json.dumps(
            [{"n": n, "kind": o.kind, "args": o.args, "rc": o.rc, "killed": o.killed,
              "start": round(o.start, 3), "end": round(o.end, 3), "kill_at": o.kill_at} for n, o in enumerate(ops)],
            indent=1))
        found = self.outcomes(ops) + self.check()
        if self.server:
            found += self.check_server(ops)
        if found:
            self.defects += [f"round {self.rounds}: {d}" for d in found]
            print(f"round {self.rounds}: DEFECT, logs in {logs}:\n  " + "\n  ".join(found), flush=True)
        else:
            shutil.rmtree(logs)

    # -- what the commands say ------------------------------------------------------------------
    def outcomes(self, ops: list[Op]) -> list[str]:
        """Each command's exit, each search's hits, what each read printed; then what each
        document may hold now."""
        found = []
        for op in ops:
            self.reads[op.kind] += op.kind in (*READS, "resync", "delpath")
            self.ran["filtered"] += bool(op.ask.get("where"))
            if op.kind == "backup":
                found += self.check_backup(op, ops)
            if op.kind in ("index", "rayindex", "resync") and op.rc == 0 and not op.killed:
                found += self.check_reuse(op, ops)
            if op.kind == "resync" and op.rc == 0 and not op.killed and not any(map(runs_of, op.ask["lists"])):
                found.append(f"index --name alone exited 0, and no list of sources it may have read has a path: "
                             f"{sorted(op.ask['lists'])[:2]}")
            if op.killed:
                continue
            if "Traceback" in op.err or (op.rc != 0 and not self.refused(op, ops)):
                found.append(f"{op.kind} exited {op.rc}: {op.err.strip()[-600:]}")
            elif op.rc != 0 and sum(line.startswith("error:") for line in op.err.splitlines()) != 1:
                found.append(f"{op.kind} exited {op.rc} without one error line: {op.err.strip()[-600:]}")
            if (op.kind in ("search", "hsearch") and op.rc == 0) or (op.kind in READS and op.rc in (0, 3, 404)):
                try:
                    found += self.check_read(op, ops) if op.kind in READS else self.check_hits(op, json.loads(op.out))
                    if op.kind in ("search", "hsearch"):
                        found += [f"{op.kind} --where {op.ask['strings']} hit {h['id']} ({h['metadata']})"
                                  for h in json.loads(op.out) if not matches(h["metadata"], op.ask["where"])]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    found.append(f"{op.kind} printed what the soak cannot read ({exc!r}): {op.out[:300]}")
        for key in set(self.history) | set(self.state):
            self.state[key] = self.settle(key, ops)
        self.sources_after = self.settle_sources(ops)
        return found

    def settle_sources(self, ops: list[Op]) -> set[tuple]:
        """The source lists the collection may hold after the round: the commands that change
        them applied in time order, those overlapping in either order, those not known to have
        finished (killed, refused) perhaps not at all; a resync by any list it may have read."""
        events = sorted(((op.start, op.end, self.source_changes(op), op.rc == 0 and not op.killed) for op in ops
                         if op.kind in SOURCES_CHANGED and (op.killed or op.rc is not None)), key=lambda e: e[:2])
        states, i = set(self.sources), 0
        while i < len(events):
            group, reach = [events[i]], events[i][1]
            while i + len(group) < len(events) and events[i + len(group)][0] < reach:
                group.append(events[i + len(group)])
                reach = max(reach, group[-1][1])
            i += len(group)
            seen = {(now, frozenset()) for now in states}
            frontier = set(seen)
            while frontier:
                ahead = {(change(now), done | {j}) for now, done in frontier
                         for j, e in enumerate(group) if j not in done for change in e[2]} - seen
                seen |= ahead
                frontier = ahead
            must = {j for j, e in enumerate(group) if e[3]}
            states = {now for now, done in seen if must <= done}
        return states

    def check_reuse(self, op: Op, ops: list[Op]) -> list[str]:
        """An `index` that exited 0 reused (its line's "N reused") what it must (reusable), and
        added, updated, left unchanged and removed what it must (expect_counts: a mailbox with
        messages appended embeds those alone), where that is certain: no other command of the
        round may have written files' documents or removed the collection."""
        got = int(m.group(1)) if (m := re.search(r"(\d+) reused", op.out)) else 0
        self.ran["reused"] += got
        if any(o is not op and o.kind in FILE_WRITERS and self.may_commit(o) for o in ops):
            return []
        found = []
        if op.ask.get("reuse") is not None:
            self.ran["reuse_checked"] += 1
            self.ran["reuse_expected"] += op.ask["reuse"]
            if got != op.ask["reuse"]:
                found.append(f"{op.kind} reused {got} documents, {op.ask['reuse']} expected: {op.out.strip()[-300:]}")
        said = re.search(r"added (\d+), updated (\d+), unchanged (\d+), removed (\d+)", op.out)
        if op.ask.get("counts") is not None:
            self.ran["counts_checked"] += 1
            if said is None or tuple(map(int, said.groups())) != op.ask["counts"]:
                found.append(f"{op.kind} said {said and said.group(0)!r}; added, updated, unchanged, removed "
                             f"{op.ask['counts']} expected: {op.out.strip()[-300:]}")
        return found

    def check_hits(self, op: Op, hits: list) -> list[str]:
        """Each hit of a search or similar is a slice of a text its document had, with the
        metadata it had with that text."""
        return [f"{op.kind} hit {h['id']} chunk {h['chunk']} is no text it ever had (with its metadata)"
                for h in hits if not any(v[0][h["start"]:h["end"]] == h["text"] and meta_of(v) == h["metadata"]
                                         for v in self.history.get(h["id"], ()))]

    def check_read(self, op: Op, ops: list[Op]) -> list[str]:
        """What a read (exit 0, or 3 / HTTP 404: something missing) printed, against what
        each document may have held during the round (``during``)."""
        self.checked[op.kind] += 1
        ask, found = op.ask, []
        missing = []
        if op.rc != 0:
            named = re.search(r"has no documents? (.*)", op.err)
            if named is None:  # the collection itself: not there yet, or an `rm` of this round removed it
                return [] if self.made_anew(ops) else [
                    f"{op.kind} says {op.err.strip()!r}, and the collection was there, no rm ran"]
            missing = re.findall(r"'([^']*)'", named.group(1))
            found += [f"{op.kind} says {key} is missing, and it was there all round"
                      for key in missing if ABSENT not in self.during(key, ops)]
            found += [f"{op.kind} names {key} missing, which it did not ask for"
                      for key in missing if key not in ask.get("ids", [ask.get("id")])]
            if op.kind in ("similar", "hsimilar"):
                return found
        if op.kind in ("similar", "hsimilar"):
            hits, where = json.loads(op.out), ask["where"]
            ids, scores = [h["id"] for h in hits], [h["score"] for h in hits]
            if ask["id"] in ids:
                found.append(f"{op.kind} of {ask['id']} lists it")
            if scores != sorted(scores, reverse=True) or len(hits) > ask["k"] or (ask["docs"] and len(set(ids)) < len(ids)):
                found.append(f"{op.kind}: {len(hits)} hits for k {ask['k']}, ids {ids}, scores {scores}: not ranked")
            found += [f"{op.kind} hit {h['id']} ({h['metadata']}) does not match {where}" for h in hits
                      if not matches(h["metadata"], where)]
            return found + self.check_hits(op, hits)
        if op.kind == "hdocuments":
            pages = json.loads(op.out)
            docs = [d for page in pages for d in page["data"]]
            found += [f"hdocuments: a page with has_more {p['has_more']} and last_id {p['last_id']} ends in "
                      f"{p['data'][-1]['id'] if p['data'] else None}" for p in pages
                      if p["last_id"] != (p["data"][-1]["id"] if p["data"] else None) or (p["has_more"] and not p["data"])]
            if pages and pages[-1]["has_more"]:
                found.append(f"hdocuments: the walk stopped at {pages[-1]['last_id']} with has_more (ids did not advance)")
        elif op.kind == "hget":
            docs = [json.loads(op.out)] if op.rc == 0 else []
        else:
            docs = [json.loads(line) for line in op.out.splitlines()]
        for d in docs:
            key, text, may = d["id"], d["text"], self.during(d["id"], ops) - {ABSENT}
            if text not in [v[0] for v in may]:
                kind = "an older text" if text in [v[0] for v in self.history.get(key, ())] else "a text no command wrote"
                found.append(f"{op.kind} printed {key} with {kind}: {str(text)[:200]!r}")
            elif version(text, d["metadata"]) not in may or d["source"] != source_of(key):
                found.append(f"{op.kind} printed {key} with metadata {d['metadata']} and source {d['source']}, "
                             f"its text's may be {[meta_of(v) for v in may if v[0] == text]}")
            if not (isinstance(d["chunks"], int) and d["chunks"] >= 1):
                found.append(f"{op.kind} printed {key} with {d['chunks']!r} chunks")
        ids = [d["id"] for d in docs]
        if op.kind in ("get", "hget"):
            if ids != [key for key in ask["ids"] if key not in missing]:
                found.append(f"{op.kind} of {ask['ids']} printed {ids}, missing {missing}")
            return found
        where, after, limit = ask["where"], ask["after"], ask["limit"]
        if ids != sorted(set(ids)):
            found.append(f"{op.kind}: ids not strictly increasing: {ids[:50]}")
        found += [f"{op.kind} after {after} listed {key}" for key in ids if after is not None and key <= after]
        found += [f"{op.kind} where {where} listed {d['id']} ({d['metadata']})" for d in docs
                  if not matches(d["metadata"], where)]
        if limit is not None and len(ids) > limit:
            found.append(f"{op.kind} with limit {limit} listed {len(ids)}")
        end = ids[-1] if limit is not None and len(ids) == limit else None
        sure = [key for key in self.state if (after is None or key > after) and (end is None or key <= end)
                and ABSENT not in (may := self.during(key, ops))
                and all(matches(meta_of(v), where) for v in may)]
        found += [f"{op.kind} left out {key}, there all round" for key in sorted(set(sure) - set(ids))[:5]]
        return found

    def refused(self, op: Op, ops: list[Op]) -> bool:
        """Whether ``op``'s exit is a refusal, no defect: one of its kind's benign exits, or a
        where on tide or year in a collection made anew this round (one knows no key before
        an add of one commits; so the sentinel writes both)."""
        if op.kind == "resync" and op.rc in (2, 3):  # no sources, or all gone: only if some list it may read is so
            return bool(op.ask.get("refusable")) or self.made_anew(ops)
        if op.kind == "delpath" and op.rc == 3:  # "no document with a path under": only if none may have been there
            return all(ABSENT in self.during(key, ops) for key in op.effects)
        return op.rc in self.benign[op.kind] or (bool(op.ask.get("where")) and op.rc in (2, 400) and self.made_anew(ops)
                                                 and re.search(r"unknown metadata key '(tide|year|from|tags|date)'",
                                                               op.err) is not None)

    def made_anew(self, ops: list[Op]) -> bool:
        """Whether the collection may have been missing, or made anew, during the round."""
        return not self.there or any(o.kind == "rm" for o in ops)

    def may_commit(self, op: Op) -> bool:
        """Whether ``op`` may have committed its writes: it exited 0, was killed, or failed
        in a way that is no refusal."""
        if op.kind == "resync" and op.rc in (2, 3) and not op.killed:
            return False  # refused before reading anything (refused says when that is no defect)
        return op.killed or op.rc == 0 or op.rc not in self.benign[op.kind] or \
            op.kind in ("resync", "delpath") and op.rc in (74, 75)  # stopped after a run, or the documents' write

    def during(self, key: str, ops: list[Op]) -> set:
        """The values ``key`` may have held at some moment of the round: what it held at the
        start, and what any command of the round that may have committed wrote to it."""
        may = set(self.state.get(key, {ABSENT}))
        for op in ops:
            if self.may_commit(op) and (op.kind == "rm" or key in op.effects):
                may.add(ABSENT if op.kind == "rm" else op.effects[key])
        return may

    def settle(self, key: str, ops: list[Op]) -> set:
        """The values ``key`` may hold after the round: the commands touching it applied in
        time order, those overlapping in time in either order, those killed or refused
        perhaps not at all."""
        events = []
        for op in ops:
            if op.kind == "rm":
                effect = ABSENT
            elif key in op.effects:
                effect = op.effects[key]
            else:
                continue
            if self.may_commit(op):
                events.append((op.start, op.end, effect, op.rc == 0 and not op.killed and key not in op.maybe))
        now = set(self.state.get(key, {ABSENT}))
        events.sort()
        i = 0
        while i < len(events):
            group, reach = [events[i]], events[i][1]
            while i + len(group) < len(events) and events[i + len(group)][0] < reach:
                group.append(events[i + len(group)])
                reach = max(reach, group[-1][1])
            effects = {e[2] for e in group}
            now = effects if all(e[3] for e in group) and len(group) == 1 else now | effects
            i += len(group)
        return now

    # -- the invariants -------------------------------------------------------------------------
    def check(self) -> list[str]:
        found = []
        for lock in (self.coll / "write.lock", self.coll / "ondisk-lock" / "build.lock"):
            if lock_held(lock):
                found.append(f"{lock.name} is held with nothing running")
        if (self.coll / "store.sqlite").is_file():
            found += self.check_store()
            found += self.check_open()
            info = subprocess.run(CLI + ["info", NAME, "--json"], env=self.env, capture_output=True, text=True)
            if info.returncode != 0:
                found.append(f"info exited {info.returncode}: {info.stderr.strip()[-400:]}")
            checked = subprocess.run(CLI + ["check", NAME], env=self.env, capture_output=True, text=True)
            if checked.returncode != 0:  # `semsearch check`: the store and its index file whole
                problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
                found.append(f"check exited {checked.returncode}: {problems} {checked.stderr.strip()[-400:]}")
        else:
            missing = [k for k, s in self.state.items() if ABSENT not in s]
            if missing:
                found.append(f"the collection is gone, with {len(missing)} documents written and not removed "
                             f"(e.g. {missing[0]})")
        found += self.check_sources()
        found += self.write_sentinel()
        leaked = [p.name for pattern in TEMP_PATTERNS for p in self.coll.glob(pattern)]
        if leaked:
            found.append(f"temporary files left after a write: {leaked}")
        return found

    def check_store(self, store: Path | None = None, state: dict | None = None) -> list[str]:
        """The store's documents against ``state`` (key -> the versions or ABSENT it may hold):
        the collection's after the round, by default."""
        state = self.state if state is None else state
        found, docs, by_doc = read_store(store or self.coll / "store.sqlite")
        for key, (doc_id, meta) in docs.items():
            chunks = by_doc.get(doc_id, [])
            text = next((t for t, m in state.get(key, set()) - {ABSENT} if meta_of((t, m)) == meta
                         and all(r[5] == t[r[3]:r[4]] for r in chunks) and chunks
                         and chunks[0][3] == 0 and chunks[-1][4] == len(t)), None)
            if key not in state:
                found.append(f"{key} is there, and no command wrote it")
            elif text is None:
                found.append(f"{key} holds none of the versions (text and metadata) it may hold ({len(chunks)} chunks)")
            elif [r[2] for r in chunks] != list(range(len(chunks))):
                found.append(f"{key}: chunk positions {[r[2] for r in chunks]}")
        for key, may in state.items():
            if ABSENT not in may and key not in docs:
                found.append(f"{key} was written by a command that exited 0, and is missing")
        return found

    def check_sources(self) -> list[str]:
        """The collection's sources (Collection.sources) are a list of well-formed entries, one
        of the lists the round's commands may have left (settle_sources): a killed `index` or
        `delete --path` leaves them old or new, never corrupt. The ledger then holds that one."""
        from semsearch.collection import Collection

        sources = []
        if (self.coll / "store.sqlite").is_file():
            try:
                with Collection.open(self.coll, embedder=self.embedder) as coll:
                    sources = coll.sources
            except Exception as exc:  # noqa: BLE001 - any failure to read them is what we look for
                return [f"reading the sources failed: {type(exc).__name__}: {exc}"]
        if not isinstance(sources, list) or not all(
                isinstance(s, dict) and set(s) == {"path", "glob", "exclude", "gitignore"} and isinstance(s["path"], str)
                and s["path"].startswith("/") and s["gitignore"] is False
                and all(isinstance(x, list) and all(isinstance(p, str) and p for p in x) for x in (s["glob"], s["exclude"]))
                for s in sources) or len({s["path"] for s in sources}) != len(sources):
            return [f"the collection's sources are not well-formed: {sources!r:.600}"]
        held = tuple((s["path"], tuple(s["glob"]), tuple(s["exclude"]), s["gitignore"]) for s in sources)
        self.ran["sources_checked"] += 1
        self.ran["sources_uncertain"] += len(self.sources_after) > 1
        found = [] if held in self.sources_after else [
            f"the collection's sources are {held}, none of the {len(self.sources_after)} lists the round may "
            f"leave (e.g. {sorted(self.sources_after)[:2]})"]
        self.sources = {held}
        return found

    def check_backup(self, op: Op, ops: list[Op]) -> list[str]:
        """A backup that exited 0, or was killed after its store was renamed into place, made
        a whole copy in which every document holds a version it held during the round and
        none that was there all round is missing, and which opens with its index in step.
        A killed one that left no store left nothing that stops the next backup into its
        folder, run now. Before ``settle``: the state at the round's start counts."""
        dest = Path(op.args[2])
        if not (dest / "store.sqlite").is_file():
            if op.rc == 0:
                return [f"backup exited 0 and left no store in {dest}"]
            if not op.killed:
                return []  # refused (the collection missing): check_store sees the rest
            again = subprocess.run(CLI + op.args, env=self.env, capture_output=True, text=True, timeout=self.args.hang)
            self.ran["backup_again"] += 1
            if again.returncode in self.benign["backup"]:
                return []
            if again.returncode != 0:
                return [f"a backup into the folder a killed one left exited {again.returncode}: "
                        f"{again.stderr.strip()[-400:]}"]
        self.ran["backup_checked"] += 1
        during = {key: self.during(key, ops) for key in set(self.state) | set(self.history)}
        found = [f"backup: {d}" for d in self.check_store(dest / "store.sqlite", during) + self.check_open(dest)]
        found += [f"backup left {p.name}" for pattern in TEMP_PATTERNS for p in dest.glob(pattern)]
        if not found:
            shutil.rmtree(dest)
        return found

    def check_open(self, path: Path | None = None) -> list[str]:
        """Open with the library: no index file out of step; the index is the store's chunks;
        every document is found by dense and by lexical search."""
        from semsearch.collection import Collection
        from semsearch.embedder import Embedder

        if self.embedder is None:
            self.embedder = Embedder.load(device="cpu", threads=1)
        found = []
        with semsearch_warnings() as records:
            try:
                with Collection.open(path or self.coll, embedder=self.embedder) as coll:
                    rows = coll.store.db.execute("SELECT c.id, d.key, c.vector FROM chunks c "
                                                 "JOIN documents d ON d.id = c.doc_id ORDER BY c.id").fetchall()
                    found += index_out_of_step(coll, [r[0] for r in rows], [r[2] for r in rows])
                    keys = sorted({r[1] for r in rows})
                    texts = {key: coll.store.db.execute(
                        "SELECT text FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.key = ? "
                        "ORDER BY position LIMIT 1", (key,)).fetchone()[0] for key in keys}
                    for i in range(0, len(keys), 200):
                        part = keys[i:i + 200]
                        dense = coll.search([texts[k] for k in part], k=10, mode="dense", docs=True)
                        lexical = coll.search([texts[k].split()[0] for k in part], k=3, mode="lexical")
                        for key, d, lx in zip(part, dense, lexical):
                            if key not in [h.id for h in d]:
                                found.append(f"{key} is not found by dense search for its own text")
                            if [texts.get(h.id) for h in lx][:1] != [texts[key]]:  # or a copy's
                                found.append(f"{key} is not found first by lexical search for its nonce word")
            except Exception as exc:  # noqa: BLE001 - any failure to open is what we look for
                found.append(f"opening the collection failed: {type(exc).__name__}: {exc}")
        for r in records:
            message = r.getMessage()
            if any(word in message for word in ("does not match", "corrupt", "newer than", "keeps being", "another collection")):
                found.append(f"warning on open: {message}")
        return found

    def check_server(self, ops: list[Op]) -> list[str]:
        """The server (restarted if it was killed; up all along, it serves a collection `rm`
        removed and a command made anew without a restart) finds every document in the store:
        lexical search for its nonce word; those this round wrote, and the sentinel the CLI
        just added, by dense search for their first chunk."""
        found = self.server.log_defects()
        if not (self.coll / "store.sqlite").is_file():
            return found
        db = sqlite3.connect(self.coll / "store.sqlite")
        try:
            texts = dict(db.execute("SELECT d.key, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id "
                                    "WHERE c.position = 0 ORDER BY d.key"))
        finally:
            db.close()
        keys = sorted(texts)
        touched = [k for k in keys if k == f"sentinel{self.sentinel}" or any(k in op.effects for op in ops)]
        if self.server.url is None:  # killed this round
            found += self.server.start()
            if self.server.url is None:
                return found
        elif any(op.kind == "rm" and op.rc == 0 for op in ops):
            self.server_follows += 1  # a round whose `rm` the server lived through
        try:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                lexical = self.server.post("search", {"queries": [texts[k].split()[0] for k in part],
                                                      "mode": "lexical", "k": 3})
                found += [f"the server does not find {key} first by its nonce word"
                          for key, r in zip(part, lexical["results"])
                          if [texts.get(h["id"]) for h in r["data"]][:1] != [texts[key]]]  # or a copy's
            for i in range(0, len(touched), 100):
                part = touched[i:i + 100]
                dense = self.server.post("search", {"queries": [texts[k] for k in part], "mode": "dense",
                                                    "k": 10, "docs": True})
                found += [f"the server does not find {key} by dense search for its own text"
                          for key, r in zip(part, dense["results"]) if key not in [h["id"] for h in r["data"]]]
        except urllib.error.HTTPError as exc:
            found.append(f"the server's check search answered {exc.code}: {exc.read().decode()[:300]}")
        except OSError as exc:
            found.append(f"the server's check search got no answer: {exc!r}")
        return found

    def write_sentinel(self) -> list[str]:
        """One more write, with nothing else running: it must get the lock at once and leave
        no temporary file."""
        self.sentinel += 1
        key, text = f"sentinel{self.sentinel}", f"{nonce(self.rng)} sentinel {self.sentinel} of the harbour."
        # tide, year, from, tags, date: so a collection the sentinel made knows the keys reads filter on
        meta = {"tide": "high", "year": "2015", "from": "sentinel@sea.example", "tags": "sentinel", "date": "2015-06-01"}
        done = subprocess.run(CLI + ["add", NAME, "--text", text, "--id", key]
                              + [a for k, v in meta.items() for a in ("--meta", f"{k}={v}")], env=self.env,
                              capture_output=True, text=True, timeout=self.args.hang)
        if done.returncode != 0:
            return [f"the sentinel add exited {done.returncode}: {done.stderr.strip()[-400:]}"]
        self.state[key] = {version(text, meta)}
        self.history[key] |= self.state[key]
        return []


def arguments(description: str, minutes: float) -> argparse.ArgumentParser:
    """The options of a soak built on Torture (this one, disk_soak.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=100, help="at most this many rounds")
    parser.add_argument("--minutes", type=float, default=minutes, help="stop starting rounds after this")
    parser.add_argument("--jobs", type=int, default=4, help="at most this many commands at once")
    parser.add_argument("--kill", type=float, default=0.4, help="share of commands SIGKILLed")
    parser.add_argument("--serve", action="store_true", help="drive a `semsearch serve` of the collection too")
    parser.add_argument("--server-kill", type=float, default=0.5, help="share of rounds the server is SIGKILLed in")
    parser.add_argument("--hang", type=float, default=180, help="seconds before a command counts as hung")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-going", action="store_true", help="count every defect instead of stopping")
    return parser


def main() -> int:
    parser = arguments(__doc__.split("\n\n")[0], minutes=20)
    parser.add_argument("--ray", action="store_true", help="run `build` and `index --ray` too (slow)")
    args = parser.parse_args()
    args.seed = args.seed if args.seed is not None else time.time_ns() % 2**31
    t = Torture(args)
    print(f"seed {args.seed}; work in {t.work}", flush=True)
    until = time.time() + 60 * args.minutes
    try:
        if t.server:  # a collection to serve from the start
            t.defects += t.write_sentinel() + t.server.start()
        while t.rounds < args.rounds and time.time() < until and not (t.defects and not args.keep_going):
            t.round()
            if t.rounds % 10 == 0:
                print(f"{t.rounds} rounds, {t.commands} commands, {t.kills} killed, {len(t.defects)} defects", flush=True)
    finally:
        if t.server:
            t.server.stop()
    reads = ", ".join(f"{k} {t.checked[k]}/{t.reads[k]}" for k in READS if t.reads[k])
    print(f"reads checked/run: {reads or 'none'}; texts resent: {t.ran['resend']} by add, {t.ran['hresend']} "
          f"by HTTP ({t.ran['resend_racing']} racing another write of the id); commands with a where: "
          f"{t.ran['filtered']}; backups checked: {t.ran['backup_checked']} ({t.ran['backup_again']} made again "
          "into a killed one's folder)", flush=True)
    print(f"folder: {t.ran['renamed']} renames (files or subfolders), {t.ran['copied']} copies, {t.ran['excluded']} "
          f"index runs with --exclude; reused {t.ran['reused']} documents in all (index exits 0), "
          f"{t.ran['reuse_expected']} of them in {t.ran['reuse_checked']} runs checked exactly", flush=True)
    print(f"files: {t.ran['globbed']} index runs with --glob, {t.ran['own_source']} of a subfolder or file, "
          f"{t.ran['mail_appended']} messages appended; {t.ran['counts_checked']} runs' added/updated/unchanged/"
          f"removed checked exactly; resyncs {t.reads['resync']} ({t.ran['resync_certain']} of certain sources), "
          f"delete --path {t.reads['delpath']}; sources checked {t.ran['sources_checked']} times "
          f"({t.ran['sources_uncertain']} of several possible lists)", flush=True)
    serving = (f", server killed {t.server_kills} times, started {t.server.starts}, served on through "
               f"{t.server_follows} rounds' rm" if t.server else "")
    print(f"done: {t.rounds} rounds, {t.commands} commands, {t.kills} killed{serving}, {len(t.defects)} defects "
          f"(seed {args.seed})", flush=True)
    if not t.defects:
        shutil.rmtree(t.work)
    return 1 if t.defects else 0


if __name__ == "__main__":
    sys.exit(main())
