"""Ranking: dense (vectors), lexical (FTS5 BM25) and hybrid (fused), and the Hit they return.

Everything here reads; it runs inside a store snapshot the caller opened, with ``dense``
given as a function so it knows nothing about how the vector index is kept in step.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from .store import Store

# (chunk id, score) best first; one list per query vector
Ranking = list[tuple[int, float]]
DenseSearch = Callable[[np.ndarray, int, "np.ndarray | None"], list[Ranking]]

HYBRID_DEPTH = 100  # candidates each side contributes to the fusion
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to "
    "was were what when where which who why will with do does did can could should would "
    "there their they them these those than then into about any been being".split())


@dataclass(slots=True)
class Hit:
    id: str  # the document's key (what delete --id takes)
    score: float
    text: str
    source: str | None
    metadata: dict
    chunk: int  # chunk position within the document
    start: int
    end: int
    chunk_id: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fusion:
    """Hybrid settings: RRF constant, (dense, lexical) weights, and Rocchio feedback."""
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    feedback_docs: int = 5
    feedback_weight: float = 0.6


def fts_query(text: str) -> str:
    """An OR of the query's distinct words, each quoted so FTS5 syntax cannot break it."""
    words = dict.fromkeys(w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS)
    return " OR ".join(f'"{w}"' for w in words)


def rrf(rankings: list[Ranking], weights: Sequence[float], k: int = 60) -> Ranking:
    """Reciprocal Rank Fusion: sum of weight / (k + rank) over the rankings."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


class Ranker:
    """Ranks chunks for queries against one store snapshot and one dense search."""

    def __init__(self, store: Store, dense: DenseSearch, allowed: np.ndarray | None):
        self.store, self.dense, self.allowed = store, dense, allowed

    def search(self, queries: list[str], vectors, k: int, mode: str, docs: bool,
               min_score: float | None, fusion: Fusion) -> list[list[Hit]]:
        depth = max(k, HYBRID_DEPTH if mode == "hybrid" else k)
        if mode == "lexical":
            vectors = first_dense = [None] * len(queries)
        else:
            first_dense = self.dense(vectors, depth, self.allowed)  # one FAISS call for all queries
        # chunks there are to rank; only docs=True needs it, to know when to stop digging
        available = 0 if not docs else (len(self.allowed) if self.allowed is not None
                                         else self.store.counts()[1])
        results = []
        for text, vector, dense in zip(queries, vectors, first_dense):
            hits = self.hits(self.rank(text, vector, mode, depth, fusion, dense), k, docs, min_score)
            deeper = depth
            while len(hits) < k and deeper < available:  # dig until k documents
                deeper *= 4
                hits = self.hits(self.rank(text, vector, mode, deeper, fusion), k, docs, min_score)
            results.append(hits)
        return results

    def rank(self, text: str, vector, mode: str, depth: int, fusion: Fusion,
             dense: Ranking | None = None) -> Ranking:
        """(chunk id, score) best first, for one query (``dense``: its ranking, if known)."""
        match = fts_query(text) if mode != "dense" else ""
        lexical = self.store.lexical(match, depth, self.allowed) if match else []
        if mode == "lexical":
            return lexical
        if dense is None:
            dense = self.dense(vector[None], depth, self.allowed)[0]
        if mode == "dense":
            return dense
        fused = rrf([dense, lexical], fusion.weights, fusion.rrf_k)
        if fusion.feedback_docs > 0 and fusion.feedback_weight > 0 and fused:
            top = np.array([c for c, _ in fused[:fusion.feedback_docs]], np.int64)
            moved = vector + fusion.feedback_weight * self.store.chunk_vectors(top).mean(0)
            dense = self.dense((moved / np.linalg.norm(moved))[None], depth, self.allowed)[0]
            fused = rrf([dense, lexical], fusion.weights, fusion.rrf_k)
        return fused

    def hits(self, ranked: Ranking, k: int, docs: bool, min_score) -> list[Hit]:
        rows = self.store.chunk_rows(c for c, _ in ranked)
        hits, seen = [], set()
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None or (min_score is not None and score < min_score):
                continue
            key, position, start, end, text, source, metadata = row
            if docs:
                if key in seen:
                    continue
                seen.add(key)
            hits.append(Hit(key, score, text, source, metadata, position, start, end, chunk_id))
            if len(hits) == k:
                break
        return hits
