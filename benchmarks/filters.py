"""Where filters: what a filtered search costs, and what its filter costs against a
hand-written SQL query that finds the same chunks (a ratio, in the same run).

A collection of N documents of --chunks chunks each, with random unit vectors (no model
runs), is built in a temporary folder, each with metadata {"team": t0..t9, "year":
2000..2024 (a number), "date": an ISO date (text), "tags": 0-3 of 20 words (a list)}.
For each filter, medians of --runs:
  - filter: store.filter_ids(where), the allowed chunk ids (store._matching's SQL);
  - hand SQL: the plainest query a user would write for the same chunks (json_extract on
    the one type the data holds; no numbers-as-text, no list-or-scalar rule);
  - search: search_vectors(q, k=10, where) whole (filter + FAISS), with the filter matched
    anew (as after a write), and the same search again (its allowed ids remembered for the
    store's generation); and search without a filter.
The chunk ids of filter and hand SQL are checked equal.

    nice -n 19 .venv/bin/python benchmarks/filters.py --n 100000
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
from semsearch.collection import _AllowedCache
from semsearch.validation import where_filter

WORDS = [f"w{i}" for i in range(20)]
JOIN = "SELECT c.id FROM chunks c WHERE c.doc_id IN (SELECT d.id FROM documents d WHERE {})"
FILTERS = [  # (label, where, hand-written SQL condition on d)
    ("team=t3", {"team": "t3"}, "json_extract(d.metadata, '$.team') = 't3'"),
    ("team!=t3", {"team": {"$ne": "t3"}}, "json_extract(d.metadata, '$.team') IS NOT 't3'"),
    ("year>=2020", {"year": {"$gte": 2020}}, "json_extract(d.metadata, '$.year') >= 2020"),
    ("2010<=year<2012", {"year": {"$gte": 2010, "$lt": 2012}},
     "json_extract(d.metadata, '$.year') >= 2010 AND json_extract(d.metadata, '$.year') < 2012"),
    ("date>=2024-06", {"date": {"$gte": "2024-06"}}, "json_extract(d.metadata, '$.date') >= '2024-06'"),
    ("team in 3 values", {"team": {"$in": ["t1", "t2", "t3"]}},
     "json_extract(d.metadata, '$.team') IN ('t1', 't2', 't3')"),
    ("tags=w5 (a list item)", {"tags": "w5"},
     "EXISTS (SELECT 1 FROM json_each(d.metadata, '$.tags') e WHERE e.value = 'w5')"),
    ("year in 100 values", {"year": {"$in": list(range(1950, 2050))}},
     "json_extract(d.metadata, '$.year') BETWEEN 1950 AND 2049"),
]


def medians(calls: dict, runs: int) -> dict:
    """Median seconds of each call, the calls taking turns in every run (a busy machine
    weighs on all of them alike)."""
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def build(path: Path, n: int, chunks: int = 1) -> Collection:
    """n documents of ``chunks`` chunks each, written through the store (add_vectors makes
    one-chunk documents only), then indexed."""
    coll = Collection.create(path, index="Flat")
    rng = np.random.default_rng(0)
    store = coll.store
    for start in range(0, n, 10_000):
        ids = range(start, min(n, start + 10_000))
        vectors = rng.standard_normal((len(ids) * chunks, coll.pinned["dim"])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with coll.writer(), store.write() as gen:
            for row, i in enumerate(ids):
                meta = {"team": f"t{i % 10}", "year": 2000 + i % 25,
                        "date": f"{2020 + i % 5}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                        "tags": [str(w) for w in rng.choice(WORDS, size=i % 4, replace=False)]}
                doc_id, _ = store.put_document(f"d{i:07d}", None, None, meta)
                store.put_chunks(doc_id, gen, ((p, 20 * p, 20 * p + 19, f"document {i} part {p:4d}",
                                                vectors[row * chunks + p]) for p in range(chunks)))
    coll.sync_index()
    return coll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="documents in the collection")
    parser.add_argument("--chunks", type=int, default=1, help="chunks per document")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="semsearch-filters-") as tmp:
        coll = build(Path(tmp) / "c", args.n, args.chunks)
        db = sqlite3.connect(Path(tmp) / "c" / "store.sqlite")
        query = np.eye(1, coll.pinned["dim"], dtype=np.float32)
        coll.search_vectors(query, k=1)  # the index loaded
        unfiltered = medians({"search": lambda: coll.search_vectors(query, k=10)}, args.runs)["search"]
        print(f"{args.n:,} documents of {args.chunks} chunk(s); search_vectors(k=10) without a filter: {unfiltered * 1e3:.1f} ms\n")
        print("| filter | matches | filter | hand SQL | ratio | filtered search | the same again |")
        print("|---|---|---|---|---|---|---|")
        for label, where, sql in FILTERS:
            checked = where_filter(where)
            mine = coll.store.filter_ids(checked)
            hand = np.array([r[0] for r in db.execute(JOIN.format(sql))], dtype=np.int64)
            assert np.array_equal(np.sort(mine), np.sort(hand)), label

            def first_search():  # the filter matched anew, as after a write
                coll._allowed = _AllowedCache()
                coll.search_vectors(query, k=10, where=where)
            t = medians({"mine": lambda: coll.store.filter_ids(checked),
                         "hand": lambda: db.execute(JOIN.format(sql)).fetchall(),
                         "search": first_search,
                         "again": lambda: coll.search_vectors(query, k=10, where=where)}, args.runs)
            t_mine, t_hand, t_search = t["mine"], t["hand"], t["search"]
            print(f"| `{label}` | {len(mine):,} | {t_mine * 1e3:.1f} ms | {t_hand * 1e3:.1f} ms | "
                  f"{t_mine / t_hand:.2f}x | {t_search * 1e3:.1f} ms | {t['again'] * 1e3:.1f} ms |")
        db.close()
        coll.close()


if __name__ == "__main__":
    main()
