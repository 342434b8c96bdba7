"""Collection against the real model, ONNX Runtime, FAISS and SQLite, on tiny corpora."""
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import pytest
from filelock import FileLock

from semsearch.chunking import iter_chunks
from semsearch.collection import INDEX_FILE, LOCK_FILE, Collection
from semsearch.errors import CollectionBusy, CollectionExists, InvalidInput, ModelError
from semsearch.index import VectorIndex

TOPICS = {
    "cats": "Cats are small furry pets that purr, chase mice and sleep most of the day.",
    "rockets": "The rocket launch carried a satellite into orbit around the Earth.",
    "bread": "Knead the dough, let it rise overnight, then bake the loaf in a hot oven.",
    "stocks": "Shares on the stock exchange fell sharply after the interest rate decision.",
    "guitar": "She tuned the strings of her acoustic guitar before the concert began.",
}

# Long enough for several 32-token chunks; each sentence names its document.
LONG = ("Paragraph {n} of document {name}: the committee met on a rainy Tuesday to review "
        "the budget, the staffing plan and the roadmap for the coming year. Everyone agreed "
        "that the old servers must be replaced before winter, and that the library needs "
        "longer opening hours. The meeting of {name} ended late in the evening. ")


def small(name="c", **kw):
    kw.setdefault("chunk_tokens", 32)
    kw.setdefault("overlap", 8)
    return Collection.create(name, **kw)


def n_chunks(text, coll):
    cfg = coll.config
    return sum(1 for _ in iter_chunks([text], coll.embedder.tokenizer, cfg["chunk_tokens"], cfg["overlap"]))


# ---------------------------------------------------------------- adding and searching texts
def test_dense_search_ranks_paraphrase_matching_doc_first(home):
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        hits = coll.search("a space vehicle lifted off to put a spacecraft in orbit", k=3)
        assert hits[0].id == "rockets"
        assert hits[0].text == TOPICS["rockets"]
        assert coll.search("baking a loaf at home", k=1)[0].id == "bread"


def test_where_filter_returns_exactly_the_matching_docs(home):
    with small() as coll:
        texts = [f"Note number {i} about {list(TOPICS.values())[i % 5]}" for i in range(30)]
        tags = ["x" if i in (4, 17, 28) else "y" for i in range(30)]
        coll.add_texts(texts, ids=[f"d{i}" for i in range(30)], metadata=[{"tag": t} for t in tags])
        for mode in ("dense", "lexical", "hybrid"):
            hits = coll.search("note about cats and rockets", k=3, where={"tag": "x"}, mode=mode)
            assert sorted(h.id for h in hits) == ["d17", "d28", "d4"], mode
            assert all(h.metadata == {"tag": "x"} for h in hits)


def test_unknown_where_key_raises_collection_error(home):
    with small() as coll:
        coll.add_texts(["hello world"], metadata={"tag": "x"})
        with pytest.raises(InvalidInput, match="colour"):
            coll.search("hello", where={"colour": "red"})


def test_metadata_keys_named_source_or_id_are_filtered_as_metadata_dot_key(home, tmp_path):
    """A JSONL record's own "source" field (a common one) could not be filtered: where
    source= is the file the document was read from."""
    corpus = tmp_path / "records.jsonl"
    corpus.write_text('{"id": "a", "text": "cats sleep all day", "source": "wiki", "team": "x"}\n'
                      '{"id": "b", "text": "cats chase mice", "source": "blog", "team": "y"}\n')
    with small() as coll:
        coll.add_files([corpus])

        def found(where):
            return sorted(h.id for h in coll.search("cats", where=where, k=5))

        assert found({"metadata.source": "wiki"}) == [f"{corpus}#a"]
        assert found({"metadata.id": "b"}) == found({"id": f"{corpus}#b"}) == [f"{corpus}#b"]
        assert found({"metadata.team": "y", "source": str(corpus)}) == [f"{corpus}#b"]
        assert found({"source": "wiki"}) == []  # source= is still the file
        with pytest.raises(InvalidInput, match="metadata.source"):
            coll.search("cats", where={"colour": "red"})


def test_delete_removes_doc_from_dense_and_lexical_results(home):
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        assert coll.delete(["guitar"]) == 1
        assert coll.count() == 4
        for mode in ("dense", "lexical", "hybrid"):
            hits = coll.search("acoustic guitar strings concert", k=10, mode=mode)
            assert "guitar" not in {h.id for h in hits}, mode
        assert coll.delete(["guitar"]) == 0
    with Collection.open("c") as coll:  # and after reopening (index file + store agree)
        assert "guitar" not in {h.id for h in coll.search("acoustic guitar", k=10, mode="hybrid")}


def test_readding_same_id_replaces_the_document(home):
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        coll.add_texts(["Volcanoes erupt molten lava and ash high into the sky."], ids=["cats"])
        assert coll.count() == 5
        hits = coll.search("lava from an erupting volcano", k=1)
        assert hits[0].id == "cats" and "Volcanoes" in hits[0].text
        for mode in ("dense", "lexical"):
            assert all("purr" not in h.text for h in coll.search("furry pets that purr", k=10, mode=mode))
        assert coll.info()["chunks"] == coll.info()["index"]["vectors"]


def test_docs_true_gives_one_hit_per_document(home):
    with small() as coll:
        # one document whose many chunks all match the query better than any other document
        long_text = "".join(LONG.format(n=n, name="alpha") for n in range(8))
        assert n_chunks(long_text, coll) > 3 * 5  # more chunks than k * 5
        coll.add_texts([long_text, TOPICS["cats"], TOPICS["bread"], TOPICS["stocks"]],
                       ids=["alpha", "cats", "bread", "stocks"])
        hits = coll.search("the committee reviewed the budget and the servers", k=3, docs=True)
        ids = [h.id for h in hits]
        assert len(ids) == len(set(ids))
        assert ids[0] == "alpha"
        assert len(ids) == 3, f"4 documents exist but docs=True, k=3 returned {ids}"


def test_nonpositive_k_and_empty_query_raise_invalid_input(home):
    with small() as coll:
        coll.add_texts(["hello world"])
        for k in (0, -1):
            with pytest.raises(InvalidInput):
                coll.search("hello", k=k)
        for query in ("", "   ", [], ["ok", ""]):
            with pytest.raises(InvalidInput):
                coll.search(query)


