"""Retrieval quality on every development collection: plain references beside our modes.

For each BEIR folder this script

1. indexes it ONCE into ``benchmarks/.cache/quality-NAME`` (exact index) through the public
   API (``semsearch.evaluate``), and caches the query vectors beside it;
2. computes the plain references itself: SQLite FTS5 BM25 (``porter unicode61``) over whole
   documents with an OR of every query word and no stopword list; exact dense search with
   the collection's vectors (a document scores its best chunk); RRF (k = 60) of the two;
3. scores our dense / lexical / hybrid through ``semsearch.evaluate`` on that collection;
4. with ``--grid``, ranks the same data many other ways (prototypes over the store's own
   tables, read-only) to see where lexical loses and which fusion settings hold everywhere.

    python benchmarks/quality.py                      # references + our modes, 3 collections
    python benchmarks/quality.py --grid               # + the prototype grid
    python benchmarks/quality.py --sweep              # + our hybrid at several feedback settings
    python benchmarks/quality.py --data ../shared/data/med --json out.json
    python benchmarks/quality.py --cjk                # unicode61 vs trigram vs bigrams on CJK words
"""
from __future__ import annotations

import argparse
import json
import re
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import semsearch
from semsearch import evaluate
from semsearch.evaluation import DEPTH, join_title
from semsearch.metrics import load_beir, score_run
from semsearch.search import FEEDBACK_DOCS, FEEDBACK_WEIGHT

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DATA = HERE.parent.parent / "shared" / "data"
COLLECTIONS = ("cranfield", "med", "npl")
MODES = ("dense", "lexical", "hybrid")
WORD = re.compile(r"\w+")
STOPWORDS = frozenset(  # the list semsearch used before issue 13, to measure what it cost
    "a an and are as at be by for from has have how in is it its of on or that the this to "
    "was were what when where which who why will with do does did can could should would "
    "there their they them these those than then into about any been being".split())


