"""Retrieval evaluation: load BEIR-format datasets and score runs with trec_eval's measures.

Gain convention: nDCG uses trec_eval's *linear* gain (gain = graded relevance, discount
log2(rank + 1)), the same as ranx's ``ndcg`` (Järvelin), not the ``2**rel - 1`` gain of
ranx's ``ndcg_burges``. Relevance 0 judgements count as non-relevant for every measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput, NotFound

METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")

# our metric family -> trec_eval measure; mrr is recip_rank on a run cut to the top k.
_TREC = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "mrr": "recip_rank"}


@dataclass
class BeirDataset:
    corpus: dict[str, dict]  # doc id -> {"title": str, "text": str, "metadata": dict}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}


def _jsonl(path: Path):
    """(line number, record) of a BEIR file, each with an '_id' and a string 'text'."""
    from .loaders import numbered_records
    for n, obj in numbered_records(path):
        if "_id" not in obj or not isinstance(obj.get("text"), str):
            raise InvalidInput(f"{path} line {n}: expected an object with '_id' and string 'text'")
        yield n, obj


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

    Only queries with qrels are kept, so scores are means over the judged queries.
    """
    root = Path(path)
    corpus = {}
    for n, d in _jsonl(root / "corpus.jsonl"):
        meta = d.get("metadata") or {}
        if not isinstance(meta, dict):
            raise InvalidInput(f"{root / 'corpus.jsonl'} line {n}: 'metadata' must be an object")
        corpus[str(d["_id"])] = {"title": str(d.get("title") or ""), "text": d["text"], "metadata": meta}
    if not corpus:
        raise InvalidInput(f"{root / 'corpus.jsonl'} has no documents: nothing to retrieve")
    all_queries = {str(q["_id"]): q["text"] for _, q in _jsonl(root / "queries.jsonl")}

    qpath = root / "qrels" / f"{split}.tsv"
    if not qpath.is_file():
        splits = sorted(p.stem for p in qpath.parent.glob("*.tsv"))
        raise NotFound(f"no such file: {qpath}" + (f" (splits here: {', '.join(splits)})" if splits else ""))
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = qpath.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{qpath} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            qid, did, score = parts
            rel = int(score)
        except ValueError:
            if n == 1:  # the header (query-id, corpus-id, score); a file without one starts judging
                continue
            raise InvalidInput(f"{qpath} line {n}: expected query-id<TAB>corpus-id<TAB>integer score") from None
        if qid not in all_queries:
            raise InvalidInput(f"{qpath} line {n}: query id {qid!r} is not in queries.jsonl")
        qrels.setdefault(qid, {})[did] = rel
    if not qrels:
        raise InvalidInput(f"{qpath} has no judgments (only a header?): nothing to score")
    queries = {q: t for q, t in all_queries.items() if q in qrels}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def _parse(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if name not in _TREC or not k.isdigit() or int(k) < 1:
        raise InvalidInput(f"unknown metric {metric!r}; use one of ndcg@k, recall@k, mrr@k, map@k")
    return name, int(k)


def _ranked(run: dict[str, dict[str, float]], cut: int | None = None) -> dict[str, dict[str, float]]:
    """Replace scores by strictly decreasing rank scores (n - rank).

    trec_eval breaks score ties by doc id (descending), not by our order; rank scores make
    its ranking exactly ours. Ties in the input keep their insertion order (stable sort).
    """
    out = {}
    for qid, docs in run.items():
        order = sorted(docs, key=lambda d: -docs[d])[:cut]
        out[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    return out


def per_query(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics=METRICS
) -> dict[str, dict[str, float]]:
    """Per-query metric values for every judged query; a query with no results gets 0.

    Queries in ``run`` but not in ``qrels`` are ignored (they cannot be scored).
    """
    try:
        import pytrec_eval
    except ImportError:
        raise ImportError("metrics need `pip install semsearch[eval]`") from None
    parsed = {m: _parse(m) for m in metrics}
    out = {qid: {m: 0.0 for m in metrics} for qid in qrels}
    judged = {q: {d: int(r) for d, r in rels.items()} for q, rels in qrels.items()}
    run = {q: docs for q, docs in run.items() if q in qrels and docs}
    # one pass for cut-based measures on the full ranking; one per MRR cut on a truncated run
    passes: dict[int | None, list[str]] = {}
    for m, (name, k) in parsed.items():
        passes.setdefault(k if name == "mrr" else None, []).append(m)
    for cut, ms in passes.items():
        measures = {_TREC[parsed[m][0]] + ("" if cut else f".{parsed[m][1]}") for m in ms}
        evaluator = pytrec_eval.RelevanceEvaluator(judged, measures)
        for qid, values in evaluator.evaluate(_ranked(run, cut)).items():
            for m in ms:
                name, k = parsed[m]
                out[qid][m] = float(values[_TREC[name] if cut else f"{_TREC[name]}_{k}"])
    return out


def score_run(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics=METRICS
) -> dict[str, float]:
    """Mean of each metric over ALL judged queries (missing or empty results count as 0)."""
    values = per_query(qrels, run, metrics)
    if not values:
        raise InvalidInput("qrels is empty: nothing to score")
    return {m: sum(v[m] for v in values.values()) / len(values) for m in metrics}