def test_open_with_different_model_raises_model_error(home):
    small().close()
    with pytest.raises(ModelError, match="some/other-model"):
        Collection.open("c", model="some/other-model")
    Collection.open("c").close()  # its own model still opens it


# ---------------------------------------------------------------- files
def make_folder(root):
    root.mkdir()
    (root / "a.txt").write_text("Cats are small furry pets that purr. " * 6)
    (root / "b.md").write_text("# Rockets\n\nThe rocket launch carried a satellite into orbit.\n")
    (root / "c.html").write_text("<html><head><title>Bread</title><script>var x=1;</script></head>"
                                 "<body><p>Knead the dough and bake the loaf.</p></body></html>")
    (root / "d.jsonl").write_text('{"id": "s1", "text": "Shares fell on the exchange.", "year": 2020}\n'
                                  '{"id": "s2", "text": "The guitar concert began late.", "year": 2021}\n')
    (root / "e.bin").write_bytes(bytes(range(256)))
    (root / "f.txt").write_bytes(b"\0\1\2binary\0" * 10)
    (root / "g.txt").write_text("")
    return root


def test_add_files_counts_added_and_skipped(home, tmp_path):
    folder = make_folder(tmp_path / "docs")
    with small() as coll:
        report = coll.add_files([folder])
        assert report.added == 5  # a.txt, b.md, c.html, 2 jsonl records
        assert coll.count() == 5
        reasons = {os.path.basename(s): r for s, r in report.skipped}
        assert set(reasons) == {"e.bin", "f.txt", "g.txt"}
        assert reasons["f.txt"] == "binary file" and reasons["g.txt"] == "empty file"
        assert report.chunks == coll.info()["chunks"] > 5  # a.txt has several chunks
        assert "var x" not in " ".join(h.text for h in coll.search("bread", k=10, mode="lexical"))
        hits = coll.search("stock market", k=1, where={"year": "2020"})
        assert hits[0].id.endswith("#s1")


def test_rerunning_add_files_embeds_nothing(home, tmp_path):
    folder = make_folder(tmp_path / "docs")
    with small() as coll:
        coll.add_files([folder])
        gen = coll.store.generation()
        report = coll.add_files([folder])
        assert (report.added, report.updated, report.removed, report.chunks) == (0, 0, 0, 0)
        assert report.unchanged == 5
        assert coll.store.generation() == gen  # nothing was written


def test_modified_file_is_updated(home, tmp_path):
    folder = make_folder(tmp_path / "docs")
    with small() as coll:
        coll.add_files([folder])
        (folder / "b.md").write_text("Volcanoes erupt molten lava and ash.\n")
        report = coll.add_files([folder])
        assert (report.added, report.updated, report.unchanged, report.removed) == (0, 1, 4, 0)
        assert coll.search("erupting volcano", k=1)[0].source == str(folder / "b.md")
        assert all("rocket" not in h.text for h in coll.search("rocket satellite", k=10, mode="lexical"))


def test_deleted_file_is_removed_with_its_chunks(home, tmp_path):
    folder = make_folder(tmp_path / "docs")
    with small() as coll:
        coll.add_files([folder])
        before = coll.info()["chunks"]
        a_chunks = coll.store.chunks_per_document()[str(folder / "a.txt")]
        (folder / "a.txt").unlink()
        report = coll.add_files([folder])
        assert report.removed == 1 and report.unchanged == 4
        assert str(folder / "a.txt") not in coll.store.document_hashes()
        assert coll.info()["chunks"] == before - a_chunks
        assert all(h.source != str(folder / "a.txt") for h in coll.search("furry cats purr", k=20))


def test_add_files_on_sibling_folder_with_underscore_keeps_other_folder(home, tmp_path):
    """documents_under() must not treat '_' or '%' in a folder name as LIKE wildcards."""
    one, two = tmp_path / "my_docs", tmp_path / "myXdocs"
    one.mkdir()
    two.mkdir()
    (one / "a.txt").write_text("Cats are small furry pets that purr.")
    (two / "b.txt").write_text("The rocket launch carried a satellite into orbit.")
    with small() as coll:
        coll.add_files([two])
        report = coll.add_files([one])
        assert report.removed == 0
        assert coll.count() == 2


# ---------------------------------------------------------------- index types and index files
def test_hnsw_collection_is_hnsw_at_once_and_deletes(home):
    with small(index="hnsw") as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        assert coll.info()["index"]["spec"].startswith("HNSW")
        coll.delete(["rockets"])
        for _ in range(2):
            ids = {h.id for h in coll.search("rocket launch into orbit", k=10)}
            assert "rockets" not in ids and len(ids) == 4
            coll = Collection.open("c")  # again from the saved file
        coll.close()