# -- one collection's data, embedded once ------------------------------------------------------
class Bench:
    """A BEIR folder, its cached collection, chunk vectors and query vectors."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        self.data = load_beir(folder)
        self.qids = list(self.data.queries)
        self.queries = [self.data.queries[q] for q in self.qids]
        self.path = CACHE / f"quality-{self.name}"
        if not (self.path / "store.sqlite").is_file():
            started = time.time()
            evaluate(folder, mode="dense", collection=str(self.path), index="flat")
            print(f"[{self.name}] indexed in {time.time() - started:.0f} s", flush=True)
        self.store = sqlite3.connect(f"file:{self.path / 'store.sqlite'}?mode=ro", uri=True)
        rows = self.store.execute(
            "SELECT c.id, d.key, c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id "
            "ORDER BY d.key, c.position").fetchall()
        self.chunk_ids = np.array([r[0] for r in rows], np.int64)
        self.chunk_doc = [r[1] for r in rows]
        self.chunk_row = {c: i for i, c in enumerate(self.chunk_ids.tolist())}
        self.vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        keys, starts = np.unique(np.array(self.chunk_doc), return_index=True)
        order = np.argsort(starts)
        self.doc_keys, self.doc_starts = keys[order].tolist(), starts[order]
        self.qvec_file = self.path / "queries.npy"
        if not self.qvec_file.is_file():
            with semsearch.Collection.open(self.path) as coll:
                np.save(self.qvec_file, coll.embedder.embed(self.queries, kind="query"))
        self.qvecs = np.load(self.qvec_file)
        self.docvec_file = self.path / "documents.npy"
        if not self.docvec_file.is_file():  # whole documents, cut at the model's max length
            with semsearch.Collection.open(self.path) as coll:
                texts = [join_title(self.data.corpus[k]) for k in self.doc_keys]
                np.save(self.docvec_file, coll.embedder.embed(texts, kind="passage"))
        self.docvecs = np.load(self.docvec_file)
        self.fts = self._doc_fts()
        self.doc_words, self.df = None, None  # for expansion(), made on first use

    def _doc_fts(self) -> sqlite3.Connection:
        """Document-level FTS5 tables (one per tokenizer), in a cache file of their own."""
        file = CACHE / f"quality-{self.name}-docs.sqlite"
        db = sqlite3.connect(file)
        tokenizers = {"porter": "porter unicode61", "plain": "unicode61",
                      "porter_nodia": "porter unicode61 remove_diacritics 2"}
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        for table, tokenize in tokenizers.items():
            if f"docs_{table}" in have:
                continue
            db.execute(f"CREATE VIRTUAL TABLE docs_{table} USING fts5(text, tokenize='{tokenize}')")
            db.executemany(f"INSERT INTO docs_{table}(rowid, text) VALUES (?, ?)",
                           [(i, join_title(self.data.corpus[k])) for i, k in enumerate(self.doc_keys)])
            db.commit()
        return db

    def score(self, run: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
        return score_run(self.data.qrels, {q: dict(ranked[:DEPTH]) for q, ranked in run.items()})

    # -- dense ---------------------------------------------------------------------------
    def dense_whole(self, depth: int = DEPTH) -> list[list[tuple[str, float]]]:
        """Exact dense search with one vector per whole document (cut at the model's maximum)."""
        sims = self.qvecs @ self.docvecs.T
        top = np.argsort(-sims, axis=1)[:, :depth]
        return [[(self.doc_keys[j], float(sims[i, j])) for j in row] for i, row in enumerate(top)]

    def dense_docs(self, qvecs: np.ndarray | None = None, depth: int = DEPTH) -> list[list[tuple[str, float]]]:
        """Exact dense search: each document scores its best chunk's cosine."""
        sims = (self.qvecs if qvecs is None else qvecs) @ self.vectors.T
        best = np.maximum.reduceat(sims, self.doc_starts, axis=1)
        top = np.argsort(-best, axis=1)[:, :depth]
        return [[(self.doc_keys[j], float(best[i, j])) for j in row] for i, row in enumerate(top)]

    def dense_first(self, depth: int = DEPTH) -> list[list[tuple[str, float]]]:
        """Each document scores its first chunk only (about the whole-document vector)."""
        sims = self.qvecs @ self.vectors[self.doc_starts].T
        top = np.argsort(-sims, axis=1)[:, :depth]
        return [[(self.doc_keys[j], float(sims[i, j])) for j in row] for i, row in enumerate(top)]

    def dense_chunks(self, qvecs=None, depth: int = 1000) -> list[list[tuple[int, float]]]:
        sims = (self.qvecs if qvecs is None else qvecs) @ self.vectors.T
        top = np.argsort(-sims, axis=1)[:, :depth]
        return [[(int(self.chunk_ids[j]), float(sims[i, j])) for j in row] for i, row in enumerate(top)]

    # -- lexical ---------------------------------------------------------------------------
    def lexical_docs(self, query: str, table: str = "porter", stop: bool = False, dedup: bool = False,
                     depth: int = DEPTH, extra: list[str] = ()) -> list[tuple[str, float]]:
        """FTS5 BM25 over whole documents (``extra``: feedback words; the query's count twice)."""
        match = fts_or(query, stop, dedup)
        if extra and match:
            match = " OR ".join([match, match] + [f'"{w}"' for w in extra])
        if not match:
            return []
        rows = self.fts.execute(
            f"SELECT rowid, -bm25(docs_{table}) FROM docs_{table} WHERE docs_{table} MATCH ? "
            f"ORDER BY bm25(docs_{table}) LIMIT ?", (match, depth))
        return [(self.doc_keys[r[0]], r[1]) for r in rows]

    def lexical_chunks(self, query: str, stop: bool = False, dedup: bool = False,
                       depth: int = 1000) -> list[tuple[int, float]]:
        """The store's own chunk-level FTS5 table (BM25 over chunks)."""
        match = fts_or(query, stop, dedup)
        if not match:
            return []
        return self.store.execute(
            "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY bm25(chunks_fts) LIMIT ?", (match, depth)).fetchall()

    def chunks_to_docs(self, ranked: list[tuple[int, float]], how: str = "max") -> list[tuple[str, float]]:
        """Chunk scores -> document scores: the best chunk, or the sum of the chunks'."""
        scores: dict[str, float] = {}
        for chunk, score in ranked:
            doc = self.chunk_doc[self.chunk_row[chunk]]
            if how == "max":
                scores.setdefault(doc, score)
            else:
                scores[doc] = scores.get(doc, 0.0) + score
        return sorted(scores.items(), key=lambda kv: -kv[1])

    def chunks_per_doc(self) -> float:
        return len(self.chunk_ids) / len(self.doc_keys)


def fts_or(text: str, stop: bool = False, dedup: bool = False) -> str:
    """An OR of the query's words, each quoted; optionally without stopwords / repeats."""
    words = [w for w in WORD.findall(text.lower()) if not (stop and w in STOPWORDS)]
    if dedup:
        words = list(dict.fromkeys(words))
    return " OR ".join(f'"{w}"' for w in words)


# -- fusion -------------------------------------------------------------------------------------
def rrf(rankings, k: int = 60, weights=None, depth: int = DEPTH) -> list[tuple[str, float]]:
    fused: dict = defaultdict(float)
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, (item, _) in enumerate(ranking[:depth], start=1):
            fused[item] += weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def normalised(ranking, how: str = "minmax", depth: int = DEPTH) -> dict:
    items = ranking[:depth]
    if not items:
        return {}
    s = np.array([v for _, v in items], np.float64)
    if how == "minmax":
        lo, hi = s.min(), s.max()
        s = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    elif how == "zscore":
        s = (s - s.mean()) / (s.std() or 1.0)
    elif how == "max":  # divide by the best: 1.0 for the top hit, keeps ratios
        s = s / (s.max() or 1.0)
    return {item: float(v) for (item, _), v in zip(items, s)}


def combsum(rankings, alpha: float, how: str = "minmax", depth: int = DEPTH) -> list[tuple[str, float]]:
    """alpha * dense + (1 - alpha) * lexical, each normalised per query; absent = the side's minimum."""
    dense, lexical = (normalised(r, how, depth) for r in rankings)
    floor_d = min(dense.values(), default=0.0)
    floor_l = min(lexical.values(), default=0.0)
    items = set(dense) | set(lexical)
    fused = {i: alpha * dense.get(i, floor_d) + (1 - alpha) * lexical.get(i, floor_l) for i in items}
    return sorted(fused.items(), key=lambda kv: -kv[1])


# -- the reports -----------------------------------------------------------------------------------
def references(b: Bench) -> dict[str, dict]:
    dense = b.dense_whole()
    lexical = [b.lexical_docs(q) for q in b.queries]
    out = {
        "plain BM25 (FTS5, whole documents)": b.score(dict(zip(b.qids, lexical))),
        "plain dense (exact, whole documents)": b.score(dict(zip(b.qids, dense))),
        "plain RRF k=60": b.score(dict(zip(b.qids, (rrf([d, l]) for d, l in zip(dense, lexical))))),
    }
    return out


# (feedback documents, feedback weight) tried through the package itself (--sweep)
SWEEP = [(n, w) for n in (2, 3, 5) for w in (0.6, 1.0, 1.5, 2.0)] + [(3, 1.25), (3, 3.0), (3, 5.0)]


def sweep(b: Bench) -> dict[str, dict]:
    """semsearch hybrid (as `eval` runs it) at each feedback setting in SWEEP."""
    return {f"semsearch hybrid, feedback n={n} b={w}": evaluate(
        b.folder, mode="hybrid", collection=str(b.path), index="flat", feedback_docs=n,
        feedback_weight=w)["metrics"] for n, w in SWEEP}


def ours(b: Bench, modes=MODES) -> dict[str, dict]:
    out = {}
    for mode in modes:
        result = evaluate(b.folder, mode=mode, collection=str(b.path), index="flat")
        out[f"semsearch {mode}"] = result["metrics"]
    return out


def grid(b: Bench) -> dict[str, dict]:
    """Prototype rankings: what lexical loses where, and fusion/feedback settings."""
    q = b.queries
    runs: dict[str, list] = {}
    # lexical: granularity, stopwords, repeated query words, stemmer
    for stop in (False, True):
        for dedup in (False, True):
            tag = f"stop={'on' if stop else 'off'} dedup={'on' if dedup else 'off'}"
            runs[f"lex doc porter {tag}"] = [b.lexical_docs(t, stop=stop, dedup=dedup) for t in q]
            chunks = [b.lexical_chunks(t, stop=stop, dedup=dedup) for t in q]
            runs[f"lex chunk->max {tag}"] = [b.chunks_to_docs(c, "max") for c in chunks]
            runs[f"lex chunk->sum {tag}"] = [b.chunks_to_docs(c, "sum") for c in chunks]
    runs["lex doc unicode61 (no stemmer)"] = [b.lexical_docs(t, table="plain") for t in q]
    runs["lex doc porter remove_diacritics 2"] = [b.lexical_docs(t, table="porter_nodia") for t in q]
    # fusion of plain doc BM25 with exact dense (document level)
    lexical = runs["lex doc porter stop=off dedup=off"]
    dense = b.dense_docs(depth=1000)
    lexical_deep = [b.lexical_docs(t, depth=1000) for t in q]
    runs["dense exact, best chunk"] = dense
    runs["dense exact, first chunk"] = b.dense_first()
    runs["dense exact, whole document (plain)"] = b.dense_whole()
    for k in (10, 20, 40, 60, 100):
        runs[f"rrf k={k}"] = [rrf([d, l], k) for d, l in zip(dense, lexical)]
    runs["rrf k=60 depth 1000"] = [rrf([d, l], 60, depth=1000) for d, l in zip(dense, lexical_deep)]
    for w in (0.5, 0.7, 1.5, 2.0):
        runs[f"rrf k=60 dense weight {w}"] = [rrf([d, l], 60, [w, 1.0]) for d, l in zip(dense, lexical)]
    for how in ("minmax", "zscore", "max"):
        for alpha in (0.3, 0.4, 0.5, 0.6, 0.7):
            runs[f"combsum {how} a={alpha}"] = [combsum([d, l], alpha, how) for d, l in zip(dense, lexical)]
    # pseudo-relevance feedback on the dense side (Rocchio): the query vector += b * the mean of
    # the best chunks of the top-n documents of a first fusion; then RRF k=60 again
    base = {"rrf60": runs["rrf k=60"], "minmax.5": runs["combsum minmax a=0.5"],
            "max.6": runs["combsum max a=0.6"], "zscore.5": runs["combsum zscore a=0.5"]}
    for base_name, fused in base.items():
        for n in (2, 3, 5):
            for beta in (0.6, 1.0, 1.5):
                dense2 = b.dense_docs(rocchio(b, fused, n, beta), depth=1000)
                runs[f"prf n={n} b={beta} on {base_name} -> rrf60"] = [
                    rrf([d, l], 60) for d, l in zip(dense2, lexical)]
                runs[f"prf n={n} b={beta} on {base_name} -> rrf60 depth 1000"] = [
                    rrf([d, l], 60, depth=1000) for d, l in zip(dense2, lexical_deep)]
                if base_name == "minmax.5":
                    runs[f"prf n={n} b={beta} on {base_name} -> dense alone"] = dense2
    # what the package ships: the same feedback, the lexical side without STOPWORDS, words once
    lexical_stop = runs["lex doc porter stop=on dedup=on"]
    first = [combsum([d, l], 0.5, "zscore") for d, l in zip(dense, lexical_stop)]
    moved = b.dense_docs(rocchio(b, first, FEEDBACK_DOCS, FEEDBACK_WEIGHT), depth=1000)
    runs["shipped: prf n=3 b=2.0 on zscore.5 -> rrf60, shipped lexical"] = shipped = [
        rrf([d, l], 60) for d, l in zip(moved, lexical_stop)]
    # lexical feedback (RM3-like): add the top-m terms (tf/len x idf) of the top fb documents
    # of the shipped ranking to the query (its own words counted twice), then RRF again
    for fb in (3, 5):
        for m in (5, 10, 20):
            expanded = [b.lexical_docs(t, stop=True, dedup=True, extra=expansion(b, t, ranked[:fb], m))
                        for t, ranked in zip(q, shipped)]
            runs[f"+ lexical feedback fb={fb} m={m} -> lexical alone"] = expanded
            runs[f"+ lexical feedback fb={fb} m={m} -> rrf60"] = [
                rrf([d, l], 60) for d, l in zip(moved, expanded)]
    return {name: b.score(dict(zip(b.qids, run))) for name, run in runs.items()}


def expansion(b: Bench, query: str, feedback, m: int) -> list[str]:
    """The m best new words of the feedback documents by sum of tf/len x idf (unstemmed)."""
    if b.doc_words is None:
        b.doc_words = {k: [w for w in WORD.findall(join_title(b.data.corpus[k]).lower())
                           if w not in STOPWORDS and not w.isdigit() and len(w) > 2] for k in b.doc_keys}
        b.df = defaultdict(int)
        for words in b.doc_words.values():
            for w in set(words):
                b.df[w] += 1
    asked = set(WORD.findall(query.lower()))
    weight: dict[str, float] = defaultdict(float)
    for key, _ in feedback:
        words = b.doc_words[key]
        for w in words:
            if w not in asked:
                weight[w] += np.log(len(b.doc_keys) / b.df[w]) / len(words)
    return sorted(weight, key=weight.get, reverse=True)[:m]


def rocchio(b: Bench, fused, n: int, beta: float) -> np.ndarray:
    """Query vectors moved towards the mean of the top-n fused documents' best-matching chunks."""
    sims = b.qvecs @ b.vectors.T
    moved = b.qvecs.copy()
    starts = list(b.doc_starts) + [len(b.chunk_ids)]
    where = {k: i for i, k in enumerate(b.doc_keys)}
    for i, ranking in enumerate(fused):
        rows = []
        for key, _ in ranking[:n]:
            j = where[key]
            lo, hi = starts[j], starts[j + 1]
            rows.append(lo + int(np.argmax(sims[i, lo:hi])))
        if rows:
            moved[i] += beta * b.vectors[rows].mean(0)
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


# Korean, Chinese and Japanese sentences, and query words with the documents that contain them
CJK_DOCS = [
    "임베딩은 문장의 의미를 벡터로 나타낸다. 트랜스포머 모델이 임베딩을 만든다.",
    "검색 시스템은 임베딩으로 문서를 찾는다. 모델의 크기가 중요하다.",
    "변환기는 주의 메커니즘을 사용한다.",
    "向量检索使用嵌入表示文本的含义。模型把句子变成向量。",
    "猫在桌子上睡觉。",
    "埋め込みは文の意味をベクトルで表す。モデルが埋め込みを作る。",
    "検索システムは埋め込みを使って文書を探す。",
    "Transformers turn sentences into embeddings for semantic search.",
]
CJK_QUERIES = {"임베딩": {0, 1}, "모델": {0, 1}, "검색": {1}, "向量": {3}, "嵌入": {3}, "猫": {4},
               "埋め込み": {5, 6}, "モデル": {5}, "検索": {6}, "embedding": {7}, "search": {7}}


def cjk_check() -> str:
    """Which FTS5 set-up finds each CJK word inside the sentences that contain it."""
    from semsearch.lang import fts_terms, fts_text

    db = sqlite3.connect(":memory:")
    setups = {  # name: (tokenizer, document text, query)
        "unicode61 (before)": ("porter unicode61 remove_diacritics 2", str, lambda w: f'"{w}"'),
        "trigram": ("trigram", str, lambda w: f'"{w}"'),
        "bigrams (shipped)": ("porter unicode61 remove_diacritics 2", fts_text, lambda w: " ".join(fts_terms(w))),
    }
    lines = ["| query word | " + " | ".join(setups) + " |", "|---|" + "---|" * len(setups)]
    found = dict.fromkeys(setups, 0)
    for i, (name, (tokenize, doc, _)) in enumerate(setups.items()):
        db.execute(f"CREATE VIRTUAL TABLE t{i} USING fts5(text, tokenize='{tokenize}')")
        db.executemany(f"INSERT INTO t{i}(rowid, text) VALUES (?, ?)", [(j, doc(d)) for j, d in enumerate(CJK_DOCS)])
    for word, want in CJK_QUERIES.items():
        cells = []
        for i, (name, (_, _, query)) in enumerate(setups.items()):
            got = {r[0] for r in db.execute(f"SELECT rowid FROM t{i} WHERE t{i} MATCH ?", (query(word),))}
            found[name] += got == want
            cells.append("found" if got == want else f"got {sorted(got)}, want {sorted(want)}")
        lines.append(f"| {word} | " + " | ".join(cells) + " |")
    lines.append("| **right** | " + " | ".join(f"{n} of {len(CJK_QUERIES)}" for n in found.values()) + " |")
    return "\n".join(lines)


def table(results: dict[str, dict[str, dict]]) -> str:
    names = list(results)
    lines = ["| run | " + " | ".join(f"{n} nDCG@10 | R@100 | MRR@10" for n in names) + " |",
             "|---|" + "---:|---:|---:|" * len(names)]
    runs = list(dict.fromkeys(r for n in names for r in results[n]))
    for run in runs:
        cells = []
        for n in names:
            m = results[n].get(run)
            cells.append(" | ".join(f"{100 * m[x]:.2f}" for x in ("ndcg@10", "recall@100", "mrr@10"))
                         if m else " |  | ")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=[str(DATA / c) for c in COLLECTIONS],
                        help="BEIR folders (default: ../shared/data/{cranfield,med,npl})")
    parser.add_argument("--grid", action="store_true", help="also run the prototype grid")
    parser.add_argument("--no-ours", action="store_true", help="skip semsearch's own modes")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--cjk", action="store_true", help="only the CJK tokenizer check")
    parser.add_argument("--sweep", action="store_true", help="also our hybrid at each feedback setting")
    args = parser.parse_args()
    if args.cjk:
        print(cjk_check())
        return
    CACHE.mkdir(exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    for folder in args.data:
        b = Bench(Path(folder))
        print(f"[{b.name}] {len(b.doc_keys)} documents, {len(b.chunk_ids)} chunks "
              f"({b.chunks_per_doc():.2f} a document), {len(b.qids)} queries", flush=True)
        results[b.name] = references(b)
        if not args.no_ours:
            results[b.name].update(ours(b))
        if args.grid:
            results[b.name].update(grid(b))
        if args.sweep:
            results[b.name].update(sweep(b))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
