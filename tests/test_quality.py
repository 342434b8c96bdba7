"""Lexical search ranks whole documents; every mode's score says what it is; old stores upgrade."""
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import InvalidInput, WrongType
from semsearch.search import fts_query

# A document whose two query words sit in different chunks (12 tokens a chunk), beside
# documents with one of the words each, and others for BM25's document frequencies.
DOCS = {
    "both": "Wing flutter was seen during the first test flight of the prototype, and afterwards "
            "the damaged turbine was replaced.",
    "flutter": "Engineers measured wing flutter at high speed in the new wind tunnel.",
    "turbine": "A routine turbine inspection found small cracks in two of the blades.",
    "cooking": "Simmer the tomato sauce slowly with garlic and basil.",
    "race": "The race will start at noon near the harbour.",
    "park": "A car park opened next to the railway station.",
    "train": "The night train to the coast was late again.",
}


@pytest.fixture(scope="module")
def coll(collection_of):
    return collection_of(DOCS, chunk_tokens=12, overlap=2)


def test_a_long_document_is_split_into_several_chunks(coll):
    assert coll.store.chunks_per_document()["both"] >= 2


def test_lexical_scores_the_whole_document_so_words_in_different_chunks_add_up(coll):
    hits = coll.search("flutter turbine", k=7, mode="lexical")
    assert hits[0].id == "both"
    assert len({h.id for h in hits}) == len(hits)  # one hit per document


def test_a_lexical_hit_shows_the_chunk_where_its_words_are(coll):
    hit = coll.search("damaged turbine replaced", k=1, mode="lexical")[0]
    assert hit.id == "both" and "turbine" in hit.text.lower()


def test_query_words_are_counted_once_and_stopwords_dropped():
    assert fts_query("What is the flutter of Flutter wings") == '"flutter" OR "wings"'
    assert fts_query("what is this") == '"what" OR "is" OR "this"'  # nothing else left: keep all


def test_query_syntax_cannot_break_the_lexical_query(coll):
    assert {h.id for h in coll.search('flutter" AND ( *', k=5, mode="lexical")} == {"flutter", "both"}


def test_each_mode_states_what_its_score_is(coll):
    query = "wing flutter"
    dense = coll.search(query, k=4, mode="dense", docs=True)
    assert all(h.score == h.cosine and h.bm25 is None for h in dense)
    lexical = coll.search(query, k=4, mode="lexical")
    assert all(h.score == h.bm25 and h.bm25 > 0 and h.cosine is None for h in lexical)
    hybrid = coll.search(query, k=4, mode="hybrid", feedback_weight=0)
    assert all(0 < h.score <= 1 for h in hybrid)
    query_vector = coll.embedder.embed([query], kind="query")[0]
    bm25 = {h.id: h.bm25 for h in lexical}
    for hit in hybrid:  # the cosine of the chunk shown, the BM25 of its document
        chunk_vector = coll.store.chunk_vectors(np.array([hit.chunk_id]))[0]
        assert hit.cosine == pytest.approx(float(chunk_vector @ query_vector), abs=1e-5)
        assert hit.bm25 == (pytest.approx(bm25[hit.id]) if hit.id in bm25 else None)
    if hybrid[0].id == dense[0].id == lexical[0].id:
        assert hybrid[0].score == pytest.approx(1.0)  # first on both sides: the best possible