def test_missing_index_file_is_rebuilt_with_warning(home, caplog):
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
    (home / "c" / INDEX_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="semsearch"), Collection.open("c") as coll:
        ids = {h.id for h in coll.search("anything at all", k=10)}
    assert ids == set(TOPICS)
    assert any("missing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_index_file_is_rebuilt_with_warning(home, caplog, damage):
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
    file = home / "c" / INDEX_FILE
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    with caplog.at_level(logging.WARNING, logger="semsearch"), Collection.open("c") as coll:
        ids = {h.id for h in coll.search("anything at all", k=10)}
        assert coll.search("guitar concert", k=1)[0].id == "guitar"
    assert ids == set(TOPICS)
    assert any("corrupt or truncated; rebuilding" in r.getMessage() for r in caplog.records)
    index, generation = VectorIndex.load(file)  # the reader saved what it rebuilt
    assert index.ntotal == len(TOPICS) and generation > 0


def test_a_build_newer_than_its_store_is_not_searched(home, caplog):
    """A store restored from a backup taken before the last `semsearch build`: the build
    was mapped and, newer than the store, nothing was replayed onto it, so where the counts
    agreed search answered with chunks the store no longer holds (an index file newer than
    its store was already rebuilt)."""
    from semsearch.collection import STORE_FILE
    from semsearch.distributed import ondisk
    from semsearch.distributed.build import export_shards

    with small() as coll:
        coll.add_texts([TOPICS["cats"]], ids=["a"])
    path = home / "c"
    backup = (path / STORE_FILE).read_bytes()  # closed: the WAL is checkpointed into it
    with Collection.open("c") as coll:
        coll.add_texts([TOPICS["rockets"]], ids=["a"])  # replaced: as many chunks, a new chunk id
        shards, generation = export_shards(coll, path / "shards")
        ondisk.publish(path, ondisk.build(shards, ondisk.next_folder(path), generation=generation,
                                          use_ray=False))
    (path / STORE_FILE).write_bytes(backup)
    with caplog.at_level(logging.WARNING, logger="semsearch"), Collection.open("c") as coll:
        assert [h.text for h in coll.search("pets that purr", k=1, mode="dense")] == [TOPICS["cats"]]
    assert any("newer than its store" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- concurrency
def test_second_writer_while_lock_held_raises(home, monkeypatch):
    monkeypatch.setattr("semsearch.collection.LOCK_WAIT", 0.3)
    with small() as coll:
        coll.add_texts(["first text"], ids=["a"])
        lock = FileLock(str(home / "c" / LOCK_FILE))
        with lock.acquire(timeout=0):
            with pytest.raises(CollectionBusy, match="another process after 0.3 s"):
                coll.add_texts(["second text"], ids=["b"])
        assert set(coll.store.document_hashes()) == {"a"}
        coll.add_texts(["second text"], ids=["b"])  # free again
        assert coll.count() == 2


def test_a_closed_collection_is_not_reopened_by_a_late_writer(home):
    """A server past its drain time closes its collections while a request's thread may
    still be embedding: that write must fail (its client was told so), not reconnect and
    commit after the close."""
    from semsearch.errors import CollectionError

    coll = small()
    coll.add_texts(["first text"], ids=["a"])
    coll.close()
    late = {}
    thread = threading.Thread(target=lambda: late.setdefault("error", _raises(coll.add_texts, ["late"], ids=["b"])))
    thread.start()
    thread.join(60)
    assert isinstance(late["error"], CollectionError) and "closed" in str(late["error"])
    with Collection.open("c") as again:
        assert again.count() == 1


def _raises(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as exc:
        return exc
    return None


def test_rm_removes_what_killed_saves_and_builds_left(home):
    """A killed `build` leaves a hidden .build-* folder (as large as the index) and perhaps
    its temporary pointer file, and a killed save a temporary changes file: `rm` left them,
    and with them the folder."""
    from semsearch.collection import ONDISK_BUILD_LOCK, ONDISK_CHANGES, ONDISK_SCRATCH, delete_collection

    small().close()
    (home / "c" / f"{ONDISK_SCRATCH}x1y2").mkdir()
    (home / "c" / f"{ONDISK_SCRATCH}x1y2" / "index.faiss").write_bytes(b"partial")
    (home / "c" / f".{ONDISK_CHANGES}.k3.tmp").write_bytes(b"partial")
    (home / "c" / ".ondisk.json.u7x2k9q1").write_bytes(b"{")  # ondisk.publish's temporary pointer
    (home / "c" / ONDISK_BUILD_LOCK).parent.mkdir()  # as a finished build leaves it
    (home / "c" / ONDISK_BUILD_LOCK).write_bytes(b"")
    delete_collection("c")
    assert not (home / "c").exists()


def test_a_collection_removed_while_open_is_not_searched_any_more(home):
    """A server holding a collection that `semsearch rm` removed kept answering from the
    deleted files (and, once it was created anew, from the old ones instead of the new)."""
    from semsearch.collection import delete_collection
    from semsearch.errors import NoSuchCollection

    with small() as held:
        held.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        assert held.search("guitar concert", k=1)[0].id == "guitar"
        delete_collection("c")
        for search in (lambda: held.search("guitar concert", k=1, mode="lexical"),
                       lambda: held.search_vectors(held.embedder.embed(["guitar"], kind="query"))):
            with pytest.raises(NoSuchCollection, match="removed while it was open here"):
                search()


def test_repr_names_the_collection_its_folder_and_model(home):
    with small() as coll:  # it was <semsearch.collection.Collection object at 0x...>
        assert repr(coll) == f"<Collection c at {home / 'c'} (sentence-transformers/all-MiniLM-L6-v2 fp32)>"


def test_info_of_a_removed_collection_says_so(home):
    """info() read the removed store's stale counts, or failed 'cannot open ... check its
    permissions' on a new thread (a 500 from a server's GET /v1/collections/NAME)."""
    from semsearch.collection import delete_collection
    from semsearch.errors import NoSuchCollection

    with small() as held:
        held.add_texts(["a note"], ids=["n1"])
        delete_collection("c")
        with pytest.raises(NoSuchCollection, match="removed while it was open here"):
            held.info()


def test_a_write_waits_for_this_processs_writers_within_the_lock_wait(home, monkeypatch):
    """The in-process lock was waited for without a deadline: a write queued behind k
    others of a server waited up to k x LOCK_WAIT, or for ever behind one that hung."""
    import semsearch.collection

    monkeypatch.setattr(semsearch.collection, "LOCK_WAIT", 0.2)
    with small() as coll:
        coll._write_lock.acquire()  # another thread's write, in progress
        try:
            failed = []
            writer = threading.Thread(target=lambda: failed.append(_raises(coll.add_texts, ["x"], ids=["x"])))
            writer.start()
            writer.join(30)
            assert not writer.is_alive() and isinstance(failed[0], CollectionBusy)
        finally:
            coll._write_lock.release()
        coll.add_texts(["x"], ids=["x"])  # free again
        assert coll.count() == 1


def test_a_thread_that_reads_a_removed_collection_leaves_no_empty_store_behind(home):
    """A thread's first read opened the store by name and SQLite made an empty file there
    once `rm` had removed it (a folder with other files stays): after that the name could
    be neither created, opened nor removed."""
    from semsearch.collection import STORE_FILE, delete_collection
    from semsearch.errors import NoSuchCollection

    held = small()
    held.add_texts(["a note to keep"], ids=["n1"])
    (home / "c" / "notes.txt").write_text("the user's own file, which rm leaves")
    delete_collection("c")
    failed = []
    reader = threading.Thread(target=lambda: failed.append(_raises(held.count)))
    reader.start()
    reader.join()
    assert isinstance(failed[0], NoSuchCollection)
    assert not (home / "c" / STORE_FILE).exists()
    with small() as again:
        again.add_texts(["a new note"], ids=["n2"])
        assert again.count() == 1


def test_an_index_that_rm_overtook_neither_remakes_the_folder_nor_warns(home, tmp_path, caplog):
    """An `index` that opened the collection before `rm` removed it rebuilt the missing
    index file, took the lock to save it (making the removed folder again, with a lock file
    in it) and warned 'cannot save the index file' above its one-line error."""
    from semsearch.collection import delete_collection
    from semsearch.errors import NoSuchCollection

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TOPICS["cats"])
    with small() as coll:
        coll.add_texts([TOPICS["bread"]], ids=["b"])
    (home / "c" / INDEX_FILE).unlink()  # as a writer killed before its save leaves it
    with Collection.open("c") as held:
        delete_collection("c")
        with caplog.at_level(logging.INFO, logger="semsearch"), pytest.raises(NoSuchCollection):
            held.add_files([tmp_path / "docs"])
    assert not (home / "c").exists()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and "missing; rebuilding" not in r.getMessage()]


def test_a_killed_create_leaves_nothing_behind_the_next_create_or_rm(home, caplog):
    """A create killed before its rename left its temporary store (and -wal) for ever, and
    `rm` then warned about files 'semsearch did not create'."""
    from semsearch.collection import delete_collection

    (home / "c").mkdir(parents=True)
    for name in (".store.sqlite.0123abcd.new", ".store.sqlite.0123abcd.new-wal"):
        (home / "c" / name).write_bytes(b"partial")
    small().close()
    assert sorted(p.name for p in (home / "c").glob(".store.sqlite.*")) == []
    (home / "c" / ".store.sqlite.4567.new-shm").write_bytes(b"partial")  # another one, then rm
    with caplog.at_level(logging.WARNING, logger="semsearch"):
        delete_collection("c")
    assert not (home / "c").exists() and not caplog.records


def test_a_writer_waits_for_another_process_to_finish(home):
    """Several writers may use one collection: the second waits its turn (up to LOCK_WAIT)."""
    with small() as coll:
        coll.add_texts(["first text"], ids=["a"])
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from filelock import FileLock
            with FileLock({str(home / "c" / LOCK_FILE)!r}):
                print("held", flush=True)
                time.sleep(1.5)""")], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            coll.add_texts(["second text"], ids=["b"])  # waits for the holder, then writes
        finally:
            holder.wait(30)
        assert coll.count() == 2


WRITER = textwrap.dedent("""
    import sys
    from semsearch.collection import Collection
    template = sys.argv[2]
    with Collection.open(sys.argv[1]) as coll:
        for i in range(int(sys.argv[3])):
            coll.add_texts([template.format(i=i)], ids=[f"w{i}"])
""")


def test_readers_never_see_half_added_documents(home):
    template = "".join(LONG.format(n=n, name="writer{i}") for n in range(2))
    with small() as coll:
        coll.add_texts([template.format(i="seed")], ids=["seed"])
        per_doc = n_chunks(template.format(i=0), coll)
        assert per_doc > 2
        assert all(n_chunks(template.format(i=i), coll) == per_doc for i in range(8))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home / "c"), template, "8"])
    try:
        seen_sizes = set()
        with Collection.open("c") as reader:
            while True:
                done = writer.poll() is not None
                hits = reader.search("committee budget servers roadmap", k=10_000)
                counts = Counter(h.id for h in hits)
                assert counts["seed"] == n_chunks(template.format(i="seed"), reader)
                partial = {d: n for d, n in counts.items() if d != "seed" and n != per_doc}
                assert not partial, f"documents seen with some of their chunks: {partial}"
                seen_sizes.add(len(counts))
                if done:
                    break
        assert writer.returncode == 0
        assert len(counts) == 9
        assert len(seen_sizes) > 2, "the reader never ran while the writer was adding"
    finally:
        writer.kill()
        writer.wait()


def test_document_longer_than_one_embedding_batch_is_fully_indexed(home):
    from semsearch.ingest import FLUSH_CHUNKS

    coll = small(chunk_tokens=8, overlap=0)
    long_text = " ".join(f"sentence number {i} talks about topic {i % 7}." for i in range(1000))
    coll.add_texts([long_text, "a short note about gliders"], ids=["long", "short"])
    docs, chunks = coll.store.counts()
    assert chunks == n_chunks(long_text, coll) + 1 > FLUSH_CHUNKS
    assert coll.info()["index"]["vectors"] == chunks
    reopened = Collection.open(coll.path)
    assert reopened.info()["index"]["vectors"] == chunks
    assert {h.id for h in reopened.search("gliders", k=1, mode="dense")} == {"short"}


def test_search_vectors_matches_dense_search(home):
    coll = small()
    coll.add_texts(["gliders soar on thermals", "the soup needs salt", "jet engines burn fuel"],
                   ids=["glide", "soup", "jet"])
    vector = coll.embedder.embed(["sailplanes riding rising air"], kind="query")
    by_vector = [h.id for h in coll.search_vectors(vector, k=3)[0]]
    assert by_vector == [h.id for h in coll.search("sailplanes riding rising air", k=3, mode="dense")]
    with pytest.raises(InvalidInput):
        coll.search_vectors(vector[:, :10], k=3)


# ---------------------------------------------------------------- one rule, one home (issue 9)
def test_reindex_with_a_glob_removes_nothing_outside_its_selection(home, tmp_path):
    folder = tmp_path / "data" / "notes"  # the 'a' in 'data' once made 'a*.md' select sub/b.md
    (folder / "sub").mkdir(parents=True)
    (folder / "a1.md").write_text("Apples grow in orchards and ripen in autumn.")
    (folder / "sub" / "b.md").write_text("Bananas grow in bunches in the tropics.")
    (folder / "c.txt").write_text("Cherries are small red stone fruits.")
    with small() as coll:
        coll.add_files([folder])
        everything = set(coll.store.chunks_per_document())
        assert len(everything) == 3
        report = coll.add_files([folder], glob="a*.md")
        assert (report.removed, report.unchanged) == (0, 1)
        assert set(coll.store.chunks_per_document()) == everything
        (folder / "a1.md").unlink()
        (folder / "sub" / "b.md").unlink()  # vanished, but outside the glob: stays
        report = coll.add_files([folder], glob="a*.md")
        assert report.removed == 1
        assert set(coll.store.chunks_per_document()) == everything - {str(folder / "a1.md")}


def test_delete_with_a_string_deletes_that_one_id(home):
    with small() as coll:
        coll.add_texts(["one", "two", "twelve"], ids=["1", "2", "12"])
        assert coll.delete("12") == 1
        assert set(coll.store.chunks_per_document()) == {"1", "2"}


def test_blank_text_is_refused_and_keeps_the_existing_document(home):
    with small() as coll:
        coll.add_texts(["the original note"], ids=["n1"])
        with pytest.raises(InvalidInput, match="empty"):
            coll.add_texts(["   "], ids=["n1"])
        assert coll.search("original note", k=1)[0].id == "n1"


@pytest.mark.parametrize("k", ["5", 2.5, True, 10**9])
def test_k_of_the_wrong_type_or_size_is_invalid_input(home, k):
    with small() as coll:
        coll.add_texts(["hello world"])
        with pytest.raises(InvalidInput):
            coll.search("hello", k=k)


@pytest.mark.parametrize("index", [5, ["flat"], " "])
def test_an_index_type_that_is_not_a_name_is_invalid_input_and_creates_nothing(home, index):
    with pytest.raises(InvalidInput, match="index"):
        Collection.create("typo", index=index)
    assert not (home / "typo").exists()
    with small() as coll, pytest.raises(InvalidInput, match="index"):
        coll.rebuild_index(index)


def test_open_or_create_refuses_settings_that_differ(home):
    small().close()
    with pytest.raises(CollectionExists, match="overlap"):
        Collection.open_or_create("c", overlap=4)
    with Collection.open_or_create("c", overlap=8, chunk_tokens=32) as coll:
        assert coll.config["overlap"] == 8


def test_add_vectors_stores_precomputed_vectors_that_dense_search_finds(home):
    with small() as coll:
        vectors = coll.embedder.embed(["gliders soar on thermals", "the soup needs salt"])
        ids = coll.add_vectors(["glide", "soup"], vectors, ["gliders soar on thermals", "the soup needs salt"])
        assert ids == ["glide", "soup"]  # as add_texts returns them
        query = coll.embedder.embed(["sailplanes"], kind="query")
        assert coll.search_vectors(query, k=1)[0][0].id == "glide"
        assert coll.search("soup salt", k=1, mode="lexical")[0].id == "soup"


def test_threads_share_one_collection_for_searches_while_it_is_written(home):
    from concurrent.futures import ThreadPoolExecutor
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))

        def search(i):
            return coll.search("a rocket put a satellite in orbit", k=1)[0].id

        with ThreadPoolExecutor(4) as pool:
            found = pool.map(search, range(24))
            coll.add_texts([f"extra note number {i}" for i in range(20)])
            assert set(found) == {"rockets"}
        assert coll.info()["index"]["vectors"] == coll.info()["chunks"]


# ---------------------------------------------------------------- the GPU-style ingest path
def test_overlapped_ingest_stores_what_the_plain_one_does(home, tmp_path, model_folder, monkeypatch):
    """The GPU's ingest (documents chunked in groups, tokenised in worker processes, the
    next batch embedded while this one is stored), run on the CPU: same documents, chunks
    and vectors as the one-thing-at-a-time path."""
    import numpy as np

    from semsearch import ingest
    from semsearch.embedder import Embedder, bucket_widths
    from semsearch.runtime import TokenizerProcesses

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate(TOPICS):
        (corpus / f"{name}.txt").write_text(" ".join(LONG.format(n=n, name=name) for n in range(i + 2)))
    (corpus / "blank.txt").write_text("  \n ")
    monkeypatch.setattr(ingest, "FLUSH_CHUNKS", 8)  # several batches in flight
    monkeypatch.setattr(ingest, "CHUNK_GROUP_CHARS", 2000)
    gpu_style = Embedder.from_folder(model_folder, "fp32", device="cpu", threads=2)
    gpu_style.widths, gpu_style.overlap, gpu_style.window = bucket_widths(gpu_style.max_length), True, 16
    gpu_style.max_batch_size, gpu_style.max_batch_tokens = 8, 512
    gpu_style.tokenizing = TokenizerProcesses(gpu_style.tokenizer, False, processes=2, threads=1)
    try:
        with small("plain") as plain, small("overlapped") as overlapped:
            overlapped.use_embedder(gpu_style)
            reports = [c.add_files([corpus]) for c in (plain, overlapped)]
            stores = [c.store for c in (plain, overlapped)]
            assert stores[0].chunks_per_document() == stores[1].chunks_per_document()
            assert sum(stores[0].chunks_per_document().values()) > 3 * 8
            (ids_a, vec_a), (ids_b, vec_b) = (next(s.vectors()) for s in stores)
            assert [r[:5] for r in stores[0].chunk_rows(ids_a).values()] == \
                [r[:5] for r in stores[1].chunk_rows(ids_b).values()]
            assert np.max(np.abs(vec_a - vec_b)) <= 1e-5
            assert [(r.added, r.chunks, r.skipped) for r in reports] == [(5, reports[0].chunks, reports[0].skipped)] * 2
    finally:
        gpu_style.tokenizing.close()


# ---------------------------------------------------------------- adversarial inputs (review)
@pytest.fixture(scope="module")
def filtered(collection_of):
    coll = collection_of({"cats": TOPICS["cats"], "dogs": "Dogs bark at the postman.",
                          "none": "A note whose tag is the word None."})
    coll.add_texts([TOPICS["guitar"]], ids=["null"], metadata={"tag": None})
    coll.add_texts(["A note whose tag is the word None."], ids=["none"], metadata={"tag": "None"})
    coll.add_texts([TOPICS["bread"]], ids=["quoted"], metadata={'say "hi"': 1})
    return coll


@pytest.mark.parametrize("weights", [(0, 0), (0.0, 0.0), None, 5, "1,1"])
def test_hybrid_weights_that_are_not_two_numbers_with_one_positive_are_invalid_input(filtered, weights):
    with pytest.raises(InvalidInput, match="weights"):
        filtered.search("cats", weights=weights)
    assert filtered.search("cats", weights=iter([1.0, 0.0]))[0].id == "cats"  # any two numbers


def test_where_none_matches_json_null_not_the_string_none(filtered):
    assert {h.id for h in filtered.search("a note", where={"tag": None}, k=10)} == {"null"}
    assert {h.id for h in filtered.search("a note", where={"tag": "None"}, k=10)} == {"none"}


def test_where_compares_numbers_as_numbers(collection_of):
    """Compared only as JSON text, {"n": 1} missed a stored 1.0 (a data frame's float
    column) and {"n": 1.0}, or the CLI's --where n=1.0, a stored 1."""
    coll = collection_of({})
    for doc_id, n in (("float", 1.0), ("int", 1), ("text", "1"), ("half", 2.5)):
        coll.add_texts([f"value {doc_id}"], ids=[doc_id], metadata={"n": n})

    def found(value):
        return {h.id for h in coll.search("value", where={"n": value}, k=10)}

    assert found(1) == found("1") == {"float", "int", "text"}  # the text '1' as before, and 1.0
    assert found(1.0) == found("1.0") == {"float", "int"}
    assert found(2.5) == found("2.5") == {"half"}
    assert found(True) == found("one") == set()


