"""`semsearch eval`: index a BEIR data set, run its queries, score the ranking."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .collection import Collection
from .errors import InvalidInput, NotFound
from .metrics import METRICS, load_beir, score_run
from .validation import (MAX_K, MAX_QUERIES, MAX_QUERY_CHARS, MODES, check_k, choice, flag, path, string,
                         where_filter)

DEPTH = 100  # documents ranked per query: enough for recall@100 and map@100
ADD_BATCH = 10_000  # documents a transaction: a killed eval resumes from the last one committed


def evaluate(dataset: str | Path, mode: str = "hybrid", model: str | None = None,
             variant: str | None = None, collection: str | None = None, index: str | None = None,
             k: int = DEPTH, split: str = "test", home=None, ignore_identical_ids: bool = False,
             **search_options) -> dict:
    """Score ``mode`` on a BEIR folder; returns {"metrics": {...}, ...details}.

    Documents are indexed as title + text, ranked at document level (a document's best
    chunk). ``collection`` reuses (or fills, when new) a named collection instead of a
    temporary one, so several modes can be compared without embedding twice; settings
    that differ from an existing collection's are refused, as everywhere.

    ``ignore_identical_ids`` leaves out a retrieved document whose id is the query's own
    (BEIR's evaluator does by default): right where a query is also a document (ArguAna,
    Quora), wrong where query and document ids merely coincide (Cranfield, MED and NPL:
    query 1 is not about document 1). The k ranked are then k others.
    """
    k, mode = check_k(k), choice(mode, "mode", MODES)  # now, not after embedding the corpus
    ignore_identical_ids = flag(ignore_identical_ids, "ignore_identical_ids")
    # a measure cut deeper than k would be computed on k documents under its own name
    measures = [m for m in METRICS if cut(m) <= k]
    if not measures:
        raise InvalidInput(f"k={k} is below every measure's cut ({', '.join(METRICS)}): "
                           f"rank at least {min(map(cut, METRICS))} documents")
    dataset, split = path(dataset, "dataset"), string(split, "split")
    if not os.path.isdir(dataset):
        raise NotFound(f"no such folder: {dataset} (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/)")
    data = load_beir(dataset, split)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="semsearch-eval-") as tmp:
        target = collection or str(Path(tmp) / "eval")
        coll = Collection.open_or_create(target, model=model, variant=variant, index=index, home=home)
        with coll:
            _check_options(coll, k, search_options)
            _fill(coll, data.corpus, dataset)
            indexed = time.time()
            qids = list(data.queries)
            asked = [q for q in qids if data.queries[q].strip()]  # a blank query ranks nothing
            run = {q: {} for q in qids}
            depth = min(k + 1, MAX_K) if ignore_identical_ids else k  # one more, in case it is the query's
            for at in range(0, len(asked), MAX_QUERIES):
                part = asked[at:at + MAX_QUERIES]
                results = coll.search([data.queries[q][:MAX_QUERY_CHARS] for q in part], k=depth, mode=mode,
                                      docs=True, highlight=False, **search_options)  # ids are scored, not shown
                for q, hits in zip(part, results):
                    kept = [hit for hit in hits if not (ignore_identical_ids and hit.id == q)]
                    run[q] = {hit.id: hit.score for hit in kept[:k]}
            info = coll.info()
    return {
        "dataset": str(dataset), "mode": mode, "model": info["model"]["name"],
        "variant": info["model"]["variant"], "index": info["index"]["spec"],
        "documents": len(data.corpus), "queries": len(qids), "ignore_identical_ids": bool(ignore_identical_ids),
        "metrics": score_run(data.qrels, run, measures),
        "index_seconds": round(indexed - started, 1), "search_seconds": round(time.time() - indexed, 1),
    }


def _check_options(coll, k: int, search_options: dict) -> None:
    """A misspelt or bad search option fails now, not after the corpus is embedded: a
    lexical search of the collection checks them all (but ``where``'s keys, which the
    corpus may be about to add)."""
    options = dict(search_options)
    where_filter(options.pop("where", None))
    coll.search("probe", k=k, mode="lexical", docs=True, highlight=False, **options)


def _fill(coll, corpus: dict, dataset) -> None:
    """Add the corpus documents ``coll`` lacks (all of them, in a new collection), in
    transactions of ADD_BATCH. A reused collection holding documents the corpus does not
    have would rank them too: refused, rather than scored as if it were this data set.
    Documents with neither title nor text cannot be retrieved and are not added."""
    held = coll.store.document_hashes()
    foreign = [key for key in held if key not in corpus]
    if foreign:
        raise InvalidInput(f"collection {coll.name} holds {len(foreign):,} document(s) that are not in the "
                           f"corpus of {dataset} (e.g. {foreign[0]!r}): use a new collection for it")
    todo = [(i, text) for i in corpus if i not in held and (text := join_title(corpus[i]))]
    for at in range(0, len(todo), ADD_BATCH):
        part = todo[at:at + ADD_BATCH]
        coll.add_texts([t for _, t in part], ids=[i for i, _ in part],
                       metadata=[corpus[i]["metadata"] for i, _ in part], progress=True)


def join_title(doc: dict) -> str:
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title}\n{text}" if title and text else title or text


def cut(measure: str) -> int:
    """How many documents a measure reads: 10 for ndcg@10."""
    return int(measure.partition("@")[2])
