"""`eval` options: --ignore-identical-ids (BEIR's evaluator's default, ours off)."""
import json

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.evaluation import evaluate


def write_beir(folder):
    """One query, "q1", that is also a document (ArguAna's shape). Lexically, for "alpha":
    q1 first, then d1..d9, then the one relevant document, then d10 (BM25 grows with the
    count of "alpha" in texts of equal length)."""
    counts = {"q1": 12, **{f"d{i}": 12 - i for i in range(1, 10)}, "rel": 2, "d10": 1}
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for doc_id, n in counts.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": " ".join(["alpha"] * n + ["filler"] * (12 - n))})
                     + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "alpha"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\trel\t1\n")
    return folder


def test_ignore_identical_ids_leaves_out_the_query_own_document(tmp_path, home):
    """BEIR drops a retrieved document whose id is the query's; `eval` had no way to."""
    beir = write_beir(tmp_path / "beir")
    runs = {}
    for flag in ([], ["--ignore-identical-ids"]):
        out = CliRunner().invoke(cli, ["eval", str(beir), "--mode", "lexical", "--json", *flag])
        assert out.exit_code == 0, out.output
        runs[bool(flag)] = json.loads(out.stdout)
    assert runs[False]["metrics"]["mrr@10"] == 0  # rank 11: q1 itself is first
    assert runs[True]["metrics"]["mrr@10"] == pytest.approx(1 / 10)
    assert runs[False]["metrics"]["recall@100"] == runs[True]["metrics"]["recall@100"] == 1
    assert (runs[False]["ignore_identical_ids"], runs[True]["ignore_identical_ids"]) == (False, True)


def test_ignoring_identical_ids_still_ranks_k_other_documents(tmp_path, home):
    """With k=10 the relevant document is the 11th found and the 10th once q1 is left out."""
    beir = write_beir(tmp_path / "beir")
    assert evaluate(beir, mode="lexical", k=10)["metrics"]["mrr@10"] == 0
    assert evaluate(beir, mode="lexical", k=10, ignore_identical_ids=True)["metrics"]["mrr@10"] == pytest.approx(0.1)


def test_eval_help_says_why_identical_ids_are_kept_by_default():
    out = CliRunner().invoke(cli, ["eval", "--help"])
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    assert "--ignore-identical-ids" in text and "ArguAna" in text and "Cranfield" in text


def test_ignore_identical_ids_must_be_a_bool(tmp_path, home):
    """"no" was truthy: it turned the option on."""
    from semsearch.errors import InvalidInput
    with pytest.raises(InvalidInput, match="ignore_identical_ids must be True or False"):
        evaluate(write_beir(tmp_path / "beir"), mode="lexical", ignore_identical_ids="no")