@pytest.mark.parametrize("where", [{"a\0b": 1}, {"tag": float("nan")}])
def test_where_a_key_no_document_has_or_json_cannot_hold_is_invalid_input(filtered, where):
    with pytest.raises(InvalidInput):
        filtered.search("bread", where=where)


MANY_KEYS = {f"k{i}": i for i in range(101)}


@pytest.mark.parametrize("where", [{"k0": "a\ud800"}, {"k0\udc00": 1}, {"k0": 2**64}, MANY_KEYS])
def test_where_with_lone_surrogates_huge_integers_or_too_many_keys_is_refused(collection_of, where):
    """A lone surrogate reached SQLite (UnicodeEncodeError), 2**64 never matched, and a
    thousand keys made SQLite's expression tree too deep (a 500 through the server)."""
    coll = collection_of({"many": "A document with many keys."})
    coll.add_texts(["A document with many keys."], ids=["many"], metadata=MANY_KEYS)
    with pytest.raises(InvalidInput):
        coll.search("document", where=where)
    assert coll.search("document", where=dict(list(MANY_KEYS.items())[:100]))[0].id == "many"


@pytest.mark.parametrize("change", [dict(texts=["a\ud800b"]), dict(ids=["a\ud800"]), dict(ids=["a\0b"]),
                                    dict(metadata={"k": "\udfff"}), dict(metadata={"\ud800": 1}),
                                    dict(metadata={"n": 2**64}), dict(metadata={"n": [-2**63 - 1]})])
