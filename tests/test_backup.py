"""`semsearch backup`: a copy of a collection at one instant, made while others write.

The copy is checked as a collection of its own (real store, index file, model): same
documents, same hits, and under a concurrent writer, always one committed state whole.
"""
import logging
import os
import sqlite3
import threading

import numpy as np
import pytest

from semsearch.collection import INDEX_FILE, STORE_FILE, Collection
from semsearch.errors import CollectionExists, InvalidInput

from test_cli import assert_one_line_error, ok, run

TEXTS = {
    "cats": "Cats are small furry pets that purr, chase mice and sleep most of the day.",
    "rockets": "The rocket launch carried a satellite into orbit around the Earth.",
    "bread": "Knead the dough, let it rise overnight, then bake the loaf in a hot oven.",
    "guitar": "She tuned the strings of her acoustic guitar before the concert began.",
}
BATCH = 250  # documents a writer commits at once: a few batches pass SAVE_FLOOR, so index files are saved


def stored(coll) -> list[tuple]:
    return [(d.id, d.text, d.metadata, d.added_at) for d in coll.documents()]


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_backup_holds_the_same_documents_and_answers_the_same(home, embedder):
    with Collection.create("src", embedder=embedder) as src:
        src.add_texts(list(TEXTS.values()), ids=list(TEXTS), metadata=[{"n": i} for i in range(len(TEXTS))])
        src.delete("bread")
        result = src.backup("copy")
        want_docs, want_hits = stored(src), src.search("a pet animal", k=3, mode="dense")
        want_info = src.info()
    assert result["path"] == str((home / "copy").resolve()) and result["index_file"] is True
    assert (result["documents"], result["chunks"]) == (3, 3)
    assert (home / "copy" / INDEX_FILE).is_file()
    assert not [p.name for p in (home / "copy").iterdir() if p.name.startswith(".")]  # no scratch left
    with Collection.open("copy", embedder=embedder) as copy:
        assert stored(copy) == want_docs
        hits = copy.search("a pet animal", k=3, mode="dense")
        assert [(h.id, round(h.score, 6)) for h in hits] == [(h.id, round(h.score, 6)) for h in want_hits]
        info = copy.info()
    assert (info["documents"], info["generation"], info["model"]) == \
        (want_info["documents"], want_info["generation"], want_info["model"])
    assert result["generation"] == want_info["generation"]


def test_backup_under_a_writer_is_always_one_committed_state(home, embedder, caplog):
    """A writer (another Collection, its own connections) commits batches of 250 documents
    while backups are taken: each copy holds whole batches, a prefix of them, and its index
    file is never newer than its store (opening it warns of nothing)."""
    with Collection.create("src", embedder=embedder) as coll:
        coll.add_texts(["seed text"], ids=["seed"])
    batches, done = 14, threading.Event()
    failures = []

    def write():
        try:
            with Collection.open("src", embedder=embedder) as w:
                for b in range(batches):
                    ids = [f"b{b:02d}-{i:03d}" for i in range(BATCH)]
                    w.add_vectors(ids, unit_vectors(BATCH, b), [f"text {x}" for x in ids],
                                  metadata={"batch": b})
        except BaseException as exc:  # seen by the test, not lost in the thread
            failures.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    copies = []
    with Collection.open("src", embedder=embedder) as src:
        copies.append(src.backup("copy0"))  # before the first batch
        writer.start()
        while not done.is_set() and len(copies) < 40:
            copies.append(src.backup(f"copy{len(copies)}"))
        writer.join(timeout=120)
        copies.append(src.backup(f"copy{len(copies)}"))  # and one after the last commit
    assert not failures, failures
    caplog.set_level(logging.WARNING, logger="semsearch")
    seen = set()
    for result in copies:
        with Collection.open(result["path"], embedder=embedder) as copy:
            per_batch = {}
            for doc in copy.documents(text=False):
                if doc.id != "seed":
                    per_batch[doc.metadata["batch"]] = per_batch.get(doc.metadata["batch"], 0) + 1
            assert set(per_batch) == set(range(len(per_batch))), per_batch  # a prefix of the batches
            assert set(per_batch.values()) <= {BATCH}, per_batch  # each one whole
            assert copy.count() == result["documents"] == 1 + BATCH * len(per_batch)
            assert copy.info()["generation"] == result["generation"]
            if per_batch:  # the index answers for every vector of the copy, and only those
                last = max(per_batch)
                probe = unit_vectors(BATCH, last)[:1]
                assert copy.search_vectors(probe, k=1)[0][0].id == f"b{last:02d}-000"
                assert copy.info()["index"]["vectors"] == copy.count()
            seen.add(len(per_batch))
    assert min(seen) == 0 and max(seen) == batches  # the first copy holds no batch, the last all
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records]


