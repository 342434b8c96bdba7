"""One Collection shared by threads (what a server does): races between its threads.

A thread is held at a chosen point of the library's own code (a trace hook that waits on an
event: nothing replaced) while another thread writes or closes, so each race is played
the same way every time. benchmarks/threads_soak.py plays them at random, at length.
"""
import sys
import threading
from pathlib import Path

import pytest

from semsearch import Collection
from semsearch.errors import CollectionError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

TEXTS = {f"doc{i}": f"{word} harbour tide ferry number {i}" for i, word in
         enumerate("lantern anchor gull pier storm sail chart compass keel deck".split())}


def held_at(function: str, module: str, reached: threading.Event, go: threading.Event):
    """A trace function that holds this thread when it first calls ``function`` of
    ``module`` (a file name) until ``go`` is set."""
    def trace(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name == function and code.co_filename.endswith(module) \
                and not reached.is_set():
            reached.set()
            go.wait()
    return trace


def run_held(target, function: str, module: str):
    """Start ``target`` on a thread held at ``function``; returns (thread, outcome, go)
    once it is held. ``outcome`` gets "result" or "error"."""
    reached, go, outcome = threading.Event(), threading.Event(), {}

    def body():
        sys.settrace(held_at(function, module, reached, go))
        try:
            outcome["result"] = target()
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=body)
    thread.start()
    assert reached.wait(60), f"the thread never called {function}"
    return thread, outcome, go


@pytest.fixture
def coll(home, embedder):
    c = Collection.create("threads", embedder=embedder)
    c.add_texts(list(TEXTS.values()), ids=list(TEXTS))
    yield c
    c.close()


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_search_finds_a_document_replaced_while_it_runs(coll, mode):
    """A search whose snapshot predates a replacement must still find the document: the
    index another thread replayed past the snapshot had dropped its old chunk."""
    text = TEXTS["doc3"]
    coll.search(text, mode=mode)  # the index in step with the store
    thread, outcome, go = run_held(lambda: coll.search(text, k=3, mode=mode), "reading", "collection.py")
    coll.add_texts([text], ids=["doc3"], metadata=[{"edited": True}])  # same text, new metadata
    go.set()
    thread.join()
    assert "error" not in outcome
    assert "doc3" in [h.id for h in outcome["result"]]


def test_info_counts_the_vectors_of_its_own_snapshot(coll):
    """info() of one snapshot: an index replayed past it by another thread counted more
    vectors than its store had chunks."""
    coll.info()
    thread, outcome, go = run_held(coll.info, "_sync_index", "collection.py")
    coll.add_texts(["a new note about the weather"], ids=["new"])
    go.set()
    thread.join()
    info = outcome["result"]
    assert info["index"]["vectors"] == info["chunks"]


def test_connections_of_threads_that_ended_are_closed(coll):
    """A server's threadpool ends idle threads and starts new ones for the next burst; each
    new thread opens its own SQLite connection. The store kept every connection it ever
    opened, so they grew by a burst's threads with every burst, for good. (Counted by the
    -wal file each holds open: SQLite keeps a closed connection's store.sqlite descriptor
    for reuse while others hold locks on it.)"""
    import os

    def connections() -> int:
        wal = str(coll.store.path.resolve()) + "-wal"
        return sum(1 for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == wal)

    counts = []
    for _ in range(5):  # bursts of 6 threads that each search once and end
        threads = [threading.Thread(target=coll.search, args=("lantern",), kwargs={"mode": "lexical"})
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts.append(connections())
    assert max(counts) <= 6 + 1, f"connections open after each burst of 6 threads: {counts}"


def test_close_waits_for_a_search_in_progress(coll):
    """close() from one thread while another searches: the search ends (closing its
    connection under it raised sqlite3.ProgrammingError, and could crash the process), and
    later calls get a CollectionError."""
    coll.search("lantern", mode="hybrid")
    thread, outcome, go = run_held(lambda: coll.search("lantern", mode="hybrid"), "search", "search.py")
    closer = threading.Thread(target=coll.close)
    closer.start()
    closer.join(5)  # before the fix it closed the connection at once; now it waits for the search
    go.set()
    thread.join()
    closer.join()
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["result"]
    for call in (lambda: coll.search("lantern"), coll.info, coll.count, lambda: coll.add_texts(["late"])):
        with pytest.raises(CollectionError):
            call()


def test_close_from_a_thread_while_others_read_and_write(coll):
    """close() from a worker thread while others search and write: every call ends in a
    result or a CollectionError, never another exception."""
    errors, go = [], threading.Barrier(5)

    def work(i):
        go.wait()
        for n in range(30):
            try:
                if i == 0 and n == 5:
                    coll.close()
                elif i == 1:
                    coll.add_texts([f"note {n} of writer {i}"], ids=[f"w{i}-{n}"])
                else:
                    coll.search(f"harbour {n}", k=3, mode=("dense", "lexical", "hybrid")[n % 3])
            except CollectionError:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_threads_soak_finds_no_defect(home, embedder):
    """A small run of benchmarks/threads_soak.py: threads sharing one Collection add,
    replace, resend texts as they are or with new metadata (racing a replacement too),
    delete, search and walk with operator filters (most repeated, so the filter cache
    answers) and close it; each add's outcome is checked where nothing else wrote its
    documents; store, FTS5 and index agree after each round."""
    from threads_soak import soak

    result = soak(home / "soak", embedder, rounds=2, seconds=60, seed=7, threads=6, ops=20, log=lambda m: None)
    assert result.rounds == 2
    assert not result.defects, result.defects[:5]
    assert all(result.counts[read] for read in ("walk", "walked", "get", "similar")), result.counts
    # which kinds a short run reaches depends on the threads' timing (a close early in a round
    # refuses the rest): the soak in benchmarks/ checks each outcome; here, that they run at all
    assert result.counts["filtered"] and result.counts["resend"] + result.counts["race"], result.counts


def test_close_while_a_walk_is_between_pages(home, embedder):
    """close() from one thread while another's documents() walk is between pages (it holds
    no snapshot there, so close() need not wait for it): the walk's next page raises a
    one-line CollectionError, not a sqlite3 error, and nothing hangs."""
    import itertools

    import numpy as np

    from semsearch.collection import DOCUMENT_PAGE

    n = DOCUMENT_PAGE + 1
    vectors = np.random.default_rng(0).standard_normal((n, embedder.dim)).astype(np.float32)
    c = Collection.create("paged", embedder=embedder)
    c.add_vectors([f"d{i:04d}" for i in range(n)], vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                  [f"text {i}" for i in range(n)])
    read, go, outcome = threading.Event(), threading.Event(), {}

    def walk():
        pages = c.documents()
        outcome["first"] = list(itertools.islice(pages, DOCUMENT_PAGE))
        read.set()
        go.wait()
        try:
            outcome["next"] = next(pages)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    walker = threading.Thread(target=walk, daemon=True)
    walker.start()
    assert read.wait(60)
    closer = threading.Thread(target=c.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "close() waits for a walk that is between pages"
    go.set()
    walker.join(60)
    assert len(outcome["first"]) == DOCUMENT_PAGE and "next" not in outcome
    error = outcome.get("error")
    assert isinstance(error, CollectionError) and "closed" in str(error), repr(error)
    assert "\n" not in str(error)
