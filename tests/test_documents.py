"""Reading stored documents back: Collection.get and Collection.documents (the real model,
ONNX Runtime, FAISS and SQLite, on a small collection)."""
import threading

import pytest

from semsearch.collection import DOCUMENT_PAGE, Collection
from semsearch.errors import InvalidInput, NoSuchCollection, NoSuchDocument, NotFound

LONG = ("  Paragraph {n}: the committee met on a rainy Tuesday to review the budget, the staffing "
        "plan and the roadmap.\n\nEveryone agreed that the old servers must be replaced before "
        "winter.\t")


@pytest.fixture(scope="module")
def coll(tmp_path_factory, model_folder):
    with Collection.create(tmp_path_factory.mktemp("docs") / "c", chunk_tokens=32, overlap=8) as c:
        texts = {"long": "".join(LONG.format(n=n) for n in range(6)), "b": "bread and butter",
                 "a/1": "apples, pears and plums", "c": "cats purr"}
        c.add_texts(list(texts.values()), ids=list(texts),
                    metadata=[{"team": "ops"}, {"team": "food", "year": 2020}, {"team": "food"}, {}])
        yield c, texts


def test_get_gives_the_text_metadata_and_chunk_count_it_was_added_with(coll):
    c, texts = coll
    doc = c.get("b")
    assert (doc.id, doc.text, doc.source, doc.metadata, doc.chunks) == ("b", "bread and butter", None,
                                                                       {"team": "food", "year": 2020}, 1)
    assert doc.to_dict()["added_at"] == doc.added_at > 0


def test_a_text_of_many_chunks_comes_back_whole_up_to_its_trailing_whitespace(coll):
    c, texts = coll
    doc = c.get("long")
    assert doc.chunks > 3
    assert doc.text == texts["long"].rstrip()


def test_every_hit_indexes_into_the_text_get_gives(coll):
    c, _ = coll
    hits = c.search("servers replaced before winter", k=20, mode="dense")
    assert any(h.id == "long" for h in hits)
    for hit in hits:
        assert c.get(hit.id).text[hit.start:hit.end] == hit.text


def test_get_of_an_id_the_collection_lacks_is_not_found(coll):
    c, _ = coll
    with pytest.raises(NoSuchDocument, match="no document 'nope'") as err:
        c.get("nope")
    assert isinstance(err.value, NotFound)


@pytest.mark.parametrize("bad", [None, "", " ", 1.5, ["b"], "x\0y"])
def test_get_refuses_what_is_no_id(coll, bad):
    with pytest.raises(InvalidInput, match="^id "):
        coll[0].get(bad)


def test_documents_lists_all_in_id_order_or_those_asked_for(coll):
    c, texts = coll
    assert [d.id for d in c.documents()] == sorted(texts)
    assert [d.id for d in c.documents(ids=["c", "missing", "a/1"])] == ["a/1", "c"]
    assert [d.id for d in c.documents(where={"team": "food"})] == ["a/1", "b"]
    assert [d.id for d in c.documents(ids=["b", "c"], where={"team": "food"})] == ["b"]
    assert [d.id for d in c.documents(where={"year": 2020})] == ["b"]


def test_documents_pages_with_after_and_limit(coll):
    c, texts = coll
    first = [d.id for d in c.documents(limit=2)]
    rest = [d.id for d in c.documents(after=first[-1])]
    assert first + rest == sorted(texts)
    assert [d.id for d in c.documents(after="b", limit=1)] == ["c"]
    assert list(c.documents(after="zzz")) == []


def test_documents_without_text(coll):
    c, _ = coll
    docs = list(c.documents(text=False))
    assert all(d.text is None and d.chunks >= 1 for d in docs)


@pytest.mark.parametrize("kwargs, words", [
    ({"where": {"unknown": 1}}, "unknown metadata key"),
    ({"limit": 0}, "limit must be at least 1"),
    ({"limit": "5"}, "limit must be a whole number"),
    ({"after": ""}, "after must be"),
    ({"ids": [2.5]}, r"ids\[0\] must be a string"),
    ({"text": "no"}, "text must be True or False"),
])
def test_documents_refuses_bad_arguments_when_called_not_when_read(coll, kwargs, words):
    with pytest.raises(InvalidInput, match=words):
        coll[0].documents(**kwargs)  # not iterated: the error comes at the call


