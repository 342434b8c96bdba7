"""Hybrid search finds what either side alone misses; `eval` scores a BEIR folder."""
import json

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.collection import Collection
from semsearch.errors import InvalidInput, WrongType
from semsearch.evaluation import evaluate

CORPUS = {
    "rare-id": "Part XJ4471 ships in the blue box together with the spare hinges.",
    "codes": "A list of common error codes and what each one tells users.",
    "errors": "Troubleshooting guide: how to read messages and diagnostic logs.",
    "firmware": "Updating the firmware of the device takes about ten minutes.",
    "paraphrase": "The automobile engine fails to turn over on freezing mornings.",
    "race": "The race will start at noon near the harbour.",
    "park": "A car park opened next to the railway station.",
    "cooking": "Simmer the tomato sauce slowly with garlic and basil.",
}


@pytest.fixture(scope="module")
def coll(collection_of):
    return collection_of(CORPUS)


def ranked_ids(coll, query, mode, k=8):
    return [h.id for h in coll.search(query, k=k, mode=mode)]


def test_rare_identifier_missed_by_dense_is_found_by_hybrid(coll):
    query = "what does error XJ4471 mean"
    assert ranked_ids(coll, query, "dense")[0] != "rare-id"
    assert ranked_ids(coll, query, "lexical")[0] == "rare-id"
    assert "rare-id" in ranked_ids(coll, query, "hybrid", k=2)


def test_paraphrase_missed_by_lexical_is_found_by_hybrid(coll):
    query = "my car won't start when it is cold"
    assert "paraphrase" not in ranked_ids(coll, query, "lexical")
    assert ranked_ids(coll, query, "dense")[0] == "paraphrase"
    assert "paraphrase" in ranked_ids(coll, query, "hybrid", k=3)


def test_filters_apply_to_both_sides_of_hybrid(tmp_path, model_folder):
    with Collection.create(tmp_path / "f") as c:
        c.add_texts(["wing flutter at high speed", "wing flutter in wind tunnels", "sauce recipe"],
                    ids=["a", "b", "c"], metadata=[{"lab": "x"}, {"lab": "y"}, {"lab": "y"}])
        hits = c.search("wing flutter", k=3, mode="hybrid", where={"lab": "y"})
        assert [h.id for h in hits] == ["b", "c"]


def test_feedback_weight_zero_is_plain_rrf_of_both_rankings(coll):
    from semsearch.search import rrf

    query = "error code firmware"
    dense = [(h.chunk_id, h.score) for h in coll.search(query, k=100, mode="dense")]
    lexical = [(h.chunk_id, h.score) for h in coll.search(query, k=100, mode="lexical")]
    want = [c for c, _ in rrf([dense, lexical], (1.0, 1.0), 60)][:5]
    got = [h.chunk_id for h in coll.search(query, k=5, mode="hybrid", feedback_weight=0)]
    assert got == want


def write_beir(folder):
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for doc_id, text in CORPUS.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    queries = {"q1": "spare hinges for part XJ4471", "q2": "tomato sauce with garlic"}
    with open(folder / "queries.jsonl", "w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\trare-id\t2\nq2\tcooking\t1\n")
    return folder


def test_evaluate_scores_perfect_ranking_as_one(tmp_path, model_folder):
    result = evaluate(write_beir(tmp_path / "beir"), mode="hybrid")
    assert (result["documents"], result["queries"]) == (8, 2)
    assert result["metrics"]["mrr@10"] == pytest.approx(1.0)
    assert result["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert result["metrics"]["recall@100"] == pytest.approx(1.0)


def test_eval_cli_prints_metrics_json(tmp_path, model_folder):
    out = CliRunner().invoke(cli, ["eval", str(write_beir(tmp_path / "beir")), "--mode", "lexical", "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output)["metrics"]
    assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10", "map@100"}


def test_eval_cli_on_a_folder_without_beir_files_is_one_line_error(tmp_path):
    out = CliRunner().invoke(cli, ["eval", str(tmp_path)])
    assert out.exit_code == 3  # NotFound (errors.py): there is no corpus.jsonl
    assert out.output.strip().startswith("error:") and "Traceback" not in out.output


def test_identical_texts_rank_in_the_order_they_were_added_whatever_k(tmp_path, model_folder):
    """Tied scores came back in FAISS's heap order (last added first for k < 100, another
    order above), so the first hit of k=1 was not the first of k=2, and hybrid interleaved them."""
    texts = ["The cat sat on the mat."] * 4 + ["Dogs bark at night.", "Cooking with garlic."]
    with Collection.create(tmp_path / "ties") as c:
        c.add_texts(texts, ids=[f"c{i}" for i in range(len(texts))])
        for mode in ("dense", "lexical", "hybrid"):
            for k in (2, 4, 100):  # which of the tied chunks make a cut is the index's choice; their order is ours
                got = [h.id for h in c.search("cat on a mat", k=k, mode=mode)][:4]
                assert got == sorted(got) and (k < 4 or got == ["c0", "c1", "c2", "c3"]), (mode, k, got)


def test_eval_with_k_below_every_cut_is_refused_not_an_empty_score(tmp_path, model_folder):
    """-k 5 printed the header, no measure at all and exit 0 (every measure is cut at 10 or 100)."""
    out = CliRunner().invoke(cli, ["eval", str(write_beir(tmp_path / "beir")), "--mode", "lexical", "-k", "5"])
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.startswith("error: k=5 is below every measure's cut") and "Traceback" not in out.output


def test_eval_names_the_measures_a_small_k_leaves_out(tmp_path, model_folder):
    out = CliRunner().invoke(cli, ["eval", str(write_beir(tmp_path / "beir")), "--mode", "lexical", "-k", "50"])
    assert out.exit_code == 0, out.output
    assert "ndcg@10" in out.stdout and "recall@100" not in out.stdout
    assert out.stderr == "note: recall@100, map@100 left out: -k 100 or more ranks enough documents for them\n"


@pytest.mark.parametrize("options, error", [({"rrf_k": 0}, InvalidInput), ({"weights": (0, 0)}, InvalidInput),
                                            ({"bogus": 1}, TypeError), ({"docs": False}, TypeError),
                                            ({"split": None}, WrongType)])
def test_evaluate_refuses_a_bad_option_before_embedding_the_corpus(tmp_path, model_folder, options, error):
    """A bad or unknown search option was refused only by the first search, once the whole
    corpus had been embedded; a split of None looked for qrels/None.tsv."""
    with pytest.raises(error):
        evaluate(write_beir(tmp_path / "beir"), mode="lexical", collection=str(tmp_path / "ev"), **options)
    if (tmp_path / "ev").exists():
        with Collection.open(tmp_path / "ev") as coll:
            assert coll.count() == 0