def test_backup_refuses_an_existing_collection_itself_and_a_file(home, embedder, tmp_path):
    with Collection.create("src", embedder=embedder) as src:
        src.add_texts(["one text"], ids=["a"])
        src.backup("copy")
        with pytest.raises(CollectionExists):
            src.backup("copy")
        with pytest.raises(InvalidInput, match="itself"):
            src.backup(home / "src")
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(InvalidInput, match="is a file"):
            src.backup(tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "x"


def test_backup_clears_what_a_killed_backup_left(home, embedder):
    """A backup killed before its store was renamed into place leaves scratch files and
    maybe the index file, never a store: the folder is no collection, and the next backup
    into it removes them and completes."""
    with Collection.create("src", embedder=embedder) as src:
        src.add_texts(list(TEXTS.values()), ids=list(TEXTS))
        src.backup("first")
        dest = home / "again"
        dest.mkdir()
        (dest / ".store.sqlite.dead.new").write_bytes(b"half a store")
        (dest / ".store.sqlite.dead.new-journal").write_bytes(b"x")
        (dest / ".index.faiss.dead.tmp").write_bytes(b"half an index")
        os.link(home / "first" / INDEX_FILE, dest / INDEX_FILE)  # an index renamed in, its store not yet
        (dest / "notes.txt").write_text("the user's own file")
        assert "again" not in [c for c in os.listdir(home) if (home / c / STORE_FILE).is_file()]
        src.backup(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([INDEX_FILE, STORE_FILE, "notes.txt", "write.lock"])
    with Collection.open(dest, embedder=embedder) as copy:
        assert copy.count() == len(TEXTS)
        assert copy.search("orbit", k=1, mode="dense")[0].id == "rockets"


def test_backup_of_an_ondisk_collection_copies_the_store_and_searches(home, embedder):
    with Collection.create("disk", index="ondisk", embedder=embedder) as src:
        src.add_texts(list(TEXTS.values()), ids=list(TEXTS))
        result = src.backup("disk-copy")
    assert result["index_file"] is False
    with Collection.open("disk-copy", embedder=embedder) as copy:
        assert copy.info()["index"]["kind"] == "ondisk"
        assert copy.search("a loaf in the oven", k=1, mode="dense")[0].id == "bread"


def test_cli_backup_then_restore(home, embedder):
    with Collection.create("notes", embedder=embedder) as src:
        src.add_texts(list(TEXTS.values()), ids=list(TEXTS), metadata={"team": "a"})
    out = ok(run("backup", "notes", "notes-saved")).output
    assert out.startswith(f"backed up notes to {home / 'notes-saved'}: 4 documents, 4 chunks")
    ok(run("rm", "notes", "--yes"))
    ok(run("backup", "notes-saved", "notes"))  # restore: the copy backed up under the old name
    found = ok(run("search", "notes", "furry pet", "-k", "1", "--where", "team=a", "--json")).output
    assert '"id": "cats"' in found
    data = __import__("json").loads(ok(run("backup", "notes", home.parent / "elsewhere", "--json")).output)
    assert data["documents"] == 4 and data["source"] == str((home / "notes").resolve())
    with sqlite3.connect(home.parent / "elsewhere" / STORE_FILE) as db:  # a plain SQLite file, whole
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cli_backup_errors_are_one_line(home, embedder):
    with Collection.create("notes", embedder=embedder) as src:
        src.add_texts(["one text"], ids=["a"])
    ok(run("backup", "notes", "saved"))
    assert_one_line_error(run("backup", "notes", "saved"), 75, "already exists")
    assert_one_line_error(run("backup", "notes", "notes"), 2, "itself")
    assert_one_line_error(run("backup", "nope", "x"), 3, "no collection 'nope'")
