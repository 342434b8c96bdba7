"""Re-adding a text its id already holds costs no embedding (real model, real store).

Apps that sync their documents send the same texts again and again; a change of
metadata alone must not re-embed either. What was embedded is seen by wrapping the real
Embedder (it counts the passages it is asked to embed) and by the chunk rows of
store.sqlite, whose ids change whenever a document is written again.
"""
import sqlite3
import threading

import numpy as np
import pytest

from semsearch.collection import STORE_FILE, Collection
from semsearch.errors import InvalidInput
from semsearch.ingest import text_hash

from test_cli import ok, run

CATS = "Cats are small furry pets that purr, chase mice and sleep most of the day."
ROCKETS = "The rocket launch carried a satellite into orbit around the Earth."
BREAD = "Knead the dough, let it rise overnight, then bake the loaf in a hot oven."
GUITAR = "She tuned the strings of her acoustic guitar before the concert began."
STOCKS = "Shares on the stock exchange fell sharply after the interest rate decision."


class Counting:
    """The real Embedder, recording every passage it embeds (queries are not counted)."""

    def __init__(self, real):
        self.real, self.passages, self.hook = real, [], None

    def __getattr__(self, name):
        return getattr(self.real, name)

    def embed(self, texts, kind="query", **kw):
        if kind == "passage":
            self.passages += list(texts)
            if self.hook:  # once, while this call embeds (before its write)
                hook, self.hook = self.hook, None
                hook()
        return self.real.embed(texts, kind=kind, **kw)


@pytest.fixture
def coll(home, embedder):
    counting = Counting(embedder)
    with Collection.create("c", embedder=counting) as c:
        yield c


def chunk_rows(coll) -> dict[str, list[int]]:
    """Document id -> its chunk row ids, read from store.sqlite by a connection of its own."""
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        rows = db.execute("SELECT d.key, c.id FROM documents d JOIN chunks c ON c.doc_id = d.id "
                          "ORDER BY d.key, c.position").fetchall()
    out = {}
    for key, chunk in rows:
        out.setdefault(key, []).append(chunk)
    return out


def generation(coll) -> int:
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def embedded(coll) -> list[str]:
    """The passages embedded since the last call, and start counting again."""
    got, coll.embedder.passages = coll.embedder.passages, []
    return got


def found(coll, query, **kw) -> list[str]:
    return [h.id for h in coll.search(query, k=10, docs=True, **kw)]


def test_re_adding_the_same_texts_embeds_and_writes_nothing(coll):
    coll.add_texts([CATS, ROCKETS, BREAD], ids=["cats", "rockets", "bread"], metadata={"team": "a"})
    assert sorted(embedded(coll)) == sorted([CATS, ROCKETS, BREAD])
    before, gen = chunk_rows(coll), generation(coll)
    assert coll.add_texts([CATS, ROCKETS, BREAD], ids=["cats", "rockets", "bread"],
                          metadata={"team": "a"}) == ["cats", "rockets", "bread"]
    assert embedded(coll) == []
    assert chunk_rows(coll) == before and generation(coll) == gen  # not even a metadata write
    report = coll.add_texts_report([BREAD, CATS], ids=["bread", "cats"], metadata={"team": "a"})
    assert (report.ids, report.added, report.replaced, report.metadata_updated, report.unchanged) == \
        (["bread", "cats"], 0, 0, 0, 2)
    assert embedded(coll) == [] and found(coll, "a space vehicle put a satellite in orbit")[0] == "rockets"


def test_the_hash_is_kept_in_the_store_for_the_next_process(coll, embedder):
    coll.add_texts([CATS], ids=["cats"])
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        assert db.execute("SELECT content_hash FROM documents").fetchall() == [(text_hash(CATS),)]
    before = chunk_rows(coll)
    said = ok(run("add", coll.path, "--text", CATS, "--id", "cats")).stdout
    assert said.strip() == "c: added 1 document(s), 1 unchanged (same text and metadata: nothing embedded); " \
                           "1 in the collection"
    assert chunk_rows(coll) == before


