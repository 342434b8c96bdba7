import json
import random
from math import log2

import pytest

pytest.importorskip("pytrec_eval")
from semsearch.errors import InvalidInput, NotFound  # noqa: E402
from semsearch.metrics import METRICS, load_beir, per_query, score_run  # noqa: E402

# trec_eval's ndcg_cut uses linear gain (gain = relevance), discount log2(rank + 1).
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},  # d3 judged non-relevant; d4 never retrieved
    "q2": {"d7": 1},  # only relevant doc at rank 11
    "q3": {"d8": 1},  # absent from the run
    "q4": {"d9": 3},  # empty result list
}
RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6},  # ranks: d3=1 d1=2 d5=3 d2=4
    "q2": {**{f"n{i}": 1.0 - i / 100 for i in range(10)}, "d7": 0.5},  # d7 at rank 11
    "q4": {},
    "other": {"d1": 1.0},  # not judged: ignored
}


def test_hand_computed_values():
    pq = per_query(QRELS, RUN)
    # q1 DCG@10 = 0 (d3, rel 0) + 2/log2(3) (d1) + 0 (d5) + 1/log2(5) (d2) = 1.692536
    #    IDCG@10 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 3.130930  (ideal gains 2, 1, 1)
    ndcg1 = (2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3) + 1 / log2(4))
    assert pq["q1"]["ndcg@10"] == pytest.approx(ndcg1)
    assert ndcg1 == pytest.approx(1.692536 / 3.130930, abs=1e-6)  # 0.540586
    assert pq["q1"]["recall@100"] == pytest.approx(2 / 3)  # d1, d2 of d1, d2, d4
    assert pq["q1"]["mrr@10"] == pytest.approx(1 / 2)  # first relevant (d1) at rank 2
    assert pq["q1"]["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 3)  # P@2, P@4 over 3 relevant
    # q2: nothing relevant in the top 10, so nDCG@10 = MRR@10 = 0 (uncut recip_rank would be 1/11)
    assert pq["q2"] == pytest.approx({"ndcg@10": 0, "recall@100": 1, "mrr@10": 0, "map@100": 1 / 11})
    assert pq["q3"] == pq["q4"] == {m: 0.0 for m in METRICS}
    assert "other" not in pq

    mean = score_run(QRELS, RUN)  # denominator is all 4 judged queries
    assert mean["ndcg@10"] == pytest.approx(ndcg1 / 4)
    assert mean["recall@100"] == pytest.approx((2 / 3 + 1) / 4)
    assert mean["mrr@10"] == pytest.approx(0.5 / 4)
    assert mean["map@100"] == pytest.approx((1 / 3 + 1 / 11) / 4)


def test_ties_keep_our_order():
    # trec_eval alone would put "b" first (doc id descending); we rank by insertion order.
    assert score_run({"q": {"b": 1}}, {"q": {"a": 1.0, "b": 1.0}}, ["mrr@10"]) == {"mrr@10": 0.5}


def test_bad_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        score_run(QRELS, RUN, ["p@10"])


def test_matches_ranx():
    ranx = pytest.importorskip("ranx")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(300)]
    qrels, run = {}, {}
    for q in range(50):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels[qid] = {d: rng.randint(0, 3) for d in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant
        if q % 10 != 0:  # every tenth query has no results
            run[qid] = {d: rng.random() for d in rng.sample(docs, rng.randint(1, 150))}
    ours = score_run(qrels, run)
    # ranx "ndcg" is Järvelin's linear gain, like trec_eval ("ndcg_burges" is 2**rel - 1)
    ref = ranx.evaluate(ranx.Qrels.from_dict(qrels), ranx.Run.from_dict(run), list(METRICS), make_comparable=True)
    for m in METRICS:
        assert ours[m] == pytest.approx(float(ref[m]), abs=1e-6), m


def _write_beir(root, qrels_lines):
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "cats purr", "metadata": {"lang": "en"}},
        {"_id": "d2", "text": "dogs bark"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": "q1", "text": "purring"}, {"_id": "q2", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels_lines))


def test_load_beir(tmp_path):
    _write_beir(tmp_path, ["q1\td1\t2\n", "q1\td2\t0\n"])
    ds = load_beir(tmp_path)
    assert ds.corpus == {
        "d1": {"title": "Cats", "text": "cats purr", "metadata": {"lang": "en"}},
        "d2": {"title": "", "text": "dogs bark", "metadata": {}},
    }
    assert ds.queries == {"q1": "purring"}  # q2 has no qrels
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}}


