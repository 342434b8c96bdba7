"""A randomized soak of ONE `Collection` object shared by threads in one process.

design.md promises that a server may share one Embedder and one Collection across threads.
Each round opens the collection once (`Collection.open_or_create`) and lets N threads share
it, each running a random mix of: add_texts_report (new ids, replaced ids, with metadata:
a group, a numeric year, a list of tags), resends of a document's text with its metadata
(unchanged: nothing written) or new metadata (only the metadata written), most on ids just
written so that they race with replacements and deletes, and races on purpose (a resend
with a long new text while another thread replaces the resent document: put_texts then
embeds inside its transaction, and whoever committed last must have written it), delete (by id, by where), search in every mode (dense / lexical / hybrid,
with and without where, docs=True), info(), the read paths (documents() walks: whole, with where, text=False, and
limit/after pages stitched together; get and similar of ids that exist, were just deleted
or are being written), filters with operators (ranges over year, $in, $ne, $nin, a tag
matched as a list's item), most of them one of the round's three, again and again between
writes (the filter cache's case: a stale cached filter gives wrong hits or misses one), now and then a second Collection object on the same folder in the
same process; with --processes a `semsearch add` process writes at the same time. Walks
read --page documents a snapshot (collection.DOCUMENT_PAGE, set for the run: a small page
makes a small collection's walk span many snapshots). Near the end of the round one thread
closes the shared object while the others still run, first reading a walk's first page and
then closing between pages: every call from then on must raise a CollectionError (a call
in flight may also finish), the walk's next page too.

Checked during the round, for every call:
  - each add's outcome (AddReport: added, replaced, metadata_updated, unchanged) is what
    the ledger says, for the calls whose documents nothing else wrote around them; a
    resent text keeps its added_at;
  - no exception other than the documented ones (CollectionBusy under the 10 s lock wait,
    CollectionError once closed, NoSuchDocument where allowed below), each one line; no
    thread still running two minutes past the time limit (a deadlock);
  - a search hit is a slice of a text its document was given, with that version's metadata,
    matching the where filter (design.md's rule: torture.matches); a search for a document's
    whole text, with a filter its metadata matched all along, finds it; no version that a write which ended before the search began
    had replaced or deleted (a search sees everything committed before it started); one
    hit per document where asked;
  - info() is consistent: the index holds as many vectors as the store chunks;
  - a walk's ids strictly increase (across stitched pages too); each document it yields
    is one version (text and metadata together; metadata alone with text=False) that a
    write began before its page was read and none surely replaced before the walk did,
    matching its where; every document there all along (its last write ended before the
    walk began, none began before it ended) is yielded;
  - get gives such a version, NoSuchDocument only when absent is such a state (deleted,
    or not yet committed); similar likewise, never the asked id, scores descending, at
    most k hits, each hit checked as a search's.
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

Prints one summary line (with how often put_texts embedded inside its transaction and how
often the filter cache answered: `counting`); exits 1 on any defect (each printed as found).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
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
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from torture import index_out_of_step, lock_held, matches, read_store, semsearch_warnings  # the kill -9 soak's checks

WORDS = ("harbour tide ferry boat master weather log dawn lantern rope anchor gull pier storm "
         "sail chart compass keel deck mast net fish salt wave reef cargo crew dock").split()
GROUPS = ("red", "green", "blue")
TAGS = ("alpha", "beta", "gamma", "delta")  # a list-valued field: a where matches it by any item
YEARS = (2000, 2030)  # a numeric field: where ranges over it
OUTCOMES = ("added", "replaced", "metadata_updated", "unchanged")  # AddReport's counts
TEMP_PATTERNS = (".index.faiss.*.tmp", ".store.sqlite.*.new*")
SETTINGS = {"chunk_tokens": 24, "overlap": 4}  # short chunks: several per document, cheaply
INF = math.inf
ABSENT = None
SKIP = "skip"  # what an operation returns when it did not call the collection
HANG = 120.0  # seconds past the time limit after which a thread still running is stuck
WRITES = ("add", "replace", "retag", "resend", "race", "delete", "delete_where", "second", "process_add")


def nonce(rng: random.Random) -> str:
    return "q" + "".join(rng.choice("bcdfghjklmnpstvwxz") for _ in range(9))


def make_text(rng: random.Random) -> str:
    """A unique text (its nonce word is what lexical search finds it by), 1 to ~6 chunks."""
    return f"{nonce(rng)} " + " ".join(rng.choice(WORDS) for _ in range(rng.choice((5, 12, 30, 60, 90)))) + "."


def random_where(rng: random.Random) -> dict:
    """A filter on the fields every write sets: equality, $ne, $in, ranges over year, a tag."""
    year = rng.randint(*YEARS)
    return rng.choice((
        lambda: {"group": rng.choice(GROUPS)},
        lambda: {"group": {"$ne": rng.choice(GROUPS)}},
        lambda: {"group": {"$in": rng.sample(GROUPS, 2)}},
        lambda: {"year": {"$gte": year}},
        lambda: {"year": {"$lt": year}},
        lambda: {"year": {"$gte": year - 8, "$lte": year}},
        lambda: {"tags": rng.choice(TAGS)},
        lambda: {"tags": {"$in": rng.sample(TAGS, 2)}},
        lambda: {"tags": {"$nin": [rng.choice(TAGS)]}, "year": {"$gt": year - 15}},
        lambda: {"group": rng.choice(GROUPS), "year": {"$lte": year}},
    ))()


def random_meta(rng: random.Random, tag: str, n: int) -> dict:
    return {"batch": tag, "group": rng.choice(GROUPS), "n": n, "year": rng.randint(*YEARS),
            "tags": rng.sample(TAGS, rng.randint(1, 2))}


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

    def possible(self, key: str, start: float, end: float) -> list:
        """The states a snapshot begun between ``start`` and ``end`` may see ``key`` in: a
        write's value if it began before ``end`` and no sure write replaced it before ``start``."""
        writes = [Write(key, ABSENT, -INF, -INF, True)] + self.of(key)
        return [w.value for w in writes if w.start < end
                and not any(o.sure and o.start > w.end and o.end < start for o in writes)]

    def steady(self, key: str, start: float, end: float) -> tuple | None:
        """The value ``key`` surely held all along from ``start`` to ``end`` (its last write
        before then ended before ``start``, after every earlier one; none began since), or None."""
        value = self.alone(key, [], start, end)
        return None if value is SKIP else value

    def alone(self, key: str, mine: list[Write], start: float, end: float):
        """The value ``key`` surely held from ``start`` to ``end`` with no write but ``mine``
        begun meanwhile (ABSENT: never written), or SKIP when other writes may interleave."""
        writes = [w for w in self.of(key) if w.start < end and not any(w is m for m in mine)]
        if not writes:
            return ABSENT
        last = writes[-1]
        if last.sure and last.end < start and all(w.end < last.start for w in writes[:-1]):
            return last.value
        return SKIP

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
        self.stuck = False
        self.deleted = deque(maxlen=32)  # ids just deleted (under the ledger's lock): get and similar ask for them
        self.recent = deque(maxlen=6)  # ids just written: replace, retag and resend race on them
        self.filters: list[dict] = []  # this round's filters: most filtered reads repeat one (the cache)
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
        self.filters = [random_where(self.rng) for _ in range(3)]
        close_after = self.rng.randint(self.ops * 3 // 5, self.ops - 1) if self.close_it else None
        workers = [threading.Thread(target=self.worker, name=f"soak-{i}", daemon=True,
                                    args=(coll, random.Random(s), deadline, closing, closed,
                                          close_after if i == 0 else None))
                   for i, s in enumerate(seeds)]
        if self.processes:
            workers.append(threading.Thread(target=self.cli_writer, name="soak-cli", daemon=True,
                                            args=(random.Random(seeds[0] + 1), deadline)))
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(0.0, deadline + HANG - time.monotonic()))
        if any(w.is_alive() for w in workers):  # daemons: the process may still end
            frames = sys._current_frames()
            for w in (w for w in workers if w.is_alive()):
                stack = traceback.extract_stack(frames[w.ident])[-4:] if w.ident in frames else []
                at = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
                self.defect(f"{w.name} still running {HANG:.0f} s past the time limit (a deadlock?) at {at}")
            self.stuck = True
            return
        if not closing.is_set():
            coll.close()
        self.check()

    def worker(self, coll, rng: random.Random, deadline: float, closing: threading.Event,
               closed: threading.Event, close_after: int | None) -> None:
        from semsearch.errors import CollectionBusy, CollectionError, SemsearchError
        kinds = ["add", "replace", "retag", "resend", "race", "delete", "delete_where", "search", "present", "info",
                 "second", "walk", "get", "similar"]
        weights = [12, 6, 5, 6, 3, 5, 3, 24, 12, 3, 1, 6, 8, 6]
        for n in range(self.ops):
            if time.monotonic() > deadline:
                return
            if n == close_after:
                self.close_between_pages(coll, closing, closed)
                continue
            kind = rng.choices(kinds, weights)[0]
            after_close = closed.is_set()
            try:
                touched = getattr(self, "op_" + kind)(coll, rng) != SKIP
                if after_close and touched and kind != "second":
                    self.defect(f"{kind} on a closed Collection returned instead of raising CollectionError")
                self.counts[kind] += 1
            except CollectionBusy as exc:
                self.one_line(kind, exc)
                self.counts["busy"] += 1
            except CollectionError as exc:
                self.one_line(kind, exc)
                if not closing.is_set():
                    self.defect(f"{kind}: CollectionError on an open collection: {exc}")
                self.counts["refused_closed"] += 1
            except SemsearchError as exc:  # NoSuchDocument the op did not expect, InvalidInput
                self.defect(f"{kind}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - any other exception is a defect
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.defect(f"{kind}{' (closing)' if closing.is_set() else ''}: {type(exc).__name__}: {exc} "
                            f"at {Path(where.filename).name}:{where.lineno}")

    def one_line(self, what: str, exc: Exception) -> None:
        if "\n" in str(exc).strip() or not str(exc).strip():
            self.defect(f"{what}: {type(exc).__name__} is not one line: {str(exc)!r}")

    def close_between_pages(self, coll, closing: threading.Event, closed: threading.Event) -> None:
        """Read a walk's first page, close the collection, read on: a full first page means
        another page is asked for, which must raise CollectionError ("closed"), nothing else."""
        from semsearch import collection
        from semsearch.errors import CollectionError
        page = collection.DOCUMENT_PAGE
        walk, first = None, []
        try:
            walk = coll.documents(text=False)
            first = list(itertools.islice(walk, page))
        except CollectionError:
            pass  # the worker's own checks judge these; here only what follows close() matters
        except Exception as exc:  # noqa: BLE001
            self.defect(f"a walk before close(): {type(exc).__name__}: {exc}")
        closing.set()  # a write in flight finishes first: close() waits for it
        coll.close()
        closed.set()
        self.counts["close"] += 1
        if len(first) < page:
            return
        try:
            doc = next(walk)
            self.defect(f"a walk's next page after close() gave {doc.id} instead of raising CollectionError")
        except StopIteration:
            self.defect("a walk's next page after close() ended the walk instead of raising CollectionError")
        except CollectionError as exc:
            self.one_line("walk after close", exc)
            if "closed" not in str(exc):
                self.defect(f"a walk's next page after close(): CollectionError without 'closed': {exc}")
            self.counts["walk_closed_between_pages"] += 1
        except Exception as exc:  # noqa: BLE001
            self.defect(f"a walk's next page after close(): {type(exc).__name__}: {exc}")

    # -- the operations ----------------------------------------------------------------------
    def _put(self, coll, keys: list[str], rng: random.Random, texts: list[str] | None = None,
             metas: list[dict] | None = None, watch: bool = False) -> list[Write]:
        """add_texts_report of ``keys``: new texts, or ``texts`` (and ``metas``) given. Each
        document's outcome is checked where nothing else wrote it around the call; with
        ``watch`` its added_at too (read before and after: it stays unless the text changed)."""
        tag = nonce(rng)
        texts = texts or [make_text(rng) for _ in keys]
        meta = metas or [random_meta(rng, tag, i) for i in range(len(keys))]
        start, before = time.monotonic(), self._added_at(coll, keys) if watch else {}
        made = self.ledger.begin([(k, (t, m)) for k, t, m in zip(keys, texts, meta)])
        try:
            report = coll.add_texts_report(texts, ids=keys, metadata=meta)
        except BaseException:
            self.ledger.end(made, False)
            raise
        self.ledger.end(made, True)
        with self.ledger.lock:
            for key, m in zip(keys, meta):  # a resent document keeps its batch
                if key not in self.ledger.tags.setdefault(m["batch"], []):
                    self.ledger.tags[m["batch"]].append(key)
            self.recent.extend(keys)
        if report.ids != keys:
            self.defect(f"add_texts_report returned ids {report.ids}, not {keys}")
        got = [getattr(report, name) for name in OUTCOMES]
        for name, n in zip(OUTCOMES, got):
            self.counts["outcome_" + name] += n
        if sum(got) != len(keys):
            self.defect(f"add_texts_report of {len(keys)} texts counts {dict(zip(OUTCOMES, got))}")
        after = self._added_at(coll, keys) if watch else {}
        end = time.monotonic()
        priors = [self.ledger.alone(k, made, start, end) for k in keys]
        if any(p is SKIP for p in priors):
            return made
        expected = Counter("added" if p is ABSENT else "replaced" if p[0] != t else
                           "metadata_updated" if p[1] != m else "unchanged" for p, t, m in zip(priors, texts, meta))
        self.counts["outcome_checked"] += 1
        if got != [expected[name] for name in OUTCOMES]:
            self.defect(f"add_texts_report of {keys} (nothing else writing them) counts {dict(zip(OUTCOMES, got))}, "
                        f"not {dict(expected)}")
        for key, prior, text in zip(keys, priors, texts):
            if watch and prior is not ABSENT and prior[0] == text and before.get(key) != after.get(key):
                self.defect(f"{key}: its text resent, added_at {before.get(key)} became {after.get(key)}")
        return made

    @staticmethod
    def _added_at(coll, keys: list[str]) -> dict[str, float]:
        return {d.id: d.added_at for d in coll.documents(ids=keys, text=False)}

    def _hot(self, rng: random.Random, n: int, written: bool = False) -> list[str]:
        """Up to ``n`` ids: most often ones just written (so writes race on them), else any
        (``written``: only ids some write gave a text)."""
        with self.ledger.lock:
            recent = list(self.recent)
        keys = [k for k in self.ledger.keys() if not written or any(w.value for w in self.ledger.of(k))]
        pool = [k for k in recent if k in keys] if recent and rng.random() < 0.6 else keys
        pool = pool or keys
        return rng.sample(sorted(set(pool)), min(len(set(pool)), n))

    def _latest(self, key: str) -> tuple:
        """The value of the latest write begun on ``key`` that gave it a text."""
        return [w for w in self.ledger.of(key) if w.value][-1].value

    def op_add(self, coll, rng):
        self._put(coll, [f"d{nonce(rng)}" for _ in range(rng.randint(1, 4))], rng)

    def op_replace(self, coll, rng):
        chosen = self._hot(rng, rng.randint(1, 3))
        if not chosen:
            return self.op_add(coll, rng)
        self._put(coll, chosen + [f"d{nonce(rng)}" for _ in range(rng.randint(0, 1))], rng)

    def op_retag(self, coll, rng):
        """Resend documents' own (latest begun) text with new metadata: only the metadata is
        written (added_at stays), after which a search must still find them (op_present)."""
        chosen = self._hot(rng, rng.randint(1, 3), written=True)
        if not chosen:
            return self.op_add(coll, rng)
        self._put(coll, chosen, rng, [self._latest(k)[0] for k in chosen], watch=True)

    def op_resend(self, coll, rng):
        """Resend documents' latest begun text and metadata as they are: unchanged, nothing
        written, unless another write changed them meanwhile (put_texts' race: embedded in
        the transaction). At times with a new document, whose embedding widens the race."""
        chosen = self._hot(rng, rng.randint(1, 3), written=True)
        if not chosen:
            return self.op_add(coll, rng)
        values = [self._latest(k) for k in chosen]
        texts, metas = [t for t, _ in values], [m for _, m in values]
        if rng.random() < 0.3:
            chosen, texts = chosen + [f"d{nonce(rng)}"], texts + [make_text(rng)]
            metas = metas + [random_meta(rng, nonce(rng), 0)]
        self._put(coll, chosen, rng, texts, metas, watch=True)

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
        text, meta = versions[-1].value
        # at times with a filter its metadata matches: most often one of the round's (cached)
        fits = [f for f in self.filters if matches(meta, f)] + [{"year": {"$lte": meta["year"]}}] * ("year" in meta)
        where = rng.choice(fits) if fits and rng.random() < 0.5 else None
        hits = coll.search(text, k=5, where=where, mode=rng.choice(("dense", "hybrid")), docs=rng.random() < 0.5)
        end = time.monotonic()
        self.check_hits(hits, start, end, where, False, "search for a whole text")
        writes = self.ledger.of(key)
        # surely there: a sure write of this text ended before the search, and every write that
        # may have come after it (started before the search ended) writes this text too (and
        # metadata the filter matches)
        last = [w for w in writes if w.sure and w.end < start and w.value and w.value[0] == text]
        if len(text.split()) > 6 or not last or not matches(last[-1].value[1], where) or any(
                w.start < end and w.end > last[-1].start and w is not last[-1]
                and (not w.value or w.value[0] != text or not matches(w.value[1], where))
                for w in writes):
            return
        self.counts["present_filtered" if where else "present_unfiltered"] += 1
        self.counts["present_checked"] += 1
        if key not in [h.id for h in hits]:
            self.defect(f"search for the whole text of {key}, there all along, did not find it "
                        f"{f'with where={where} ' if where else ''}(found {[h.id for h in hits]})")

    def op_race(self, coll, rng):
        """put_texts' race on purpose: resend a document's text together with a long new one
        (embedded before the lock: a wide window) while another thread replaces that document
        with a short text (embedded at once, committed first): the resend, which found its
        text held, finds another in its transaction and embeds its own there."""
        from semsearch.errors import CollectionBusy, CollectionError
        chosen = self._hot(rng, 1, written=True)
        if not chosen:
            return self.op_add(coll, rng)
        key, (text, meta) = chosen[0], self._latest(chosen[0])
        rival_rng, rivals = random.Random(rng.random()), []
        short = f"{nonce(rival_rng)} {rival_rng.choice(WORDS)}."

        def rival():
            try:
                rivals.extend(self._put(coll, [key], rival_rng, [short]))
            except (CollectionBusy, CollectionError):
                pass  # busy, or closed meanwhile: judged as any write's (the ledger has it as unsure)
            except Exception as exc:  # noqa: BLE001
                self.defect(f"race's rival replace: {type(exc).__name__}: {exc}")
        other = threading.Thread(target=rival, name=f"{threading.current_thread().name}-rival", daemon=True)
        start = time.monotonic()
        other.start()
        try:
            long, new = f"{nonce(rng)} " + " ".join(rng.choice(WORDS) for _ in range(240)) + ".", f"d{nonce(rng)}"
            made = self._put(coll, [key, new], rng, [text, long], [meta, random_meta(rng, nonce(rng), 0)])
        finally:
            other.join()
        self.check_race(coll, key, new, made + rivals, start, hashlib.sha256(short.encode()).hexdigest())

    def check_race(self, coll, key: str, new: str, ours: list[Write], start: float, rival: str) -> None:
        """Whoever committed last wrote ``key``: a chunk's generation is its write's, and the
        resend wrote ``new`` in its transaction. If the rival's text is there, the rival
        must have committed after the resend (only checked when no other write touched the
        two ids meanwhile)."""
        if len(ours) < 3:  # the rival did not commit
            return
        with coll.store.snapshot():
            rows = {k: (digest, gen) for k, digest, gen in coll.store.db.execute(
                "SELECT d.key, d.content_hash, MAX(c.gen) FROM documents d JOIN chunks c ON c.doc_id = d.id "
                "WHERE d.key IN (?, ?) GROUP BY d.key", (key, new))}
        others = [w for k in (key, new) for w in self.ledger.of(k) if not any(w is o for o in ours)]
        if key not in rows or new not in rows or any(w.end >= start for w in others):
            return
        self.counts["race_checked"] += 1
        if rows[key][0] == rival and rows[key][1] < rows[new][1]:
            self.defect(f"{key}: resent in a write committed at generation {rows[new][1]}, after the rival's "
                        f"replacement ({rows[key][1]}), and it holds the rival's text")

    def op_delete(self, coll, rng):
        keys = self.ledger.keys()
        chosen = rng.sample(keys, min(len(keys), rng.randint(1, 3))) + [f"missing-{nonce(rng)}"]
        made = self.ledger.begin([(k, ABSENT) for k in chosen])
        with self.ledger.lock:
            self.deleted.extend(chosen)
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
        with self.ledger.lock:
            self.deleted.extend(keys)
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
        where = self._where(rng, 0.5)
        docs = rng.random() < 0.4
        if keys and rng.random() < 0.7:  # a known document's nonce word (lexical finds it)
            versions = [w for w in self.ledger.of(rng.choice(keys)) if w.value]
            query = versions[-1].value[0].split()[0] if versions else rng.choice(WORDS)
        else:
            query = " ".join(rng.sample(WORDS, 2))
        k = rng.randint(1, 15)
        for _ in range(rng.randint(2, 4) if where and rng.random() < 0.4 else 1):  # a tenant's filter, again
            start = time.monotonic()
            hits = coll.search(query, k=k, where=where, mode=mode, docs=docs)
            self.check_hits(hits, start, time.monotonic(), where, docs or mode == "lexical", f"{mode} search")
            query = " ".join(rng.sample(WORDS, 2))

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

    def _where(self, rng: random.Random, share: float) -> dict | None:
        """A filter for ``share`` of the reads once a write with metadata committed: most often
        one of the round's few (the same filter again and again between writes: the cache's
        case), else a new one."""
        if rng.random() >= share or not self._committed():
            return None
        self.counts["filtered"] += 1
        return rng.choice(self.filters) if rng.random() < 0.75 else random_where(rng)

    def _committed(self) -> bool:
        """Whether a document with metadata was surely written (a where names a known key)."""
        return any(w.sure and w.value for key in self.ledger.keys() for w in self.ledger.of(key))

    def _some_id(self, rng: random.Random) -> str | None:
        """An id that exists, was just deleted, or is being written (or never was)."""
        with self.ledger.lock:
            deleted = list(self.deleted)
        if deleted and rng.random() < 0.3:
            return rng.choice(deleted)
        keys = self.ledger.keys()
        return rng.choice(keys) if keys else None

    def op_walk(self, coll, rng):
        """A documents() walk: whole, with where, text=False, or limit/after pages stitched."""
        from semsearch import collection
        from semsearch.errors import CollectionError
        variant = rng.choice(("all", "where", "no_text", "paged"))
        where = self._where(rng, 1.0) if variant == "where" else None
        text = variant != "no_text"
        page = collection.DOCUMENT_PAGE
        got = []  # (document, when its page's read began, when it was yielded)
        start = time.monotonic()
        try:
            if variant == "paged":
                limit, after = rng.randint(1, 3 * page), None
                while True:
                    began = time.monotonic()
                    part = list(coll.documents(after=after, limit=limit))
                    got += [(d, began, time.monotonic()) for d in part]
                    if len(part) > limit:
                        self.defect(f"documents(limit={limit}) gave {len(part)} documents")
                    if len(part) < limit:
                        break
                    after = part[-1].id
            else:
                walk, began = coll.documents(where=where, text=text), start  # reads the first page
                for i in itertools.count():
                    asked = time.monotonic()
                    doc = next(walk, None)
                    if doc is None:
                        break
                    began = asked if i and i % page == 0 else began  # this next() read a page
                    got.append((doc, began, time.monotonic()))
        except CollectionError as exc:
            if got:  # closed between pages: one line, saying so
                self.one_line("walk", exc)
                if "closed" not in str(exc):
                    self.defect(f"walk: CollectionError between pages without 'closed': {exc}")
                self.counts["walk_closed_between_pages"] += 1
            raise
        end = time.monotonic()
        self.counts["walked"] += len(got)
        self.check_walk(got, start, end, where, text, variant)

    def check_walk(self, got: list, start: float, end: float, where, text: bool, variant: str) -> None:
        what = f"{variant} walk"
        ids = [d.id for d, _, _ in got]
        if any(a >= b for a, b in zip(ids, ids[1:])):
            bad = next((a, b) for a, b in zip(ids, ids[1:]) if a >= b)
            self.defect(f"{what}: ids not strictly increasing: {bad[0]!r} then {bad[1]!r}")
        for doc, began, yielded in got:
            possible = [v for v in self.ledger.possible(doc.id, began, yielded) if v is not ABSENT]
            if text and (doc.text, doc.metadata) not in possible:
                texts, metas = [v[0] for v in possible], [v[1] for v in possible]
                self.defect(f"{what}: {doc.id} {doc.text!r:.40} {doc.metadata} is no version it may hold "
                            f"(text {'is' if doc.text in texts else 'is not'} one, metadata "
                            f"{'is' if doc.metadata in metas else 'is not'} one)")
            if not text and (doc.text is not None or doc.metadata not in [v[1] for v in possible]):
                self.defect(f"{what}: {doc.id} text={doc.text!r:.40} metadata {doc.metadata} is no version's")
            if doc.chunks < 1:
                self.defect(f"{what}: {doc.id} has {doc.chunks} chunks")
            if not matches(doc.metadata, where):
                self.defect(f"{what}: {doc.id} with metadata {doc.metadata} does not match where={where}")
        found = set(ids)
        for key in self.ledger.keys():
            value = self.ledger.steady(key, start, end)
            if value is not ABSENT and key not in found and matches(value[1], where):
                self.defect(f"{what}: {key}, there all along, was not yielded")
        self.counts["walk_checked"] += 1

    def op_get(self, coll, rng):
        from semsearch.errors import NoSuchDocument
        key = self._some_id(rng)
        if key is None:
            return SKIP
        start = time.monotonic()
        try:
            doc = coll.get(key)
            value = (doc.text, doc.metadata)
        except NoSuchDocument as exc:
            self.one_line("get", exc)
            doc, value = None, ABSENT
        possible = self.ledger.possible(key, start, time.monotonic())
        if doc is not None and doc.id != key:
            self.defect(f"get({key!r}) gave the document {doc.id!r}")
        if value not in possible:
            self.defect(f"get({key!r}): NoSuchDocument, though it was surely there" if value is ABSENT else
                        f"get({key!r}): {doc.text!r:.40} {doc.metadata} is no version it may hold")
        self.counts["get_absent" if value is ABSENT else "get_found"] += 1

    def op_similar(self, coll, rng):
        from semsearch.errors import NoSuchDocument
        key = self._some_id(rng)
        if key is None:
            return SKIP
        where = self._where(rng, 0.4)
        k, docs = rng.randint(1, 12), rng.random() < 0.6
        start = time.monotonic()
        try:
            hits = coll.similar(key, k=k, where=where, docs=docs)
        except NoSuchDocument as exc:
            self.one_line("similar", exc)
            if ABSENT not in self.ledger.possible(key, start, time.monotonic()):
                self.defect(f"similar({key!r}): NoSuchDocument, though it was surely there")
            self.counts["similar_absent"] += 1
            return
        end = time.monotonic()
        if not any(v is not ABSENT for v in self.ledger.possible(key, start, end)):
            self.defect(f"similar({key!r}) answered for a document that was surely not there")
        if key in [h.id for h in hits]:
            self.defect(f"similar({key!r}) gave the asked document among its hits")
        scores = [h.score for h in hits]
        if scores != sorted(scores, reverse=True) or len(hits) > k:
            self.defect(f"similar({key!r}, k={k}): {len(hits)} hits, scores not descending: {scores}")
        self.check_hits(hits, start, end, where, docs, "similar")

    def cli_writer(self, rng: random.Random, deadline: float) -> None:
        """`semsearch add` processes writing to the collection while the threads run."""
        cli = str(Path(sys.executable).with_name("semsearch"))
        for _ in range(self.ops):
            if time.monotonic() > deadline:
                return
            keys = self.ledger.keys()
            key = rng.choice(keys) if keys and rng.random() < 0.5 else f"p{nonce(rng)}"
            text, tag, group, year = make_text(rng), nonce(rng), rng.choice(GROUPS), rng.randint(*YEARS)
            made = self.ledger.begin([(key, (text, {"batch": tag, "group": group, "year": str(year)}))])
            run = subprocess.run([cli, "add", str(self.path), "--text", text, "--id", key, "--meta", f"batch={tag}",
                                  "--meta", f"group={group}", "--meta", f"year={year}"],
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
            if not matches(hit.metadata, where):
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
         processes: bool = False, page: int = 16, log=print) -> Soak:
    """Run rounds on the collection at ``path`` until ``rounds`` or ``seconds``; returns the
    Soak. documents() reads ``page`` documents a snapshot meanwhile (then the library's own)."""
    from semsearch import collection
    s = Soak(Path(path), embedder, seed, threads, ops, processes, log=log)
    end = time.monotonic() + seconds
    default, collection.DOCUMENT_PAGE = collection.DOCUMENT_PAGE, page
    try:
        with counting(s.counts):
            for _ in itertools.repeat(None, rounds):
                if time.monotonic() > end or s.stuck:
                    break
                s.round(end)
    finally:
        collection.DOCUMENT_PAGE = default
    return s


@contextlib.contextmanager
def counting(counts: Counter):
    """Count, without changing what they do, how often put_texts embeds inside its transaction
    (race_embedded: a text another writer changed after the caller looked) and how often a
    filter's allowed ids come from the cache (filter_cache_hit) or are matched (_miss): a soak
    that never reaches those branches proves nothing about them."""
    from semsearch import collection, ingest
    put_texts, get = ingest.Writer.put_texts, collection._AllowedCache.get

    def counted_put_texts(self, docs, embed):
        def counted_embed(stale):
            counts["race_embedded"] += len(stale)
            return embed(stale)
        return put_texts(self, docs, counted_embed)

    def counted_get(self, key, compute):
        missed = []
        found = get(self, key, lambda: missed.append(1) or compute())
        counts["filter_cache_miss" if missed else "filter_cache_hit"] += 1
        return found

    ingest.Writer.put_texts, collection._AllowedCache.get = counted_put_texts, counted_get
    try:
        yield
    finally:
        ingest.Writer.put_texts, collection._AllowedCache.get = put_texts, get


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=40, help="calls per thread per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", action="store_true", help="`semsearch add` processes write too")
    parser.add_argument("--page", type=int, default=16, help="documents a walk reads per snapshot")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from semsearch import Embedder
    home = Path(os.environ.get("SEMSEARCH_HOME") or tempfile.mkdtemp(prefix="threads-soak-"))
    path = home / f"threads-{args.seed}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    started = time.monotonic()
    s = soak(path, Embedder.load(device="cpu"), args.rounds, args.seconds, args.seed, args.threads,
             args.ops, args.processes, args.page)
    c = s.counts
    derived = {"close", "present_checked", "walked", "walk_checked", "walk_closed_between_pages",
               "get_found", "get_absent", "similar_absent", "filtered", "present_filtered", "present_unfiltered",
               "outcome_checked", "race_embedded", "race_checked", "filter_cache_hit", "filter_cache_miss",
               *("outcome_" + o for o in OUTCOMES)}  # counted in an operation's own count too
    ops = sum(v for k, v in c.items() if k not in derived)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in derived)
    outcomes = ", ".join(f"{o} {c['outcome_' + o]}" for o in OUTCOMES)
    print(f"threads_soak: seed {args.seed}, {s.rounds} rounds, {args.threads} threads, {ops} operations "
          f"({detail}); walks {c['walk']}, documents yielded {c['walked']}, gets {c['get']}, "
          f"whole-text searches checked {c['present_checked']} ({c['present_filtered']} with a filter), "
          f"similars {c['similar']}, writes {sum(c[k] for k in WRITES)} (documents: "
          f"{outcomes}; {c['outcome_checked']} calls' "
          f"outcomes checked; {c['race_embedded']} embedded in the transaction, {c['race_checked']} races' order checked), filtered reads {c['filtered']} "
          f"(filter cache: {c['filter_cache_hit']} hits, {c['filter_cache_miss']} matched), {len(s.defects)} defects, "
          f"{time.monotonic() - started:.0f} s")
    return 1 if s.defects else 0


if __name__ == "__main__":
    sys.exit(main())
