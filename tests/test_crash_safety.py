"""Real SIGKILLs of real writer processes: what was committed survives, nothing is half there.

Children inherit SEMSEARCH_CACHE (set by the model_folder fixture) and SEMSEARCH_HOME.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from semsearch.chunking import iter_chunks
from semsearch.collection import STORE_FILE, Collection
from semsearch.ingest import FLUSH_CHUNKS

CHUNK_TOKENS, OVERLAP = 32, 8

SENTENCE = ("Record {i} says: the harbour master counted the boats, checked the tide tables and "
            "wrote the weather into the log before the ferry left at dawn. ")

ADDER = textwrap.dedent("""
    import sys
    from semsearch.collection import Collection
    path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    coll = Collection.open(path) if sys.argv[4] == "open" else Collection.create(
        path, chunk_tokens={ct}, overlap={ov})
    for i in range(first, last):
        text = " ".join([{sentence!r}.format(i=f"u{{i}}x")] * 3)
        coll.add_texts([text], ids=[f"doc{{i}}"])
        print(f"doc{{i}}", flush=True)
""").format(ct=CHUNK_TOKENS, ov=OVERLAP, sentence=SENTENCE)


def adder_text(i):
    return " ".join([SENTENCE.format(i=f"u{i}x")] * 3)


def expected_chunks(text, tokenizer, chunk_tokens=CHUNK_TOKENS, overlap=OVERLAP):
    return sum(1 for _ in iter_chunks([text], tokenizer, chunk_tokens, overlap))


def check_consistent(coll, expected: dict):
    """Every document has all its chunks, and the index holds exactly the store's chunks."""
    per_doc = coll.store.chunks_per_document()
    for key, n in per_doc.items():
        assert n == expected[key], f"{key} has {n} of its {expected[key]} chunks"
    info = coll.info()
    assert info["index"]["vectors"] == info["chunks"] == sum(per_doc.values())
    hits = coll.search("harbour master boats tide", k=info["chunks"] + 10)
    assert len(hits) == info["chunks"]  # every chunk is found, none twice, no stale ids
    assert len({h.chunk_id for h in hits}) == len(hits)
    return per_doc


def test_kill_during_add_texts_keeps_every_returned_document(home, embedder):
    path = home / "c"
    child = subprocess.Popen([sys.executable, "-c", ADDER, str(path), "0", "1000", "create"],
                             stdout=subprocess.PIPE, text=True)
    printed = []
    try:
        while len(printed) < 8:
            line = child.stdout.readline()
            assert line, f"the child exited early ({child.wait()})"
            printed.append(line.strip())
        time.sleep(0.05)  # land inside a later add_texts call
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        printed += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    expected = {f"doc{i}": expected_chunks(adder_text(i), embedder.tokenizer) for i in range(40)}
    assert min(expected.values()) > 1
    with Collection.open(path) as coll:
        keys = set(coll.store.document_hashes())
        assert set(printed) <= keys
        assert len(keys) <= len(printed) + 1  # at most the call the kill interrupted
        check_consistent(coll, expected)
        for key in printed:  # each document is found by its own unique word
            i = key[3:]
            hits = coll.search(f"u{i}x", k=1, mode="lexical")
            assert hits and hits[0].id == key

    # a new process carries on where the killed one stopped
    n = len(keys)
    subprocess.run([sys.executable, "-c", ADDER, str(path), str(n), str(n + 3), "open"],
                   check=True, stdout=subprocess.DEVNULL)
    with Collection.open(path) as coll:
        assert set(coll.store.document_hashes()) == keys | {f"doc{i}" for i in range(n, n + 3)}
        check_consistent(coll, expected)


N_FILES = 60
# Tiny chunks keep the embedding cheap while the run still spans several flushes of
# FLUSH_CHUNKS chunks: documents are committed at each flush, so a kill can land
# between commit points.
INDEX_CHUNK_TOKENS, INDEX_OVERLAP = 8, 2
FILE_TEXT = " ".join([SENTENCE] * 8)


def write_files(folder):
    folder.mkdir()
    for i in range(N_FILES):
        (folder / f"f{i:02d}.txt").write_text(FILE_TEXT.format(i=f"file{i}"))


def index_cmd(folder):
    return [sys.executable, "-m", "semsearch", "index", str(folder), "--name", "big",
            "--chunk-tokens", str(INDEX_CHUNK_TOKENS), "--overlap", str(INDEX_OVERLAP)]


