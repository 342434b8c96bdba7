"""Differential test: lexical and hybrid search against oracles read straight from
store.sqlite (sqlite3 + numpy, none of our ranking code).

Lexical: FTS5 queried directly (documents_fts for the ranking, chunks_fts for the chunk
shown). Hybrid: the fusion written out plainly below (Rocchio feedback picked by a z-score
fusion, then Reciprocal Rank Fusion of the dense ranking and the lexical document ranking),
over the oracle's own dense ranking. FAISS and numpy add floats in different orders, so a
dense ranking with two cosines closer than EPS (but not equal) may order them either way:
such a query is skipped, and most must not be.
"""
import json
import re
import sqlite3

import numpy as np
import pytest

from semsearch.collection import STORE_FILE, Collection
from semsearch.search import HYBRID_DEPTH, STOPWORDS

# distinct Porter stems; ABSENT never occur in a document; CODES each in a few documents only
WORDS = ("river mountain engine garden window silver forest candle rocket violin pepper castle "
         "harbor meadow thunder lantern marble falcon copper glacier orchard canyon velvet compass "
         "saddle tunnel basket ribbon anchor lemon desert island planet ocean bridge tiger").split()
ABSENT = ("zebra", "quasar", "nebula")
CODES = [f"zq{i}x" for i in range(12)]
COLORS = ("red", "green", "blue")
BIG_K = 1_000  # past every candidate here
EPS = 5e-7  # FAISS's float32 sums against numpy's float64 ones: measured within 9e-8
TOL = 2e-5  # a cosine read back
FUSIONS = [dict(), dict(feedback_docs=0), dict(rrf_k=5, weights=(2.0, 0.5)), dict(weights=(0.0, 1.0)),
           dict(weights=(1.0, 0.0), feedback_docs=1, feedback_weight=0.5)]


def document(rng, lo, hi):
    words = list(rng.choice(WORDS, size=int(rng.integers(lo, hi))))
    if rng.random() < 0.15:  # a rare code, found by its word alone
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(CODES)))
    return " ".join(words)


def make(tmp_path_factory, embedder, n, lo, hi, seed, duplicates=0, edits=0):
    """n documents of lo..hi words in chunks of 16 tokens, with metadata; ``duplicates``
    more documents repeat earlier texts (the same vectors: exact ties); then ``edits``
    documents deleted and as many replaced by new texts."""
    rng = np.random.default_rng(seed)
    texts = [document(rng, lo, hi) for _ in range(n)]
    texts += [texts[int(i)] for i in rng.integers(0, n, duplicates)]
    coll = Collection.create(tmp_path_factory.mktemp("hybrid") / "c", chunk_tokens=16, overlap=4, embedder=embedder)

    def add(ids, texts):
        coll.add_texts(texts, ids=ids,
                       metadata=[{"color": str(rng.choice(COLORS)), "n": int(rng.integers(0, 3))} for _ in ids])

    ids = [f"d{i}" for i in range(len(texts))]
    add(ids, texts)
    if edits:
        picked = [str(i) for i in rng.choice(ids, 2 * edits, replace=False)]
        coll.delete(picked[:edits])
        add(picked[edits:], [document(rng, lo, hi) for _ in range(edits)])
    return coll


@pytest.fixture(scope="session")
def collections(tmp_path_factory, embedder):
    made = {"multi": make(tmp_path_factory, embedder, 200, 3, 50, 1, duplicates=6),  # 1..5 chunks each
            "single": make(tmp_path_factory, embedder, 260, 2, 9, 2),  # one chunk each, past the depth
            "small": make(tmp_path_factory, embedder, 30, 3, 30, 3),  # fewer than the depth
            "edited": make(tmp_path_factory, embedder, 120, 3, 40, 4, edits=20)}  # deletes and replacements
    held = {name: (coll, Oracle(coll.path)) for name, coll in made.items()}
    yield held
    for coll, oracle in held.values():
        oracle.db.close()
        coll.close()