def test_a_metadata_only_change_writes_the_metadata_and_filters_see_it(coll):
    coll.add_texts([CATS, ROCKETS], ids=["cats", "rockets"], metadata=[{"lang": "en", "team": "a"}, {"lang": "en"}])
    embedded(coll)
    before, added_at = chunk_rows(coll), coll.get("cats").added_at
    report = coll.add_texts_report([CATS], ids=["cats"], metadata={"lang": "fr", "owner": "bob"})
    assert embedded(coll) == [] and chunk_rows(coll) == before  # the same chunks and vectors
    assert (report.added, report.replaced, report.metadata_updated, report.unchanged) == (0, 0, 1, 0)
    doc = coll.get("cats")
    assert doc.metadata == {"lang": "fr", "owner": "bob"} and doc.text == CATS
    assert doc.added_at == added_at  # when its text was added
    for mode in ("dense", "lexical", "hybrid"):
        assert found(coll, "pets that purr", where={"lang": "fr"}, mode=mode) == ["cats"]
        assert found(coll, "pets that purr", where={"owner": "bob"}, mode=mode) == ["cats"]  # a key new to the store
        assert "cats" not in found(coll, "pets that purr", where={"lang": "en"}, mode=mode)
        assert found(coll, "pets that purr", where={"team": "a"}, mode=mode) == []
    assert [d.id for d in coll.documents(where={"owner": "bob"})] == ["cats"]
    assert coll.search("purr", k=1, mode="lexical")[0].metadata == {"lang": "fr", "owner": "bob"}
    # metadata that only differs in key order, or an int given as the same int, is no change
    gen = generation(coll)
    assert coll.add_texts_report([CATS], ids=["cats"], metadata={"owner": "bob", "lang": "fr"}).unchanged == 1
    assert generation(coll) == gen
    # but true is not 1 in JSON
    assert coll.add_texts_report([CATS], ids=["cats"], metadata={"n": 1}).metadata_updated == 1
    assert coll.add_texts_report([CATS], ids=["cats"], metadata={"n": True}).metadata_updated == 1
    assert found(coll, "purr", where={"n": True}, mode="lexical") == ["cats"]
    assert embedded(coll) == [] and chunk_rows(coll) == before


def test_a_changed_text_is_embedded_again_and_found_by_its_new_text(coll):
    coll.add_texts([CATS, BREAD], ids=["x", "bread"])
    embedded(coll)
    before = chunk_rows(coll)
    report = coll.add_texts_report([ROCKETS, BREAD], ids=["x", "bread"])
    assert embedded(coll) == [ROCKETS]  # the changed text only, not the unchanged one beside it
    assert (report.added, report.replaced, report.metadata_updated, report.unchanged) == (0, 1, 0, 1)
    after = chunk_rows(coll)
    assert after["bread"] == before["bread"] and not set(after["x"]) & set(before["x"])
    assert coll.get("x").text == ROCKETS
    assert found(coll, "a space vehicle put a satellite in orbit", mode="dense")[0] == "x"
    assert found(coll, "rocket satellite", mode="lexical") == ["x"]
    assert found(coll, "furry pets purr", mode="lexical") == []
    # and back again: the text is compared, not only whether the id was seen
    coll.add_texts([CATS], ids=["x"])
    assert embedded(coll) == [CATS] and coll.get("x").text == CATS


