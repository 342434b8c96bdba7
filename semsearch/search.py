"""Ranking: dense (vectors), lexical (FTS5 BM25) and hybrid (fused), and the Hit they return.

Everything here reads; it runs inside a store snapshot the caller opened, with ``dense``
given as a function so it knows nothing about how the vector index is kept in step.
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .lang import fts_terms
from .store import Store

# (chunk id, score) best first; one list per query vector
Ranking = list[tuple[int, float]]
DenseSearch = Callable[[np.ndarray, int, "np.ndarray | None"], list[Ranking]]

HYBRID_DEPTH = 100  # candidates each side contributes to the fusion
# Rocchio feedback: the query vector moves towards the mean of the best chunks of the top
# fused documents (settings that held on every development collection: benchmarks/README.md)
FEEDBACK_DOCS = 3
FEEDBACK_WEIGHT = 2.0
# Query words left out of the lexical query (all kept when nothing else is left): measured
# +0.8 / +0.6 / +0.1 nDCG@10 on Cranfield / MED / NPL over keeping them (words once each).
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to "
    "was were what when where which who why will with do does did can could should would "
    "there their they them these those than then into about any been being".split())
WORD = re.compile(r"\w+")


@dataclass(slots=True)
class Hit:
    """One ranked passage. ``score`` means, by mode: dense, the cosine similarity of this
    chunk to the query (-1..1); lexical, the BM25 score of the whole document (0 up,
    comparable within one query); hybrid, the fused score as a share of the best possible
    (1.0 = first in both the dense and the lexical ranking). ``cosine`` and ``bm25`` show
    both sides whenever they were computed, so a hybrid hit can be read and thresholded."""
    id: str  # the document's key (what delete --id takes)
    score: float
    text: str
    source: str | None
    metadata: dict
    chunk: int  # chunk position within the document
    start: int
    end: int
    chunk_id: int
    cosine: float | None = None  # this chunk's cosine similarity to the query (dense, hybrid)
    bm25: float | None = None  # the document's BM25 for the query (lexical, hybrid; None: no word matched)
    # where text holds the query's words as lexical search reads them (stemmed, accents folded,
    # CJK inside longer words), in any mode: sorted, disjoint [start, end) in code points
    # (Python's str indices); empty when none is in it, for similar, or with highlight=False
    highlights: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fusion:
    """Hybrid settings: RRF constant, (dense, lexical) weights, and Rocchio feedback."""
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    feedback_docs: int = FEEDBACK_DOCS
    feedback_weight: float = FEEDBACK_WEIGHT


def fts_query(text: str) -> str:
    """An OR of the query's distinct words less STOPWORDS (each once: measured better than
    counting repeats on all three development collections); CJK words as lang.fts_terms
    writes them."""
    words = WORD.findall(text.lower())
    return " OR ".join(fts_terms(" ".join(dict.fromkeys([w for w in words if w not in STOPWORDS] or words))))


def rrf(rankings: list[list], weights: Sequence[float], k: int = 60) -> list[tuple]:
    """Reciprocal Rank Fusion: sum of weight / (k + rank) over the rankings."""
    fused: dict = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def zscore_fusion(rankings: list[list], weights: Sequence[float]) -> list[tuple]:
    """Sum of each ranking's scores as z-scores over its own list (an item absent from a
    list gets that list's lowest), by weight. It picks the feedback documents: at the top,
    how far a score stands out says more than its rank (benchmarks/README.md)."""
    fused: dict = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        scores = np.array([s for _, s in ranking], np.float64)
        z = (scores - scores.mean()) / (scores.std() or 1.0)
        for item, value in zip((i for i, _ in ranking), z):
            fused[item] = fused.get(item, 0.0) + weight * (value - z.min())
    return sorted(fused.items(), key=lambda kv: -kv[1])


@dataclass(slots=True)
class _Ranked:
    """A ranked chunk (None until chosen, for a document found by lexical search only)."""
    doc_id: int
    score: float
    chunk_id: int | None = None
    bm25: float | None = None


class Ranker:
    """Ranks for queries against one store snapshot and one dense search.

    Dense ranks chunks. Lexical ranks documents, BM25 over a document's whole text (see
    store.documents_fts), each shown on its best BM25 chunk. Hybrid ranks chunks by RRF of
    the chunk's dense rank and its document's lexical rank; a document found by lexical
    search alone enters on its chunk nearest the query. ``docs`` keeps one hit per document
    (lexical always does).
    """

    def __init__(self, store: Store, dense: DenseSearch, allowed: np.ndarray | None):
        self.store, self.dense, self.allowed = store, dense, allowed

    def search(self, queries: list[str], vectors, k: int, mode: str, docs: bool,
               min_score: float | None, fusion: Fusion, highlight: bool = True) -> list[list[Hit]]:
        depth = max(k, HYBRID_DEPTH if mode == "hybrid" else k)
        if mode == "lexical":
            vectors = first_dense = [None] * len(queries)
        else:
            first_dense = self.dense(vectors, depth, self.allowed)  # one FAISS call for all queries
        results = [self._hits(text, vector, self.rank(text, vector, mode, depth, fusion, dense, docs), k,
                              docs or mode == "lexical", min_score, mode)
                   for text, vector, dense in zip(queries, vectors, first_dense)]
        if highlight:
            for text, hits in zip(queries, results):
                self.highlight(text, hits)
        return results

    def highlight(self, query: str, hits: list[Hit]) -> None:
        """Set each hit's highlights: the words of ``query`` as lexical search asks for them
        (fts_query), found by the lexical index's own tokenizer (Store.match_spans)."""
        found = self.store.match_spans(fts_query(query), {h.chunk_id: h.text for h in hits})
        for hit in hits:
            hit.highlights = found.get(hit.chunk_id, [])

    def rank(self, text: str, vector, mode: str, depth: int, fusion: Fusion,
             dense: Ranking | None = None, docs: bool = False) -> list[_Ranked]:
        """Best first, for one query (``dense``: its chunk ranking, if known). With ``docs``
        hybrid fuses documents: a document's dense rank is its best chunk's among documents."""
        if mode != "lexical":
            dense = self.dense_ranking(vector, depth, docs, dense)
        if mode == "dense":
            return dense
        match = fts_query(text)
        lexical = self.store.lexical_documents(match, depth, self.allowed) if match else []
        if mode == "lexical":
            return [_Ranked(d, s, bm25=s) for d, s in lexical]
        if fusion.feedback_docs > 0 and fusion.feedback_weight > 0 and (dense or lexical):
            best: dict[int, tuple[int, float]] = {}
            for r in dense:
                best.setdefault(r.doc_id, (r.chunk_id, r.score))
            dense_docs = [(d, score) for d, (_, score) in best.items()]
            top = [d for d, _ in zscore_fusion([dense_docs, lexical], fusion.weights)[:fusion.feedback_docs]]
            best.update(self.best_chunks([d for d in top if d not in best], vector))
            feedback = self.store.chunk_vectors(np.array([best[d][0] for d in top], np.int64)).mean(0)
            moved = vector + fusion.feedback_weight * feedback
            dense = self.dense_ranking(moved / np.linalg.norm(moved), depth, docs)
        (w_dense, w_lexical), k = fusion.weights, fusion.rrf_k
        lexical_rank = {d: rank for rank, (d, _) in enumerate(lexical, start=1)}
        bm25 = dict(lexical)
        top_score = (w_dense + w_lexical) / (k + 1)
        ranked = []
        if docs:  # each document's best chunk only
            firsts: dict[int, _Ranked] = {}
            for r in dense:
                firsts.setdefault(r.doc_id, r)
            dense = list(firsts.values())
        for rank, r in enumerate(dense, start=1):
            doc = r.doc_id
            fused = w_dense / (k + rank) + (w_lexical / (k + lexical_rank[doc]) if doc in bm25 else 0.0)
            ranked.append(_Ranked(doc, fused / top_score, r.chunk_id, bm25.get(doc)))
        in_dense = {r.doc_id for r in dense}
        ranked += [_Ranked(d, w_lexical / (k + r) / top_score, None, bm25[d])
                   for d, r in lexical_rank.items() if d not in in_dense]
        return sorted(ranked, key=lambda r: -r.score)

    def dense_ranking(self, vector: np.ndarray, depth: int, docs: bool, ranking: Ranking | None = None
                      ) -> list[_Ranked]:
        """The ``depth`` nearest chunks (``ranking``, if known); with ``docs``, the chunks of
        the ``depth`` nearest documents (or all there are), so that a document's rank, and
        whether it is a candidate at all, depends neither on k nor on how many chunks the
        documents above it have (a deeper search holds more documents: they are cut)."""
        raw = self.dense(vector[None], depth, self.allowed)[0] if ranking is None else ranking
        ranked, deeper = self.chunks(raw), depth
        while docs and len(raw) == deeper and len({r.doc_id for r in ranked}) < min(depth, self.documents):
            deeper *= 4  # the index gave all it was asked for: there may be more
            raw = self.dense(vector[None], deeper, self.allowed)[0]
            ranked = self.chunks(raw)
        if docs:
            nearest = set(list(dict.fromkeys(r.doc_id for r in ranked))[:depth])
            ranked = [r for r in ranked if r.doc_id in nearest]
        return ranked

    @functools.cached_property
    def documents(self) -> int:
        """Documents in the store, counted once for all the queries of a call (count(*) scans)."""
        return self.store.counts()[0]

    def chunks(self, ranking: Ranking) -> list[_Ranked]:
        """A dense chunk ranking with each chunk's document (a chunk this snapshot of the
        store does not hold, deleted since the index saw it, is left out). Ties go to the
        chunk added first: FAISS orders them one way below 100 results and another above."""
        doc_of = self.store.chunk_documents(c for c, _ in ranking)
        return [_Ranked(doc_of[c], s, c) for c, s in sorted(ranking, key=lambda cs: (-cs[1], cs[0])) if c in doc_of]

    def best_chunks(self, doc_ids: list[int], vector: np.ndarray) -> dict[int, tuple[int, float]]:
        """Each document's chunk nearest ``vector``, with its cosine (filters select whole
        documents, so every chunk of a ranked document is allowed)."""
        out = {}
        for doc, ids in self.store.document_chunks(doc_ids).items():
            cosines = self.store.chunk_vectors(np.array(ids, np.int64)) @ vector
            out[doc] = (ids[int(np.argmax(cosines))], float(cosines.max()))
        return out

    def best_lexical_chunks(self, match: str, doc_ids: list[int]) -> dict[int, int]:
        """Each document's best BM25 chunk (its first chunk when none matches alone, e.g.
        words that only meet across a chunk boundary, or CJK text)."""
        chunks = self.store.document_chunks(doc_ids)
        scores = self.store.best_lexical_chunks(match, [c for ids in chunks.values() for c in ids]) if match else {}
        return {d: max(ids, key=lambda c: scores.get(c, float("-inf"))) for d, ids in chunks.items()}

    def like(self, doc_id: int, k: int, docs: bool) -> list[Hit]:
        """Hits nearest the document ``doc_id`` (the mean of its chunks' vectors), its own
        chunks left out: a dense ranking one document (or its chunks) deeper than k."""
        own = self.store.document_chunks([doc_id])[doc_id]
        mean = self.store.chunk_vectors(np.array(own, np.int64)).mean(0)
        vector = mean / max(float(np.linalg.norm(mean)), 1e-12)
        ranked = self.dense_ranking(vector, k + (1 if docs else len(own)), docs)
        return self._hits("", vector, [r for r in ranked if r.doc_id != doc_id], k, docs, None, "dense")

    def hits(self, ranking: Ranking, k: int, docs: bool, min_score) -> list[Hit]:
        """Hits for a dense chunk ranking (vectors the caller embedded)."""
        return self._hits("", None, self.chunks(ranking), k, docs, min_score, "dense")

    def _hits(self, text: str, vector, ranked: list[_Ranked], k: int, per_document: bool, min_score,
              mode: str) -> list[Hit]:
        """The first k (one per document with ``per_document``, score >= min_score) as Hits,
        with each chunk's cosine to the query when there is a query vector."""
        chosen, seen = [], set()
        for r in ranked:
            if (min_score is not None and r.score < min_score) or (per_document and r.doc_id in seen):
                continue
            seen.add(r.doc_id)
            chosen.append(r)
            if len(chosen) == k:
                break
        missing = [r.doc_id for r in chosen if r.chunk_id is None]
        if missing:
            if vector is None:
                found = self.best_lexical_chunks(fts_query(text), missing)
            else:
                found = {d: c for d, (c, _) in self.best_chunks(missing, vector).items()}
            for r in chosen:
                if r.chunk_id is None:
                    r.chunk_id = found.get(r.doc_id)
            chosen = [r for r in chosen if r.chunk_id is not None]
        ids = np.array([r.chunk_id for r in chosen], np.int64)
        # dense scores are the cosines already; other modes read them from the stored vectors
        cosines = (self.store.chunk_vectors(ids) @ vector).tolist() \
            if vector is not None and mode != "dense" and len(ids) else None
        rows = self.store.chunk_rows(ids.tolist())
        hits = []
        for i, r in enumerate(chosen):
            row = rows.get(r.chunk_id)
            if row is not None:
                key, position, start, end, chunk_text, source, metadata = row
                cosine = r.score if mode == "dense" else cosines[i] if cosines is not None else None
                hits.append(Hit(key, r.score, chunk_text, source, metadata, position, start, end, r.chunk_id,
                                cosine=cosine, bm25=r.bm25))
        return hits