def test_add_texts_refuses_lone_surrogates_nul_ids_and_integers_beyond_64_bits(filtered, change):
    args = {"texts": ["A valid text."], "ids": ["valid"], "metadata": None, **change}
    before = filtered.count()
    with pytest.raises(InvalidInput):
        filtered.add_texts(**args)
    assert filtered.count() == before
    with pytest.raises(InvalidInput, match="surrogate"):
        filtered.embedder.embed(["fine", "not \ud800 fine"])


@pytest.mark.parametrize("name", [None, 123, b"c", "x" * 300])
def test_a_collection_name_that_is_not_a_usable_name_is_invalid_input_and_creates_nothing(
        home, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput):
        Collection.create(name)
    assert not home.exists() or not any(home.iterdir())


@pytest.mark.parametrize("path", ["", " ", None])
def test_delete_path_that_is_blank_or_none_is_invalid_input_and_deletes_nothing(filtered, path, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir("/")  # "" resolved is the current folder: every document under it would go
    before = filtered.count()
    with pytest.raises(InvalidInput):
        filtered.delete_path(path)
    assert filtered.count() == before


def test_one_int_id_for_one_text_is_that_id(filtered):
    assert filtered.add_texts(["A lone numbered note."], ids=7) == ["7"]
    assert filtered.delete(7) == 1


def test_add_texts_embeds_before_taking_the_writer_lock(home):
    """Another process's writer waits on this call only for its transaction, not while
    its texts are embedded (or the model loads)."""
    with small() as coll:
        coll.add_texts(["first text"], ids=["a"])
        embed, free = coll.embedder.embed, []

        def spy(texts, **kw):  # the real embedder, asked whether the lock is free meanwhile
            lock = FileLock(str(home / "c" / LOCK_FILE))
            try:
                lock.acquire(timeout=0)
                lock.release()
                free.append(True)
            except Exception:
                free.append(False)
            return embed(texts, **kw)

        coll.embedder.embed = spy
        try:
            coll.add_texts(["second text", "third text"], ids=["b", "c"])
        finally:
            del coll.embedder.embed
        assert free and all(free)
        assert coll.count() == 3


def _during_embedding(coll, action, after_calls=1):
    """Run ``action()`` inside the real embedder's call number ``after_calls + 1``: in the
    middle of an ingest, between its batches."""
    embed, calls = coll.embedder.embed, []

    def spy(texts, **kw):
        calls.append(len(texts))
        if len(calls) == after_calls + 1:
            action()
        return embed(texts, **kw)

    coll.embedder.embed = spy
    return calls


def _a_folder_of(folder, n):
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i:02d}.txt").write_text(f"Note {i}: " + list(TOPICS.values())[i % 5])
    return folder