def stored_documents(store):
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_kill_during_index_then_reindex_completes(home, tmp_path, embedder, stop):
    """SIGTERM (a scheduler's stop, `timeout`) unwinds as Ctrl-C does and says how many
    documents are stored; before, the process died on it silently."""
    folder = tmp_path / "docs"
    write_files(folder)
    expected = {str(folder / f"f{i:02d}.txt"): expected_chunks(
        FILE_TEXT.format(i=f"file{i}"), embedder.tokenizer, INDEX_CHUNK_TOKENS, INDEX_OVERLAP)
        for i in range(N_FILES)}
    assert sum(expected.values()) > 2 * FLUSH_CHUNKS  # several flushes, so several commit points

    store = home / "big" / STORE_FILE
    child = subprocess.Popen(index_cmd(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and child.poll() is None:
            if store.is_file() and stored_documents(store) > 0:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"index finished before it could be killed: {child.stderr.read()}"
        os.kill(child.pid, stop)
        code, err = child.wait(60), child.stderr.read().decode()
    finally:
        child.kill()
        child.wait()

    with Collection.open("big") as coll:
        committed = coll.count()
        assert 0 < committed < N_FILES
        check_consistent(coll, expected)
    if stop == signal.SIGTERM:
        assert code == 130 and "Traceback" not in err, err[-800:]
        assert err.strip().splitlines()[-1] == \
            f"interrupted: the {committed} document(s) this run wrote before it are stored", err[-800:]

    result = subprocess.run(index_cmd(folder), capture_output=True, text=True, check=True)
    assert f"added {N_FILES - committed}," in result.stdout, result.stdout
    assert f"unchanged {committed}," in result.stdout
    with Collection.open("big") as coll:
        assert coll.count() == N_FILES
        assert check_consistent(coll, expected) == expected
        hits = coll.search("file37", k=1, mode="lexical")
        assert hits[0].source == str(folder / "f37.txt")


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from semsearch.collection import Collection
    with Collection.open(sys.argv[1]) as coll:
        coll.add_texts([f"old note {i} about ships" for i in range(20)])
        os.kill(os.getpid(), signal.SIGKILL)  # the WAL keeps its frames
""")


def test_new_collection_where_an_old_store_left_its_wal_starts_empty(home):
    """`rm` killed between unlinking store.sqlite and its -wal (or a store deleted by
    hand after a crash) leaves a WAL that SQLite would replay into the next store."""
    path = home / "c"
    Collection.create(path).close()
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)])
    assert child.returncode == -signal.SIGKILL
    assert (path / (STORE_FILE + "-wal")).stat().st_size > 0
    (path / STORE_FILE).unlink()
    with Collection.create(path) as coll:
        coll.add_texts(["a brand new note"], ids=["new"])
        assert set(coll.store.document_hashes()) == {"new"}
    with Collection.open(path) as coll:
        assert [h.id for h in coll.search("ships", k=5)] == ["new"]


def test_next_write_removes_an_index_temp_file_a_killed_save_left(home):
    """kill -9 while the index file is written leaves its temporary file (as large as the
    index); the next writer, holding the lock, knows no one else is writing one."""
    path = home / "c"
    with Collection.create(path) as coll:
        coll.add_texts(["a first note about tides"], ids=["a"])
        orphan = path / ".index.faiss.k1ll3d.tmp"
        orphan.write_bytes(os.urandom(4096))
        coll.add_texts(["a second note about boats"], ids=["b"])
        assert not orphan.exists()
        assert [p.name for p in path.iterdir() if p.name.startswith(".")] == []


def test_a_create_after_a_killed_rm_uses_nothing_the_removed_collection_left(home, embedder, caplog):
    """`rm` deletes the store first; killed right after, it left the old index file and
    build: the collection created there next warned that its index file belonged to
    another collection, and mapped the old build, whose vectors answered under the new
    store's chunk ids (a warning only where the counts happened to differ)."""
    import logging
    from semsearch.distributed import ondisk
    from semsearch.distributed.build import export_shards

    path = home / "c"
    with Collection.create(path, embedder=embedder) as old:
        old.add_texts(["ships in the harbour", "tide tables", "the ferry at dawn"], ids=["a", "b", "c"])
        shards, generation = export_shards(old, path / "shards")
        ondisk.publish(path, ondisk.build(shards, ondisk.next_folder(path), generation=generation,
                                          use_ray=False))
    (path / STORE_FILE).unlink()  # rm's first step; killed there
    with caplog.at_level(logging.WARNING, logger="semsearch"):
        with Collection.create(path, embedder=embedder) as new:
            new.add_texts(["a brand new note about lanterns"], ids=["new"])
            hits = new.search("a brand new note about lanterns", k=5, mode="dense")
            assert [h.id for h in hits] == ["new"] and hits[0].cosine > 0.99
            assert new.info()["index"]["kind"] == "memory"
    assert not [r.getMessage() for r in caplog.records]
    assert not [p.name for p in path.iterdir() if p.name.startswith(("ondisk", "."))]  # old builds gone