def test_load_beir_errors(tmp_path):
    _write_beir(tmp_path, ["q1\td1\t2\n", "q1\td2\n"])
    with pytest.raises(ValueError, match=r"test\.tsv line 3"):
        load_beir(tmp_path)
    with pytest.raises(NotFound, match=r"no such file: .*dev\.tsv \(splits here: test\)"):
        load_beir(tmp_path, split="dev")  # as a missing corpus is: exit 3
    with open(tmp_path / "corpus.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"corpus\.jsonl line 3"):
        load_beir(tmp_path)


def test_load_beir_reads_qrels_without_a_header_and_refuses_what_it_cannot_read(tmp_path):
    """Line 1 was dropped unread (a qrels file without a header lost its first judgment);
    a qrels file that is not UTF-8 was an UnicodeDecodeError; an empty corpus scored 0."""
    _write_beir(tmp_path, [])
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\nq1\td2\t2\n")
    assert load_beir(tmp_path).qrels == {"q1": {"d1": 1, "d2": 2}}
    (tmp_path / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xff\t1\n")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(InvalidInput, match="no documents"):
        load_beir(tmp_path)


def write_dataset(root, queries: dict, qrels: dict, docs=12):
    """A BEIR folder whose document d<i> alone holds the word unique<i>, plus a blank one."""
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": f"note {i}", "text": f"unique{i} wing flow"} for i in range(docs)]
    corpus.append({"_id": "blank", "title": "", "text": " "})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items()))
    return root


def test_eval_scores_blank_documents_and_queries_and_more_queries_than_one_search_takes(tmp_path, model_folder):
    """A blank document or query refused the whole data set ('texts[12] is empty', 'the
    query is empty'), and past 10,000 queries eval failed ('at most 10,000 queries per call')."""
    from semsearch.evaluation import evaluate
    queries = {f"q{j}": f"unique{j % 12}" for j in range(10_001)}
    queries["blank"] = "  "
    qrels = {q: f"d{j % 12}" for j, q in enumerate(queries)}
    result = evaluate(write_dataset(tmp_path / "beir", queries, qrels), mode="lexical", k=10)
    assert result["queries"] == 10_002 and result["documents"] == 13
    assert result["metrics"]["mrr@10"] == pytest.approx(10_001 / 10_002)  # the blank query ranks nothing


def test_eval_fills_a_reused_collection_with_what_it_lacks_and_refuses_a_foreign_one(tmp_path, model_folder):
    """A reused collection that held part of the corpus was scored as if it held all of it."""
    from semsearch.collection import Collection
    from semsearch.evaluation import evaluate
    root = write_dataset(tmp_path / "beir", {f"q{i}": f"unique{i}" for i in range(12)},
                         {f"q{i}": f"d{i}" for i in range(12)})
    with Collection.create(tmp_path / "ev") as coll:
        coll.add_texts(["note 0\nunique0 wing flow", "note 1\nunique1 wing flow"], ids=["d0", "d1"])
    result = evaluate(root, mode="lexical", k=10, collection=str(tmp_path / "ev"))
    assert result["metrics"]["mrr@10"] == 1.0
    with Collection.open(tmp_path / "ev") as coll:
        assert coll.count() == 12
        coll.add_texts(["a note from another data set"], ids=["x1"])
    with pytest.raises(InvalidInput, match="not in the corpus"):
        evaluate(root, mode="lexical", collection=str(tmp_path / "ev"))


def test_eval_refuses_a_bad_k_or_mode_before_indexing_the_corpus(tmp_path, model_folder):
    """k over 10,000 or an unknown mode failed only at the first search, after the whole
    corpus was embedded (and left in a named collection)."""
    from semsearch.errors import TooLarge
    from semsearch.evaluation import evaluate
    root = write_dataset(tmp_path / "beir", {"q0": "unique0"}, {"q0": "d0"})
    with pytest.raises(TooLarge, match="k must be at most"):
        evaluate(root, k=10_001, collection=str(tmp_path / "ev"))
    with pytest.raises(InvalidInput, match="mode must be one of"):
        evaluate(root, mode="sparse", collection=str(tmp_path / "ev"))
    assert not (tmp_path / "ev").exists()


def test_eval_reports_only_the_measures_its_k_can_compute(tmp_path, model_folder):
    """With -k 10, recall@100 and map@100 were computed on 10 documents a query and
    printed under their @100 names."""
    from semsearch.evaluation import evaluate
    root = write_dataset(tmp_path / "beir", {"q0": "unique0"}, {"q0": "d0"})
    assert set(evaluate(root, mode="lexical", k=10)["metrics"]) == {"ndcg@10", "mrr@10"}
    assert set(evaluate(root, mode="lexical")["metrics"]) == set(METRICS)