def test_a_long_index_lets_another_process_write_between_its_batches(home, tmp_path, monkeypatch):
    """`semsearch index` held the writer lock for its whole run: any other writer (a server,
    `semsearch add`) waited 10 s and failed with exit 75. Now the lock is taken a batch at a time."""
    monkeypatch.setattr("semsearch.ingest.FLUSH_CHUNKS", 2)  # a batch every 2 chunks
    folder = _a_folder_of(tmp_path / "docs", 8)
    other = {}

    def add_from_another_process():
        other["run"] = subprocess.run([sys.executable, "-m", "semsearch", "add", "c", "--text",
                                       "Owls hunt at night.", "--id", "owl"],
                                      capture_output=True, text=True, timeout=120)

    with small() as coll:
        calls = _during_embedding(coll, add_from_another_process)
        report = coll.add_files([folder])
        assert len(calls) > 2
        assert other["run"].returncode == 0, other["run"].stderr
        assert report.added == 8 and report.removed == 0
        assert coll.count() == 9
        assert coll.search("a bird that hunts in the dark", k=1)[0].id == "owl"


def test_a_file_another_writer_indexed_during_a_run_is_not_removed_by_it(home, tmp_path, monkeypatch):
    """A run removes the documents of files that are gone, not of a file that appeared (and
    was indexed by another writer) after it listed the folder; of a file it read, records
    the file no longer holds still go."""
    monkeypatch.setattr("semsearch.ingest.FLUSH_CHUNKS", 2)
    folder = _a_folder_of(tmp_path / "docs", 4)
    (folder / "r.json").write_text('[{"id": "1", "text": "Cats purr."}, {"id": "2", "text": "Dogs bark."}]')
    late = folder / "late.txt"

    def another_writer_indexes_a_new_file():
        late.write_text("Bananas grow in bunches in the tropics.")
        with Collection.open("c") as second:
            assert second.add_files([late]).added == 1

    with small() as coll:
        coll.add_files([folder])
        (folder / "r.json").write_text('[{"id": "1", "text": "Cats purr."}]')
        (folder / "f00.txt").write_text("Changed: the rocket reached orbit.")
        (folder / "f01.txt").unlink()
        _during_embedding(coll, another_writer_indexes_a_new_file, after_calls=0)
        report = coll.add_files([folder])
        keys = set(coll.store.document_hashes())
        assert str(late) in keys
        assert f"{folder / 'r.json'}#2" not in keys and f"{folder / 'r.json'}#1" in keys
        assert str(folder / "f01.txt") not in keys
        assert report.removed == 2


