"""Small writes to a big collection: what one single-document write costs the writer (ms,
bytes written, the index file rewritten or not), what a second Collection (a reader in
another process, as far as the files go) pays for its next search, and what a fresh open
pays once the writes are done (the index file loaded, and whatever it lags replayed).

A collection of N random unit vectors (add_vectors; no model runs) is built once per index
type, then copied for each code version, so both start from the same files: the checkout,
and ``--before REF`` (a `git archive` of REF on PYTHONPATH), in the same run. Each version
runs in a process of its own; the W writes cycle through add (a new id), replace (an
existing id) and delete (an existing id).

    nice -n 19 .venv/bin/python benchmarks/small_writes.py --n 100000 --writes 30
    nice -n 19 .venv/bin/python benchmarks/small_writes.py --n 1000000 --kinds flat --writes 15
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, statistics, sys, time
import numpy as np
from semsearch import Collection

folder, writes, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
index = os.path.join(folder, "index.faiss")

def written():  # bytes this process has sent to storage (the store, its WAL, the index file)
    with open("/proc/self/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("write_bytes"))

def unit(rng, rows, dim):
    v = rng.standard_normal((rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)

rng = np.random.default_rng(7)
writer, reader = Collection.open(folder), Collection.open(folder)
dim = writer.pinned["dim"]
query = unit(rng, 1, dim)
writer.sync_index(), reader.search_vectors(query, k=10)  # both indexes loaded from the file
rows = {"add": [], "replace": [], "delete": []}
for i in range(writes):
    op = ("add", "replace", "delete")[i % 3]
    target = int(rng.integers(n))
    before, st = written(), os.stat(index)
    start = time.perf_counter()
    if op == "delete":
        writer.delete([f"v{target}"])
    else:
        key = f"new{i}" if op == "add" else f"v{target}"
        writer.add_vectors([key], unit(rng, 1, dim), [f"document {key}"])
    ms = (time.perf_counter() - start) * 1e3
    after = os.stat(index)
    saved = (after.st_ino, after.st_mtime_ns) != (st.st_ino, st.st_mtime_ns)
    start = time.perf_counter()
    reader.search_vectors(query, k=10)
    rows[op].append((ms, written() - before, after.st_size if saved else 0,
                     (time.perf_counter() - start) * 1e3))
reader.close()
start = time.perf_counter()
writer.close()
close_ms = (time.perf_counter() - start) * 1e3
start = time.perf_counter()
with Collection.open(folder) as fresh:
    fresh.search_vectors(query, k=10)
    chunks = fresh.info()["chunks"]
open_ms = (time.perf_counter() - start) * 1e3
med = lambda xs: statistics.median(xs) if xs else 0.0
out = {op: {"write_ms": med([r[0] for r in rs]), "io_bytes": med([r[1] for r in rs]),
            "index_bytes": sum(r[2] for r in rs), "saves": sum(1 for r in rs if r[2]),
            "reader_ms": med([r[3] for r in rs])} for op, rs in rows.items()}
print(json.dumps({"ops": out, "close_ms": close_ms, "fresh_open_search_ms": open_ms, "chunks": chunks}))
"""


def build(folder: Path, n: int, kind: str) -> None:
    """A collection of n random unit vectors with ids v0..v{n-1}, its index file saved."""
    import numpy as np
    from semsearch import Collection

    rng = np.random.default_rng(0)
    with Collection.create(folder, index=kind) as coll:
        dim = coll.pinned["dim"]
        for start in range(0, n, 50_000):
            rows = min(50_000, n - start)
            v = rng.standard_normal((rows, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            coll.add_vectors([f"v{i}" for i in range(start, start + rows)], v,
                             [f"document v{i}" for i in range(start, start + rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--writes", type=int, default=30, help="single-document writes per version")
    ap.add_argument("--kinds", default="flat,hnsw")
    ap.add_argument("--before", default="HEAD", help="git ref to compare with ('' for the checkout only)")
    ap.add_argument("--work", default=None, help="a folder on a real disk (/proc/self/io counts no tmpfs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="small_writes.", dir=args.work or ROOT.parent))
    os.environ["SEMSEARCH_HOME"] = str(work / "home")
    versions = {"after": ROOT}
    if args.before:
        versions = {"before": work / "before", **versions}
        versions["before"].mkdir()
        subprocess.run(f"git -C {ROOT} archive {args.before} semsearch | tar -x -C {versions['before']}",
                       shell=True, check=True)
    try:
        print(f"{'N':>8} {'index':6} {'code':6} {'op':8} {'write ms':>9} {'I/O MB':>8} {'saves':>6} "
              f"{'index MB':>9} {'reader ms':>10}   close ms / fresh open+search ms")
        for kind in args.kinds.split(","):
            base = work / f"base-{kind}"
            start = time.perf_counter()
            build(base, args.n, kind)
            print(f"# built {kind} at {args.n} in {time.perf_counter() - start:.0f} s", flush=True)
            for name, code in versions.items():
                copy = work / f"{kind}-{name}"
                shutil.copytree(base, copy)
                env = {**os.environ, "PYTHONPATH": str(code)}
                res = subprocess.run([sys.executable, "-c", CHILD, str(copy), str(args.writes), str(args.n)],
                                     env=env, capture_output=True, text=True, cwd=work)  # not the checkout
                if res.returncode:
                    sys.exit(res.stderr)
                got = json.loads(res.stdout.strip().splitlines()[-1])
                for op, r in got["ops"].items():
                    print(f"{args.n:>8} {kind:6} {name:6} {op:8} {r['write_ms']:9.1f} {r['io_bytes'] / 1e6:8.2f} "
                          f"{r['saves']:>6} {r['index_bytes'] / 1e6:9.0f} {r['reader_ms']:10.2f}"
                          + (f"   {got['close_ms']:.0f} / {got['fresh_open_search_ms']:.0f}" if op == "delete" else ""),
                          flush=True)
                shutil.rmtree(copy)
            shutil.rmtree(base)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
