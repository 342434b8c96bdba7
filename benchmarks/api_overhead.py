"""Per-call cost of the search API, for before/after comparisons of the code in two trees.

One timing round: ``search_vectors`` and a dense ``search()`` given the query vectors, n
single-vector calls each, on an existing collection. Run it alternately in the old and the
new tree (``PYTHONPATH=<tree>``) on collections holding the same vectors, so both see the
same machine load; compare medians (benchmarks/README.md, "Architecture before/after").

    PYTHONPATH=/tmp/before python benchmarks/api_overhead.py /tmp/c_old 300 QUERIES.npy
    python benchmarks/api_overhead.py /tmp/c_new 300 QUERIES.npy
"""
import sys, time, numpy as np, logging
logging.disable(logging.WARNING)
from semsearch.collection import Collection
path, n = sys.argv[1], int(sys.argv[2])
q = np.load(sys.argv[3]); q /= np.linalg.norm(q, axis=1, keepdims=True)
c = Collection.open(path)
c.search_vectors(q[:1], 10)
new = "query_vectors" in Collection.search.__code__.co_varnames
if not new:
    class Stub:  # the tree before issue 9 had no public way to pass query vectors
        manifest = {}
        def embed(self, texts, kind=None, **_): return q[[int(t[1:]) for t in texts]]
    c._embedder = Stub()
out = {}
t = time.perf_counter()
for i in range(n): c.search_vectors(q[i:i+1], 10)
out["search_vectors"] = (time.perf_counter() - t) / n * 1e3
t = time.perf_counter()
for i in range(n):
    if new: c.search(f"q{i}", k=10, mode="dense", query_vectors=q[i:i+1])
    else: c.search(f"q{i}", k=10, mode="dense")
out["search_dense"] = (time.perf_counter() - t) / n * 1e3
print(out)