def test_rm_during_a_long_index_stops_it_with_one_line(home, tmp_path, monkeypatch):
    """rm gets the lock between an index run's batches; the run must not write on into the
    removed store (or a new one of the same name) but stop, saying why."""
    from semsearch.collection import delete_collection
    from semsearch.errors import NoSuchCollection

    monkeypatch.setattr("semsearch.ingest.FLUSH_CHUNKS", 2)
    folder = _a_folder_of(tmp_path / "docs", 6)

    def remove_and_create_anew():
        delete_collection("c")
        small().close()

    with small() as coll:
        _during_embedding(coll, remove_and_create_anew)
        with pytest.raises(NoSuchCollection, match="was removed while it was open here"):
            coll.add_files([folder])
    with Collection.open("c") as anew:
        assert anew.count() == 0


def test_a_file_that_cannot_be_read_this_time_keeps_its_documents(home, tmp_path):
    """Re-indexing removes what vanished, not what was skipped: a file caught half-written
    (or unreadable for now) lost its documents as if it were gone."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.json").write_text('[{"id": "1", "text": "Cats purr on the sofa."}]')
    (folder / "b.txt").write_text("Dogs bark at the postman.")
    with small() as coll:
        coll.add_files([folder])
        (folder / "a.json").write_text('[{"id": "1", "text": "Cats purr')  # caught half-written
        (folder / "b.txt").unlink()
        report = coll.add_files([folder])
        assert report.removed == 1 and [s for s, _ in report.skipped] == [str(folder / "a.json")]
        assert {h.id for h in coll.search("pets", k=5)} == {f"{folder / 'a.json'}#1"}


def test_records_holding_nan_or_infinity_are_skipped_and_filters_keep_working(home, tmp_path):
    """Records JSON or the store cannot hold (NaN, Infinity, a lone surrogate, an integer
    beyond 64 bits) are skipped one by one: stored, NaN broke every --where search, and a
    surrogate made the rest of its file unreadable."""
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "r.jsonl").write_text('{"id": "1", "text": "Cats purr on the sofa.", "v": NaN, "tag": "x"}\n'
                                    '{"id": "2", "text": "Dogs bark at night.", "v": 1e999, "tag": "x"}\n'
                                    '{"id": "3", "text": "Birds sing at dawn.", "v": 1.5, "tag": "x"}\n'
                                    '{"id": "4", "text": "Owls hoot \\ud800.", "tag": "x"}\n'
                                    '{"id": "5", "text": "Bats fly.", "v": 18446744073709551616, "tag": "x"}\n'
                                    '{"id": "6", "text": "Hens cluck.", "v": 9223372036854775807, "tag": "x"}\n')
    (folder / "a.json").write_text('[{"id": "7", "text": "Fish swim.", "v": -Infinity, "tag": "x"}]')
    with small() as coll:
        report = coll.add_files([folder])
        assert report.added == 2 and len(report.skipped) == 5, report.skipped
        assert sum("JSON" in reason for _, reason in report.skipped) == 3
        hits = coll.search("animals", where={"tag": "x"}, k=10)
        assert sorted(h.id for h in hits) == [f"{folder / 'r.jsonl'}#{i}" for i in (3, 6)]
        assert coll.search("animals", where={"v": 2**63 - 1}, k=1)[0].id.endswith("#6")


@pytest.mark.parametrize("scale", [0.0, 100.0])
def test_add_vectors_that_are_not_unit_length_are_invalid_input_and_store_nothing(home, embedder, scale):
    with small() as coll:
        vectors = embedder.embed(["gliders soar on thermals", "the soup needs salt"])
        vectors[1] *= scale  # a zero vector, or one that would top every dense search
        with pytest.raises(InvalidInput, match="normalised"):
            coll.add_vectors(["glide", "soup"], vectors, ["gliders soar on thermals", "the soup needs salt"])
        assert coll.count() == 0


@pytest.mark.parametrize("scale", [0.0, 3.0])
def test_query_vectors_that_are_not_unit_length_are_invalid_input(home, embedder, scale):
    """Scores are cosines only for unit queries: a longer one scaled every dense score (past
    1, and past min_score thresholds) and weighed the dense side more in hybrid fusion."""
    with small() as coll:
        coll.add_texts(list(TOPICS.values()), ids=list(TOPICS))
        query = embedder.embed(["sailplanes"], kind="query") * scale
        with pytest.raises(InvalidInput, match="normalised"):
            coll.search_vectors(query, k=1)
        with pytest.raises(InvalidInput, match="normalised"):
            coll.search("sailplanes", k=1, query_vectors=query)


@pytest.mark.parametrize("model", ["", 5])
def test_a_model_that_is_blank_or_not_a_name_is_invalid_input(home, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" was taken for the current folder, and exported
    with pytest.raises(InvalidInput, match="model"):
        Collection.create("fresh", model=model)
    assert not (home / "fresh").exists()
    with small(), pytest.raises(InvalidInput, match="model"):
        Collection.open("c", model=model)
    assert list(tmp_path.iterdir()) == [home]


@pytest.mark.parametrize("glob", [5, ["*.txt", 3], ""])
def test_a_glob_that_is_not_a_pattern_is_invalid_input(home, tmp_path, glob):
    (tmp_path / "a.txt").write_text("A plain note about kites.")
    with small() as coll, pytest.raises(InvalidInput, match="glob"):
        coll.add_files([tmp_path], glob=glob)


def test_a_home_that_is_not_a_path_is_invalid_input():
    with pytest.raises(InvalidInput, match="home"):
        Collection.open("c", home=5)


# ---------------------------------------------------------------- delete by filter
def test_delete_where_deletes_exactly_the_documents_search_matches(home, tmp_path):
    """delete(where=) matches as search(where=) does: numbers as numbers, booleans, source=
    (the file), metadata.KEY; the rest stays searchable in every mode, after reopening too."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "guitar.txt").write_text(TOPICS["guitar"])
    (folder / "bread.txt").write_text(TOPICS["bread"])
    with small() as coll:
        coll.add_texts([TOPICS["cats"], TOPICS["rockets"], TOPICS["stocks"], "Owls hunt mice at night."],
                       ids=["cats", "rockets", "stocks", "owls"],
                       metadata=[{"n": 1.0, "ok": True}, {"n": 1, "ok": False}, {"n": "1"}, {"n": 2, "ok": True}])
        coll.add_files([folder])
        assert coll.delete(where={"n": 1, "ok": True}) == 1  # all keys must match: cats
        assert coll.delete(where={"ok": False}) == 1  # rockets
        assert coll.delete(where={"source": str(folder / "guitar.txt")}) == 1
        assert coll.delete(where={"n": "1"}) == 1  # stocks (cats and rockets are gone)
        assert coll.delete(where={"n": 7}) == 0
        left = {"owls", str(folder / "bread.txt")}
        assert set(coll.store.chunks_per_document()) == left
    with Collection.open("c") as coll:  # the index file agrees with the store
        assert coll.info()["index"]["vectors"] == coll.info()["chunks"]
        for mode in ("dense", "lexical", "hybrid"):
            assert {h.id for h in coll.search("owls cats rocket shares guitar loaf", k=10, mode=mode)} == left, mode
        assert coll.delete(where={"metadata.n": 2}) == 1
        assert {h.id for h in coll.search("owls hunting", k=10, mode="dense")} == {str(folder / "bread.txt")}


