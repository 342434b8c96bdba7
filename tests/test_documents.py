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