def test_search_json_carries_cosine_and_bm25(coll):
    out = CliRunner().invoke(cli, ["search", str(coll.path), "wing flutter", "--json", "-k", "2"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)
    assert {"score", "cosine", "bm25"} <= set(hits[0]) and hits[0]["cosine"] is not None


def test_replacing_and_deleting_documents_keeps_the_lexical_index_exact(tmp_path, model_folder):
    with Collection.create(tmp_path / "c", chunk_tokens=12, overlap=2) as c:
        c.add_texts([DOCS["both"], "garlic bread"], ids=["a", "b"])
        assert [h.id for h in c.search("turbine", mode="lexical")] == ["a"]
        c.add_texts(["a note about harbour cranes"], ids=["a"])  # replaces a
        assert [h.id for h in c.search("turbine", mode="lexical")] == []
        assert [h.id for h in c.search("harbour cranes", mode="lexical")] == ["a"]
        c.delete(["a"])
        assert [h.id for h in c.search("harbour", mode="lexical")] == []
        c.store.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
        assert c.store.db.execute("SELECT count(*) FROM documents_fts").fetchone()[0] == 1


def test_a_store_made_before_the_document_index_is_upgraded_when_opened(tmp_path, model_folder):
    with Collection.create(tmp_path / "old") as c:
        c.add_texts(list(DOCS.values()), ids=list(DOCS))
    db = sqlite3.connect(tmp_path / "old" / "store.sqlite")
    db.execute("DROP TABLE documents_fts")  # what a store of the previous release holds
    db.execute("DELETE FROM meta WHERE key = 'lexical_version'")
    db.commit()
    db.close()
    with Collection.open(tmp_path / "old") as c:
        assert c.search("garlic sauce", k=1, mode="lexical")[0].id == "cooking"
        assert c.search("flutter turbine", k=1, mode="lexical")[0].id == "both"


def test_docs_hits_do_not_depend_on_k_when_one_document_fills_the_dense_candidates(tmp_path, model_folder):
    """The 100 dense candidates were all chunks of one long document, so the others entered
    hybrid by their lexical rank alone (0.48); a k that found fewer documents than asked dug
    deeper and scored them on both sides (0.96): the top 3 of k=3 were not those of k=10."""
    long = " ".join(f"Turbine blade {i} showed wear during the inspection of engine {i % 7}." for i in range(300))
    docs = {"long": long, "x": "Inspection of turbine blade cracks.", "y": "Turbine maintenance schedule for the winter.",
            "z": "Kitchen knife blade sharpening.", "w": "Garden hose repair.", "v": "Bird migration in autumn."}
    query = "turbine blade inspection cracks"
    with Collection.create(tmp_path / "c", chunk_tokens=16, overlap=0) as c:
        c.add_texts(list(docs.values()), ids=list(docs))
        assert c.store.chunks_per_document()["long"] > 100
        for mode in ("dense", "hybrid"):
            few, more = (c.search(query, k=k, mode=mode, docs=True) for k in (3, 10))
            assert [(h.id, h.score) for h in few] == [(h.id, h.score) for h in more[:3]], mode


# -- what a notebook passes: numpy scalars, a data frame's row, a string by mistake ---------
def test_metadata_and_filters_take_numpy_values_as_the_python_ones_they_hold(tmp_path, model_folder):
    """A data frame's row holds numpy scalars: they were refused ('holds a int64, which JSON
    cannot store'; an np.bool_ was called 'a bool'), and so were numpy values in where."""
    row = {"year": np.int64(2020), "score": np.float32(0.5), "ok": np.bool_(True), "tags": np.array(["x", "y"])}
    with Collection.create(tmp_path / "c") as c:
        c.add_texts(["one row of a data frame", "another text"], ids=["r1", "r2"], metadata=[row, {}])
        hit = c.search("row of a data frame", k=1)[0]
        assert hit.metadata == {"year": 2020, "score": 0.5, "ok": True, "tags": ["x", "y"]}
        assert json.dumps(hit.to_dict())
        assert [h.id for h in c.search("row", where={"year": np.int64(2020), "ok": np.bool_(True)})] == ["r1"]


def test_metadata_given_as_a_string_is_refused_as_the_wrong_type(tmp_path, model_folder):
    """A string was taken as one metadata entry per character: 'got 6 metadata entries for 1 texts'."""
    with Collection.create(tmp_path / "c") as c:
        with pytest.raises(WrongType, match="metadata must be a dict or a list of dicts, not str"):
            c.add_texts(["a note"], metadata="team=z")
        assert c.count() == 0


def test_the_package_lists_and_lazily_loads_its_public_names():
    """dir(semsearch) (a notebook's tab completion) showed none of the API, search results had
    no public type to annotate with, and semsearch.errors was an AttributeError until
    something else imported it; none of it may load torch."""
    code = ("import sys, semsearch\n"
            "assert {'Embedder', 'Collection', 'Hit', 'evaluate', 'export_model', 'SemsearchError'} <= set(dir(semsearch))\n"
            "assert issubclass(semsearch.errors.NotFound, semsearch.SemsearchError)\n"
            "assert semsearch.Hit is semsearch.search.Hit and semsearch.Collection.__name__ == 'Collection'\n"
            "assert not hasattr(semsearch, 'nope') and 'torch' not in sys.modules\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr == ""


def test_a_blank_query_in_a_list_is_named_by_its_position(coll):
    """Among 10,000 queries, 'the query is empty' left the caller to find which one."""
    with pytest.raises(InvalidInput, match="^query 2 is empty$"):
        coll.search(["wing flutter", "turbine", "  "])
    with pytest.raises(InvalidInput, match="^the query is empty$"):
        coll.search(" ")