class Oracle:
    """The store read with sqlite3: chunks, documents, and FTS5 asked directly."""

    def __init__(self, path):
        self.db = sqlite3.connect(f"file:{path / STORE_FILE}?mode=ro", uri=True)
        rows = self.db.execute("SELECT c.id, c.doc_id, c.vector FROM chunks c ORDER BY c.doc_id, c.position"
                               ).fetchall()
        self.ids = np.array([r[0] for r in rows], np.int64)
        self.doc = np.array([r[1] for r in rows], np.int64)
        self.vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        self.row = {c: i for i, c in enumerate(self.ids.tolist())}
        docs = self.db.execute("SELECT id, key, metadata FROM documents").fetchall()
        self.key = {d: key for d, key, _ in docs}
        self.meta = {d: json.loads(m) for d, _, m in docs}

    def allowed_docs(self, where):
        return {d for d, m in self.meta.items()
                if where is None or all((self.key[d] if k == "id" else m.get(k)) == v for k, v in where.items())}

    @staticmethod
    def match(text):
        """The lexical query rule: the query's distinct lower-case words less the stopwords
        (all of them when nothing else is left), each quoted, OR'ed."""
        words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
        return " OR ".join(f'"{w}"' for w in ([w for w in words if w not in STOPWORDS] or words))

    def lexical(self, text, allowed_docs):
        """(document, BM25) of the allowed matching documents, best first (ties: the older)."""
        match = self.match(text)
        if not match:
            return []
        rows = self.db.execute("SELECT rowid, -bm25(documents_fts) FROM documents_fts WHERE documents_fts "
                               "MATCH ? ORDER BY bm25(documents_fts), rowid", (match,)).fetchall()
        return [(d, s) for d, s in rows if d in allowed_docs]

    def lexical_chunk(self, text, doc):
        """The document's chunk of best chunk-level BM25 (the first on ties; its first chunk
        when none matches alone)."""
        chunks = self.ids[self.doc == doc].tolist()
        scores = dict(self.db.execute("SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?",
                                      (self.match(text),)).fetchall())
        return max(chunks, key=lambda c: scores.get(c, -np.inf))

    def dense(self, v, allowed_docs, depth, docs):
        """(chunk, document, cosine) best first (ties: the older chunk): the first ``depth``
        chunks, or with ``docs`` the first ``depth`` documents each at its best chunk; and
        whether two cosines that decide the order are within EPS without being equal."""
        mask = np.isin(self.doc, list(allowed_docs))
        ids, doc, scores = self.ids[mask], self.doc[mask], self.vectors[mask].astype(np.float64) @ v
        order = np.lexsort((ids, -scores))
        out, seen, ambiguous = [], set(), False
        for i, j in zip(order, [*order[1:], None]):
            counts = not docs or doc[i] not in seen  # with docs, only a document's best chunk
            if counts and len(out) == depth:
                break
            if counts:
                seen.add(doc[i])
                out.append((int(ids[i]), int(doc[i]), float(scores[i])))
            # a near tie with the next chunk that decides an order: which document comes
            # first, or (with docs) which of a document's chunks is its best
            if j is not None and 0 < scores[i] - scores[j] < EPS:
                ambiguous |= not docs or counts and (doc[j] == doc[i] or doc[j] not in seen)
        return out, ambiguous

    def nearest_chunk(self, doc, v):
        rows = np.flatnonzero(self.doc == doc)
        cos = self.vectors[rows].astype(np.float64) @ v
        return int(self.ids[rows[np.argmax(cos)]]), bool(np.sum(np.abs(cos - cos.max()) < EPS) > 1)

    def hybrid(self, text, qv, k, docs, where, rrf_k=60, weights=(1.0, 1.0), feedback_docs=3,
               feedback_weight=2.0):
        """[(chunk, document, fused score, bm25 or None)] best first, and whether ambiguous."""
        depth = max(k, HYBRID_DEPTH)
        allowed = self.allowed_docs(where)
        lexical = self.lexical(text, allowed)[:depth]
        qv = qv.astype(np.float64)
        dense, ambiguous = self.dense(qv, allowed, depth, docs)
        if feedback_docs and feedback_weight and (dense or lexical):
            # feedback documents: z-scores of each side's scores (absent: that side's lowest), summed by weight
            best = {}
            for c, d, s in dense:
                best.setdefault(d, (c, s))
            fused = {}
            for side, w in zip(([(d, s) for d, (_, s) in best.items()], lexical), weights):
                if side:
                    s = np.array([x for _, x in side])
                    z = (s - s.mean()) / (s.std() or 1.0)
                    for (d, _), value in zip(side, z - z.min()):
                        fused[d] = fused.get(d, 0.0) + w * value
            ranked = sorted(fused.items(), key=lambda kv: -kv[1])  # ties: dense order, then lexical order
            if len(ranked) > feedback_docs and 0 < ranked[feedback_docs - 1][1] - ranked[feedback_docs][1] < 1e-5:
                ambiguous = True
            chunks = []
            for d, _ in ranked[:feedback_docs]:
                c, tie = (best[d][0], False) if d in best else self.nearest_chunk(d, qv)
                chunks.append(c)
                ambiguous |= tie
            moved = qv + feedback_weight * self.vectors[[self.row[c] for c in chunks]].mean(0)
            dense, tie = self.dense(moved / np.linalg.norm(moved), allowed, depth, docs)
            ambiguous |= tie
        # reciprocal rank fusion: weight / (rrf_k + rank) summed over the sides, as a share of the best
        w_dense, w_lexical = weights
        lexical_rank = {d: r for r, (d, _) in enumerate(lexical, start=1)}
        bm25 = dict(lexical)
        best_possible = (w_dense + w_lexical) / (rrf_k + 1)
        out = []
        for r, (c, d, _) in enumerate(dense, start=1):
            s = w_dense / (rrf_k + r) + (w_lexical / (rrf_k + lexical_rank[d]) if d in bm25 else 0.0)
            out.append((c, d, s / best_possible, bm25.get(d)))
        in_dense = {d for _, d, _ in dense}
        for d, r in lexical_rank.items():
            if d not in in_dense:  # found by lexical search alone: on its chunk nearest the query
                c, tie = self.nearest_chunk(d, qv)
                ambiguous |= tie
                out.append((c, d, w_lexical / (rrf_k + r) / best_possible, bm25[d]))
        out.sort(key=lambda x: -x[2])  # stable: ties keep the dense order, lexical-only ones last
        return out[:k], ambiguous


