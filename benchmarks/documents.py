"""Reading documents back: what Collection.documents, get and similar cost against the
plainest way to the same answer in the same run (a ratio).

A collection of N one-chunk documents with random unit vectors (add_vectors; no model
runs) and ~100-character texts is built in a temporary folder; then, medians of --runs:
  - documents() walking every document (text=False, then text=True) against ONE raw
    SQLite SELECT of the same columns (all rows in memory at once, no snapshot per page);
  - get(id) against a raw SELECT of one document's row and chunks;
  - similar(id, k) against search_vectors(its vector, k + 1): the dense search it runs.

    nice -n 19 .venv/bin/python benchmarks/documents.py --n 100000
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from semsearch import Collection


def median_seconds(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build(path: Path, n: int) -> Collection:
    coll = Collection.create(path, index="Flat")
    rng = np.random.default_rng(0)
    for start in range(0, n, 10_000):
        ids = [f"d{i:07d}" for i in range(start, min(n, start + 10_000))]
        vectors = rng.standard_normal((len(ids), coll.pinned["dim"])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [f"the text of document {i}, long enough to be a sentence or two of a note. " for i in ids]
        coll.add_vectors(ids, vectors, texts, metadata={"team": "a"})
    return coll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="documents in the collection")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each walk (median)")
    parser.add_argument("--calls", type=int, default=50, help="get / similar calls per figure (median)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="semsearch-documents-") as tmp:
        coll = build(Path(tmp) / "c", args.n)
        db = sqlite3.connect(Path(tmp) / "c" / "store.sqlite")
        raw = ("SELECT d.key, d.source, d.metadata, d.added_at, "
               "(SELECT count(*) FROM chunks c WHERE c.doc_id = d.id){} FROM documents d ORDER BY d.key")
        text = ", (SELECT group_concat(c.text, '') FROM chunks c WHERE c.doc_id = d.id)"
        ids = [f"d{i:07d}" for i in np.random.default_rng(1).integers(0, args.n, args.calls)]
        rows = []
        for with_text in (False, True):
            ours = median_seconds(lambda: sum(1 for _ in coll.documents(text=with_text)), args.runs)
            ref = median_seconds(lambda: db.execute(raw.format(text if with_text else "")).fetchall(), args.runs)
            rows.append((f"walk all {args.n:,} (text={with_text})", ours, ref, "one raw SELECT"))
        one = ("SELECT d.key, d.source, d.metadata, d.added_at, c.start, c.end, c.text FROM documents d "
               "JOIN chunks c ON c.doc_id = d.id WHERE d.key = ? ORDER BY c.position")
        ours = statistics.median(median_seconds(lambda i=i: coll.get(i), 1) for i in ids)
        ref = statistics.median(median_seconds(lambda i=i: db.execute(one, (i,)).fetchall(), 1) for i in ids)
        rows.append(("get(id)", ours, ref, "raw SELECT of its row and chunks"))
        vectors = {i: coll.store.chunk_vectors(np.array([r[0] for r in coll.store.db.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.key = ?", (i,))])) for i in ids}
        coll.similar(ids[0], k=args.k)  # the index loaded before timing
        ours = statistics.median(median_seconds(lambda i=i: coll.similar(i, k=args.k), 1) for i in ids)
        ref = statistics.median(median_seconds(lambda i=i: coll.search_vectors(vectors[i], k=args.k + 1), 1)
                                for i in ids)
        rows.append((f"similar(id, k={args.k})", ours, ref, f"search_vectors(its vector, k={args.k + 1})"))
        coll.close()
    print("| what | semsearch | reference | ratio | reference is |")
    print("|---|---|---|---|---|")
    for what, ours, ref, name in rows:
        unit, scale = ("ms", 1e3) if ours < 1 else ("s", 1)
        print(f"| {what} | {ours * scale:,.2f} {unit} | {ref * scale:,.2f} {unit} | {ours / ref:.1f}x | {name} |")


if __name__ == "__main__":
    main()