def test_a_mixed_batch_embeds_only_the_new_and_changed_texts(coll):
    coll.add_texts([CATS, ROCKETS, BREAD], ids=["same", "meta", "changed"], metadata={"v": 1})
    embedded(coll)
    before = chunk_rows(coll)
    report = coll.add_texts_report([STOCKS, CATS, ROCKETS, GUITAR], ids=["new", "same", "meta", "changed"],
                                   metadata=[{"v": 1}, {"v": 1}, {"v": 2}, {"v": 1}])
    assert sorted(embedded(coll)) == sorted([STOCKS, GUITAR])
    assert report.ids == ["new", "same", "meta", "changed"]
    assert (report.added, report.replaced, report.metadata_updated, report.unchanged) == (1, 1, 1, 1)
    after = chunk_rows(coll)
    assert after["same"] == before["same"] and after["meta"] == before["meta"]
    assert not set(after["changed"]) & set(before["changed"])
    got = {d.id: (d.text, d.metadata) for d in coll.documents()}
    assert got == {"new": (STOCKS, {"v": 1}), "same": (CATS, {"v": 1}), "meta": (ROCKETS, {"v": 2}),
                   "changed": (GUITAR, {"v": 1})}
    assert found(coll, "tuning an acoustic guitar", mode="dense")[0] == "changed"
    assert found(coll, "guitar", where={"v": 1}, mode="lexical") == ["changed"]
    assert found(coll, "dough oven loaf", mode="lexical") == []
    assert found(coll, "satellite", where={"v": 2}, mode="lexical") == ["meta"]


def test_cli_add_says_how_many_were_unchanged_and_how_many_had_only_their_metadata_updated(coll):
    coll.add_texts([CATS, ROCKETS, BREAD], ids=["same", "meta", "changed"], metadata=[{"v": "1"}, {"v": "0"}, {}])
    before = chunk_rows(coll)
    said = ok(run("add", coll.path, "--text", CATS, "--id", "same", "--text", ROCKETS, "--id", "meta",
                  "--text", GUITAR, "--id", "changed", "--text", STOCKS, "--id", "new", "--meta", "v=1")).stdout
    assert said.strip() == ("c: added 4 document(s), 1 replacing the one of the same id, "
                            "1 unchanged (same text and metadata: nothing embedded), "
                            "1 with the same text, only the metadata updated (nothing embedded); 4 in the collection")
    after = chunk_rows(coll)
    assert after["same"] == before["same"] and after["meta"] == before["meta"]
    assert coll.get("meta").metadata == {"v": "1"} and coll.get("changed").text == GUITAR


def test_documents_stored_without_a_hash_are_embedded_once_then_skipped(coll):
    coll.add_texts([CATS, ROCKETS], ids=["cats", "rockets"])
    with sqlite3.connect(coll.path / STORE_FILE) as db:  # as texts were stored before they kept a hash
        db.execute("UPDATE documents SET content_hash = NULL")
    embedded(coll)
    report = coll.add_texts_report([CATS, ROCKETS], ids=["cats", "rockets"])
    assert sorted(embedded(coll)) == sorted([CATS, ROCKETS])
    before = chunk_rows(coll)
    coll.add_texts([CATS, ROCKETS], ids=["cats", "rockets"])
    assert embedded(coll) == [] and chunk_rows(coll) == before
    assert (report.replaced, report.unchanged) == (2, 0)


def test_a_file_document_of_the_same_id_is_never_taken_for_the_text(coll, tmp_path):
    """A file's hash is of its bytes, and its document was read from what the file holds:
    a text sent for the same id replaces it, even were the hashes equal."""
    note = tmp_path / "note.txt"
    note.write_text(CATS)
    coll.add_files([note])
    key = next(coll.documents()).id
    embedded(coll)
    assert coll.add_texts_report([CATS], ids=[key]).replaced == 1
    assert embedded(coll) == [CATS] and coll.get(key).source is None


def test_a_failed_batch_writes_none_of_it_and_a_retry_is_still_cheap(coll):
    coll.add_texts([CATS, ROCKETS], ids=["meta", "changed"], metadata={"v": 1})
    embedded(coll)
    before, gen = chunk_rows(coll), generation(coll)
    with pytest.raises(InvalidInput, match=r"texts\[3\] has nothing the model reads"):
        coll.add_texts([CATS, BREAD, GUITAR, "\u0301\u0301"], ids=["meta", "changed", "new", "bad"],
                       metadata={"v": 2})
    assert chunk_rows(coll) == before and generation(coll) == gen
    assert coll.get("meta").metadata == {"v": 1} and coll.get("changed").text == ROCKETS and coll.count() == 2
    embedded(coll)
    report = coll.add_texts_report([CATS, BREAD, GUITAR], ids=["meta", "changed", "new"], metadata={"v": 2})
    assert sorted(embedded(coll)) == sorted([BREAD, GUITAR])
    assert (report.added, report.replaced, report.metadata_updated) == (1, 1, 1)