def test_documents_walks_pages_past_one_snapshot_while_a_writer_adds(tmp_path, embedder):
    """More documents than a page: each page is read in its own snapshot, so a walk sees
    every document that was there before it began, once, in order, and a concurrent add
    neither blocks it nor is blocked by it."""
    n = DOCUMENT_PAGE * 2 + 5
    ids = [f"d{i:04d}" for i in range(n)]
    with Collection.create(tmp_path / "big", embedder=embedder) as c:
        c.add_vectors(ids, embedder.embed(["x"] * n), [f"text {i}" for i in range(n)])
        seen, added = [], threading.Event()
        for doc in c.documents():
            seen.append(doc.id)
            if len(seen) == DOCUMENT_PAGE + 1:  # inside the second page: add past and before the walk
                c.add_vectors(["a-first", "zz-last"], embedder.embed(["y", "z"]), ["y", "z"])
                added.set()
        assert added.is_set()
        assert seen == ids + ["zz-last"]
        assert [d.text for d in c.documents(ids=["d0007"])] == ["text 7"]


def test_documents_of_a_removed_collection_is_not_found(tmp_path, embedder):
    from semsearch.collection import delete_collection

    c = Collection.create(tmp_path / "gone", embedder=embedder)
    c.add_texts(["one"], ids=["1"])
    delete_collection(tmp_path / "gone")
    with pytest.raises(NoSuchCollection):
        c.documents()
    c.close()


# -- similar: documents like a stored one ----------------------------------------------------
TOPICS = {
    "cats": "Cats are small furry pets that purr, chase mice and sleep most of the day.",
    "kittens": "A kitten is a young cat; kittens play, purr and nap in the sun.",
    "rockets": "The rocket launch carried a satellite into orbit around the Earth.",
    "space": "Astronauts on the space station watched the satellite drift past the Earth.",
    "bread": "Knead the dough, let it rise overnight, then bake the loaf in a hot oven.",
    "long": "".join(LONG.format(n=n) for n in range(4)),
}


@pytest.fixture(scope="module")
def topics(tmp_path_factory, model_folder):
    with Collection.create(tmp_path_factory.mktemp("similar") / "t", chunk_tokens=32, overlap=8) as c:
        c.add_texts(list(TOPICS.values()), ids=list(TOPICS),
                    metadata=[{"kind": "animal"}, {"kind": "animal"}, {"kind": "space"}, {"kind": "space"},
                              {"kind": "food"}, {"kind": "office"}])
        yield c


def oracle(c, key, docs=True):
    """The ranking `similar` must give, straight from store.sqlite: cosine of the mean of the
    document's chunk vectors (normalised) to every other chunk, best chunk per document."""
    import numpy as np

    rows = c.store.db.execute("SELECT d.key, c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id").fetchall()
    vectors = np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    keys = [k for k, _ in rows]
    mean = vectors[[k == key for k in keys]].mean(0)
    scores = vectors @ (mean / np.linalg.norm(mean))
    ranked = sorted(((s, k) for s, k in zip(scores.tolist(), keys) if k != key), reverse=True)
    if docs:
        ranked = list({k: (s, k) for s, k in reversed(ranked)}.values())[::-1]
        ranked = sorted(ranked, reverse=True)
    return [k for _, k in ranked], [s for s, _ in ranked]


@pytest.mark.parametrize("key", ["cats", "rockets", "long"])
def test_similar_ranks_the_other_documents_as_brute_force_does_and_leaves_the_document_out(topics, key):
    want_ids, want_scores = oracle(topics, key)
    hits = topics.similar(key, k=10)
    assert [h.id for h in hits] == want_ids
    assert [h.score for h in hits] == pytest.approx(want_scores, abs=1e-5)
    assert hits[0].id == {"cats": "kittens", "rockets": "space", "long": hits[0].id}[key]


def test_similar_chunks_leave_out_every_chunk_of_the_document(topics):
    want_ids, _ = oracle(topics, "long", docs=False)
    hits = topics.similar("long", k=3, docs=False)
    assert [h.id for h in hits] == want_ids[:3] and "long" not in want_ids


def test_similar_takes_where_and_k(topics):
    assert [h.id for h in topics.similar("cats", k=5, where={"kind": "space"})] == \
        [k for k in oracle(topics, "cats")[0] if k in ("rockets", "space")]
    assert len(topics.similar("cats", k=2)) == 2


def test_similar_of_a_missing_id_or_with_bad_arguments_is_refused(topics):
    with pytest.raises(NoSuchDocument, match="no document 'nope'"):
        topics.similar("nope")
    for kwargs in ({"k": 0}, {"where": {"nokey": 1}}, {"docs": "yes"}):
        with pytest.raises(InvalidInput):
            topics.similar("cats", **kwargs)
    with pytest.raises(InvalidInput):
        topics.similar("")
