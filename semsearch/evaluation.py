"""`semsearch eval`: index a BEIR data set, run its queries, score the ranking."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .collection import Collection
from .metrics import METRICS, load_beir, score_run

DEPTH = 100  # documents ranked per query: enough for recall@100 and map@100


def evaluate(dataset: str | Path, mode: str = "hybrid", model: str | None = None,
             variant: str | None = None, collection: str | None = None, index: str | None = None,
             k: int = DEPTH, split: str = "test", home=None, **search_options) -> dict:
    """Score ``mode`` on a BEIR folder; returns {"metrics": {...}, ...details}.

    Documents are indexed as title + text, ranked at document level (a document's best
    chunk). ``collection`` reuses (or fills, when new) a named collection instead of a
    temporary one, so several modes can be compared without embedding twice; settings
    that differ from an existing collection's are refused, as everywhere.
    """
    data = load_beir(dataset, split)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="semsearch-eval-") as tmp:
        target = collection or str(Path(tmp) / "eval")
        coll = Collection.open_or_create(target, model=model, variant=variant, index=index, home=home)
        with coll:
            if coll.count() == 0:
                ids = list(data.corpus)
                texts = [join_title(data.corpus[i]) for i in ids]
                coll.add_texts(texts, ids=ids, metadata=[data.corpus[i]["metadata"] for i in ids], progress=True)
            indexed = time.time()
            qids = list(data.queries)
            results = coll.search([data.queries[q] for q in qids], k=k, mode=mode, docs=True,
                                  **search_options)
            run = {q: {hit.id: hit.score for hit in hits} for q, hits in zip(qids, results)}
            info = coll.info()
    return {
        "dataset": str(dataset), "mode": mode, "model": info["model"]["name"],
        "variant": info["model"]["variant"], "index": info["index"]["spec"],
        "documents": len(data.corpus), "queries": len(qids),
        "metrics": score_run(data.qrels, run, METRICS),
        "index_seconds": round(indexed - started, 1), "search_seconds": round(time.time() - indexed, 1),
    }


def join_title(doc: dict) -> str:
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title}\n{text}" if title and text else title or text
