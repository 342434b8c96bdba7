"""Store generations, reader snapshots and the index file: what makes readers replay,
re-snapshot or rebuild, and what must not.

Races are played as in test_threads.py: a reader's thread is held at a chosen call of the
library's own code while a second Collection on the same folder (another process, as far
as the store and the files go) writes, so each plays the same way every time.
"""
import logging
import os

import pytest

from semsearch import Collection
from test_threads import TEXTS, run_held

QUIET = "semsearch"


@pytest.fixture
def written(home, embedder):
    """A collection with TEXTS written and its index file saved, closed again."""
    with Collection.create("c", embedder=embedder) as c:
        c.add_texts(list(TEXTS.values()), ids=list(TEXTS))
    return home / "c"


def generation(coll) -> int:
    return coll.info()["generation"]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------- a reader raced by another writer
def test_an_index_file_saved_after_a_readers_snapshot_began_is_used_not_rebuilt(written, embedder, caplog):
    """A fresh reader whose snapshot began before another process committed and saved a
    newer index file took the file for one newer than its store (a store restored from a
    backup): it warned and rebuilt the whole index (minutes at 1M vectors)."""
    query = embedder.embed([TEXTS["doc3"]], kind="query")
    with Collection.open(written, embedder=embedder) as reader, \
            Collection.open(written, embedder=embedder) as writer, \
            caplog.at_level(logging.INFO, logger=QUIET):
        thread, outcome, go = run_held(lambda: reader.search_vectors(query, k=3), "_build_mark", "collection.py")
        writer.add_texts(["a note written while the reader was held"], ids=["new"])  # commits, saves the file
        go.set()
        thread.join()
        assert "error" not in outcome, repr(outcome.get("error"))
        assert outcome["result"][0][0].id == "doc3"
        assert not [m for m in caplog.messages if "rebuild" in m or "newer than" in m], caplog.messages
        assert reader.search_vectors(embedder.embed(["a note written while the reader was held"],
                                                    kind="query"), k=1)[0][0].id == "new"
        assert reader.info()["index"]["vectors"] == reader.info()["chunks"] == len(TEXTS) + 1


def test_a_build_published_after_a_readers_snapshot_began_is_mapped(written, embedder, caplog):
    """The same race with a `semsearch build`: the build was refused as newer than the
    store and, its pointer marked as seen, not mapped until the next build."""
    from semsearch.distributed import ondisk
    from semsearch.distributed.build import export_shards

    query = embedder.embed([TEXTS["doc3"]], kind="query")
    with Collection.open(written, embedder=embedder) as reader, \
            Collection.open(written, embedder=embedder) as writer, \
            caplog.at_level(logging.INFO, logger=QUIET):
        thread, outcome, go = run_held(lambda: reader.search_vectors(query, k=3), "_build_mark", "collection.py")
        writer.add_texts(["a note written while the reader was held"], ids=["new"])
        shards, gen = export_shards(writer, written / "shards")
        ondisk.publish(written, ondisk.build(shards, ondisk.next_folder(written), generation=gen, use_ray=False))
        go.set()
        thread.join()
        assert "error" not in outcome, repr(outcome.get("error"))
        assert outcome["result"][0][0].id == "doc3"
        assert not warnings_of(caplog), caplog.messages
        info = reader.info()["index"]
        assert info["kind"] == "ondisk" and info["built"] and info["vectors"] == len(TEXTS) + 1


def test_an_index_file_newer_than_the_store_itself_is_still_rebuilt(written, embedder, caplog):
    """A store restored from a backup older than its index file: the file is not used."""
    store = written / "store.sqlite"
    backup = store.read_bytes()  # closed: the WAL is checkpointed into it
    with Collection.open(written, embedder=embedder) as c:
        c.add_texts(["a note written after the backup"], ids=["after"])
        c.rebuild_index()  # the index file saved at that write's generation (one write alone leaves it)
    store.write_bytes(backup)
    for leftover in ("store.sqlite-wal", "store.sqlite-shm"):
        (written / leftover).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger=QUIET), Collection.open(written, embedder=embedder) as c:
        assert c.info()["index"]["vectors"] == c.info()["chunks"] == len(TEXTS)
        assert [h.id for h in c.search("a note written after the backup", k=len(TEXTS) + 1, mode="dense")
                if h.id == "after"] == []
    assert any("newer than its store" in m for m in warnings_of(caplog))


# ---------------------------------------------------------------- writes that change nothing
@pytest.mark.parametrize("call", [
    lambda c: c.delete(["no-such-id", "nor-this"]),
    lambda c: c.delete(where={"colour": "violet"}),
], ids=["unknown-ids", "where-matching-nothing"])
def test_a_delete_that_deletes_nothing_moves_no_generation(written, embedder, call):
    """Each generation makes every reader (other processes, a server) replay, and every
    writer save the index file again: a delete of nothing bumped it all the same."""
    with Collection.open(written, embedder=embedder) as c:
        c.add_texts(["a coloured note"], ids=["coloured"], metadata=[{"colour": "red"}])
        before = generation(c)
        assert call(c) == 0
        assert generation(c) == before


def test_a_delete_that_deletes_something_still_moves_the_generation(written, embedder):
    with Collection.open(written, embedder=embedder) as c:
        before = generation(c)
        assert c.delete(["doc1", "no-such-id"]) == 1
        assert generation(c) == before + 1
        assert c.info()["index"]["vectors"] == c.info()["chunks"]
    with Collection.open(written, embedder=embedder) as c:  # a new reader replays from the file
        assert "doc1" not in [h.id for h in c.search(TEXTS["doc1"], k=len(TEXTS), mode="dense")]


def test_a_write_that_changes_nothing_leaves_the_index_file_as_it_was(written, embedder):
    """Every write session saved the index file at its end, changed or not: at 1M vectors a
    delete of an unknown id rewrote (and fsynced) some 1.5 GB."""
    file = written / "index.faiss"
    with Collection.open(written, embedder=embedder) as c:
        c.search("harbour", k=1)  # the index loaded from the file
        saved = os.stat(file).st_ino
        c.delete(["no-such-id"])
        assert os.stat(file).st_ino == saved  # when a real change is saved: test_index_saves.py


# ---------------------------------------------------------------- what a replay reads
def test_a_replay_reads_the_new_chunks_not_every_chunk(home, embedder):
    """Replaying one new document read the whole chunks table (SQLite scanned it in id
    order rather than look the new generation up): every reader, on every write, paid a
    read of every vector (1.6 s at 1M chunks). Counted in SQLite's VM steps, not timed."""
    import numpy as np

    n = 3_000
    vectors = np.random.default_rng(0).standard_normal((n + 1, embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Collection.create("c", embedder=embedder) as writer:
        writer.add_vectors([f"v{i}" for i in range(n)], vectors[:n], [f"vector {i}" for i in range(n)])
        with Collection.open("c", embedder=embedder) as reader:
            reader.sync_index()
            writer.add_vectors(["last"], vectors[n:], ["the last vector"])
            steps = []
            reader.store.db.set_progress_handler(lambda: steps.append(1), 1)
            reader.sync_index()
            reader.store.db.set_progress_handler(None, 1)
            assert reader.search_vectors(vectors[n:], k=1)[0][0].id == "last"
    assert len(steps) < n / 2, f"{len(steps)} SQLite steps to replay one chunk of {n + 1}"