@pytest.mark.parametrize("where", [{}, None])
def test_delete_where_that_is_empty_unknown_or_beside_ids_is_refused_and_deletes_nothing(home, where):
    """An empty filter would match every document: refused, as is delete() of nothing."""
    with small() as coll:
        coll.add_texts([TOPICS["cats"], TOPICS["bread"]], ids=["cats", "bread"], metadata={"team": "ops"})
        with pytest.raises(InvalidInput, match="where"):
            coll.delete(where=where)
        with pytest.raises(InvalidInput, match="colour"):
            coll.delete(where={"colour": "red"})
        with pytest.raises(InvalidInput, match="ids or where"):
            coll.delete(["cats"], where={"team": "ops"})
        assert coll.count() == 2


DELETE_RACE_WRITER = textwrap.dedent("""
    import sys
    from semsearch.collection import Collection
    from semsearch.ingest import DocumentInfo, IndexReport, embed_documents
    with Collection.open(sys.argv[1]) as coll:
        docs = [(DocumentInfo("moved", metadata={"team": "dev"}), [sys.argv[2]]),
                (DocumentInfo("joined", metadata={"team": "ops"}), [sys.argv[3]])]
        prepared = [d for batch in embed_documents(docs, coll.embedder, coll.config["chunk_tokens"],
                                                   coll.config["overlap"], IndexReport()) for d in batch]
        with coll.writer() as w:
            print("held", flush=True)
            sys.stdin.readline()  # the test's delete is waiting for the writer lock now
            w.put_many(prepared)
""")


def test_delete_where_matches_in_its_own_transaction_not_before_the_writer_lock(home):
    """Another process writes while a delete(where=) waits for the writer lock: the filter
    matches the documents as that write left them. A document changed out of the filter is
    kept, whole (it was deleted when matched before the lock); one added into it goes."""
    moved, joined = "".join(LONG.format(n=n, name="moved") for n in range(2)), TOPICS["rockets"]
    with small() as coll:
        coll.add_texts([TOPICS["cats"], TOPICS["bread"]], ids=["moved", "stays"],
                       metadata=[{"team": "ops"}, {"team": "dev"}])
        writer = subprocess.Popen([sys.executable, "-c", DELETE_RACE_WRITER, str(home / "c"), moved, joined],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "held"
            result = {}
            deleting = threading.Thread(target=lambda: result.update(n=coll.delete(where={"team": "ops"})))
            deleting.start()
            while deleting.is_alive() and not coll._write_lock.locked():  # begun: it waits for the other process
                deleting.join(0.01)
            writer.stdin.write("go\n")
            writer.stdin.close()
            deleting.join(60)
            assert writer.wait(60) == 0
        finally:
            writer.kill()
            writer.wait()
        assert result == {"n": 1}
        assert coll.store.chunks_per_document() == {"moved": n_chunks(moved, coll), "stays": 1}
        for mode in ("dense", "lexical", "hybrid"):
            assert {h.id for h in coll.search("committee budget rocket", k=10, mode=mode)} <= {"moved", "stays"}, mode
    with Collection.open("c") as coll:
        assert coll.info()["index"]["vectors"] == coll.info()["chunks"] == n_chunks(moved, coll) + 1
        assert coll.search("the committee met to review the budget", k=1)[0].id == "moved"