def queries(rng, n):
    """Seeded queries: 1-3 corpus words, with stopwords, absent words and rare codes mixed in."""
    out = ["tiger", "zebra", "the of", "zebra quasar", "?!", str(CODES[0]), f"{CODES[1]} lemon"]
    while len(out) < n:
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        roll = rng.random()
        if roll < 0.2:
            words.append(str(rng.choice(ABSENT)))
        elif roll < 0.35:
            words.insert(0, "the")
        elif roll < 0.5:
            words = [str(rng.choice(CODES))] + words[:1]
        out.append(" ".join(words))
    return out


def where_of(rng, oracle):
    return [None, {"color": str(rng.choice(COLORS))}, {"n": int(rng.integers(0, 3)), "color": "red"},
            {"id": oracle.key[int(rng.choice(list(oracle.key)))]}][int(rng.integers(0, 4))]


@pytest.mark.parametrize("name", ["multi", "single", "small", "edited"])
def test_lexical_is_fts5_bm25_over_whole_documents(collections, name):
    coll, oracle = collections[name]
    rng = np.random.default_rng(10)
    for text in queries(rng, 40):
        where = where_of(rng, oracle)
        expected = oracle.lexical(text, oracle.allowed_docs(where))
        for k in (3, BIG_K):
            hits = coll.search(text, k=k, mode="lexical", where=where)
            tag = f"{name} {text!r} where={where} k={k}"
            assert [(h.id, h.score) for h in hits] == [(oracle.key[d], s) for d, s in expected[:k]], tag
            for h, (d, _) in zip(hits, expected):
                assert h.bm25 == h.score and h.cosine is None, tag
                assert h.chunk_id == oracle.lexical_chunk(text, d), f"{tag}: {h.id} shown on chunk {h.chunk_id}"


@pytest.mark.parametrize("name", ["multi", "single", "small", "edited"])
def test_hybrid_is_the_fusion_of_the_dense_and_lexical_rankings(collections, embedder, name):
    coll, oracle = collections[name]
    rng = np.random.default_rng(20)
    texts = queries(rng, 30)
    vectors = embedder.embed(texts, kind="query")
    checked = skipped = 0
    for text, qv in zip(texts, vectors):
        for docs in (False, True):
            where = where_of(rng, oracle)
            fusion = FUSIONS[int(rng.integers(0, len(FUSIONS)))]
            for k in (10, 60, BIG_K):
                tag = f"{name} {text!r} docs={docs} where={where} k={k} {fusion}"
                expected, ambiguous = oracle.hybrid(text, qv, k, docs, where, **fusion)
                if ambiguous:
                    skipped += 1
                    continue
                checked += 1
                hits = coll.search(text, k=k, mode="hybrid", docs=docs, where=where, query_vectors=qv[None], **fusion)
                got = [(h.chunk_id, h.id, h.bm25) for h in hits]
                assert got == [(c, oracle.key[d], b) for c, d, _, b in expected], tag
                assert [h.score for h in hits] == pytest.approx([s for _, _, s, _ in expected], abs=1e-12), tag
                for h in hits:
                    assert abs(h.cosine - float(oracle.vectors[oracle.row[h.chunk_id]] @ qv)) < TOL, tag
                if expected and k == 60:  # min_score keeps the hits at or above it (the same sums: exact)
                    cut = expected[len(expected) // 2][2]
                    hits = coll.search(text, k=k, mode="hybrid", docs=docs, where=where, query_vectors=qv[None],
                                       min_score=cut, **fusion)
                    assert [h.chunk_id for h in hits] == [c for c, _, s, _ in expected if s >= cut], f"{tag} {cut}"
    assert skipped <= checked / 4, f"{name}: {skipped} rankings skipped as ambiguous, {checked} checked"


def test_hybrid_docs_ranks_only_the_nearest_documents_on_the_dense_side(collections):
    """With docs, the dense side's candidates are the HYBRID_DEPTH nearest documents; one
    further down that lexical search finds is scored as found by lexical search alone. A
    collection of many-chunk documents made the index search deeper, and every document
    that deeper search held had counted as a dense candidate (its own dense rank added)."""
    coll, _ = collections["multi"]
    text = "rocket thunder zebra"
    dense = [h.id for h in coll.search(text, k=HYBRID_DEPTH, mode="dense", docs=True)]
    lexical = [h.id for h in coll.search(text, k=HYBRID_DEPTH, mode="lexical")]
    hits = coll.search(text, k=HYBRID_DEPTH, mode="hybrid", docs=True, feedback_docs=0)
    beyond = [h for h in hits if h.id not in dense]
    assert beyond
    for h in beyond:
        assert h.score == pytest.approx((1 / (60 + lexical.index(h.id) + 1)) / (2 / 61), abs=1e-12), h.id