def stored_vectors_match_text(coll, embedder, key: str) -> bool:
    """Whether the stored chunks of ``key`` hold the vectors the model gives their text now."""
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        rows = db.execute("SELECT c.text, c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id "
                          "WHERE d.key = ? ORDER BY c.position", (key,)).fetchall()
    vectors = np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    return bool(np.allclose(vectors, embedder.embed([t for t, _ in rows], kind="passage"), atol=1e-4))


def test_a_text_another_writer_changes_after_the_check_ends_as_this_call_gave_it(coll, embedder):
    """The check before embedding is made again inside the write: "a" looked unchanged,
    and another writer replaces it while this call embeds its other texts."""
    coll.add_texts([CATS, ROCKETS], ids=["a", "b"])
    embedded(coll)

    def other_writer():  # another Collection on the same store, as another process would be
        with Collection.open(coll.path, embedder=embedder) as other:
            other.add_texts([STOCKS], ids=["a"], metadata={"by": "other"})

    coll.embedder.hook = other_writer
    report = coll.add_texts_report([CATS, BREAD, ROCKETS], ids=["a", "new", "b"])
    assert embedded(coll) == [BREAD, CATS]  # "a" only once the write found it changed
    assert (report.added, report.replaced, report.unchanged) == (1, 1, 1)
    doc = coll.get("a")
    assert (doc.text, doc.metadata) == (CATS, {})
    assert stored_vectors_match_text(coll, embedder, "a")
    assert found(coll, "pets that purr", mode="dense")[0] == "a"
    assert found(coll, "stock exchange interest rate", mode="lexical") == []


def test_a_text_another_writer_stores_meanwhile_is_not_written_twice(coll, embedder):
    """The other way round: "a" looked changed and was embedded, and another writer stored
    that very text meanwhile (other metadata): only this call's metadata is written."""
    coll.add_texts([CATS], ids=["a"])
    embedded(coll)

    def other_writer():
        with Collection.open(coll.path, embedder=embedder) as other:
            other.add_texts([ROCKETS], ids=["a"], metadata={"by": "other"})

    rows = {}
    coll.embedder.hook = lambda: (other_writer(), rows.update(chunk_rows(coll)))
    report = coll.add_texts_report([ROCKETS], ids=["a"], metadata={"by": "me"})
    assert chunk_rows(coll) == rows  # the other writer's chunks stay
    assert (report.replaced, report.metadata_updated) == (0, 1)
    assert coll.get("a").metadata == {"by": "me"} and coll.get("a").text == ROCKETS
    assert stored_vectors_match_text(coll, embedder, "a")


def test_threads_re_adding_versions_of_the_same_ids_leave_each_its_own_vectors(coll, embedder):
    """Writers re-sending a mix of versions of the same ids: each document ends with one
    of the texts sent, the vectors of that text, and the hash of it."""
    versions = [CATS, ROCKETS, BREAD]
    errors = []

    def writer(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(8):
                picks = rng.integers(0, len(versions), 3)
                coll.add_texts([versions[p] for p in picks], ids=["a", "b", "c"],
                               metadata=[{"v": int(p)} for p in picks])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sqlite3.connect(coll.path / STORE_FILE) as db:
        hashes = dict(db.execute("SELECT key, content_hash FROM documents"))
    for key in "abc":
        doc = coll.get(key)
        assert doc.text == versions[doc.metadata["v"]] and hashes[key] == text_hash(doc.text)
        assert stored_vectors_match_text(coll, embedder, key)
    assert coll.info()["index"]["vectors"] == sum(map(len, chunk_rows(coll).values()))
