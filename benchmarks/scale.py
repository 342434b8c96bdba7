"""Scale-out benchmark: `index --ray` against the single-process `index`, and the on-disk
IVF build against the in-memory one.

Ingest (Cranfield abstracts, split into jsonl files of 25 records so Ray has files to
spread): a fresh collection indexed by ``Collection.add_files`` and by
``semsearch.distributed.index_paths`` on a local one-node Ray (started once, outside the
timing; its start-up is reported apart), same variant, alternating, medians.

Build (``--n`` vectors in ``--shards`` Parquet shards): vectors as in
``benchmarks/search.py`` (real sentence embeddings grown by sampling around them; queries:
held-out synthetics + the real Cranfield queries), exact top-10 by streaming the shards.
Each build runs in its own process:
* in-memory: every shard read into one array, the same IVF spec trained on the same
  sample size, ``add_with_ids`` everything, index written with ``faiss.write_index``;
* on-disk: ``semsearch.distributed.ondisk.build`` on a local Ray (2 CPUs): sample ->
  train -> one IVF per shard in Ray tasks -> ``merge_ondisk`` -> nprobe tuned.
Peak memory is sampled every 50 ms over the process and all its descendants (Ray
workers included): resident (RSS) and its anonymous part (RssAnon: the part that is not
page cache; the merge writes the lists through a file mapping, counted in RSS as file
pages). Search: both at the on-disk build's tuned nprobe; QPS of 1,000 queries in one
call (median of 3) and of 200 one at a time. Cold open: a fresh process with the index
files evicted from the page cache (posix_fadvise DONTNEED) until its first result.

    python benchmarks/scale.py --n 2000000 --shards 8           # the issue's size
    python benchmarks/scale.py --skip-ingest --data-dir /tmp/scale-2m   # keep the shards for re-runs
    python benchmarks/scale.py --n 200000 --shards 8 --skip-ingest
    python benchmarks/scale.py --skip-build --variant int8      # ingest only

One big JSONL file (``--jsonl-n N``: the first N records of ``--jsonl-data``'s corpus.jsonl,
a BEIR corpus as it comes): ``Collection.add_files`` against ``index_paths`` with the file
whole (one call, one actor: ``part_bytes`` beyond its size) and cut in parts (the default,
``pipeline.part_size``), the three alternating, medians; Ray started once beforehand.

    python benchmarks/scale.py --jsonl-n 4000 --skip-ingest --skip-build

Created on-disk (``--create-n N``): N synthetic 384-d vectors (one-chunk documents, short
texts) ingested by ``Collection.add_vectors`` in calls of 50,000, each collection in its own
process: an in-memory one (``--create-index``, default flat: the least an in-memory index
holds) and one created with ``index="ondisk"`` (no index in memory until ``build``). Peak
RSS is the process's own high-water mark (``ru_maxrss``), the model loaded in both; then one
dense query is timed (the on-disk one scans the store).

    python benchmarks/scale.py --create-n 300000 --skip-ingest --skip-build
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cranfield"
K = 10


# ------------------------------------------------------------------------------ memory
def _tree_mem() -> tuple[int, int]:
    """(RSS, RssAnon) in bytes summed over this process and its descendants."""
    import psutil
    me = psutil.Process()
    rss = anon = 0
    for p in [me] + me.children(recursive=True):
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, anon


class PeakMemory:
    """Samples _tree_mem every 50 ms in a thread; .peak is (RSS, RssAnon) in MiB."""

    def __enter__(self):
        self.peak = [0, 0]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            rss, anon = _tree_mem()
            self.peak = [max(self.peak[0], rss / 2**20), max(self.peak[1], anon / 2**20)]
            self._stop.wait(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def evict(paths) -> None:
    """Drop files from the page cache (no root needed for clean pages)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ build: data
def prepare(work: Path, n: int, shards: int, data: Path, cap: int) -> None:
    """Shards, queries and exact ground truth in ``work``; one shard in memory at a time."""
    from search import N_QUERIES, real_vectors, synthesize
    from semsearch.distributed import ondisk

    _, real, real_q = real_vectors(data, cap, False)
    per = -(-n // shards)
    start = 0
    for s in range(shards):
        m = min(per, n - start)
        part = real[:m] if s == 0 and m <= len(real) else synthesize(real, m, seed=100 + s)[0]
        ondisk.write_shard(work / f"part-{s:03d}.parquet", np.arange(start, start + m) + 1, part)
        start += m
        print(f"  shard {s + 1}/{shards}: {m:,} vectors", file=sys.stderr)
    qs, _ = synthesize(real, N_QUERIES - len(real_q), seed=2)
    queries = np.concatenate([qs, real_q]).astype(np.float32)
    np.save(work / "queries.npy", queries)
    _, gt = ondisk.ground_truth(sorted(work.glob("part-*.parquet")), queries, K)
    np.save(work / "gt.npy", gt)


def recall(I, gt) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(I.tolist(), gt.tolist())]))


def qps(search, queries) -> tuple[float, float]:
    """(queries/s for all in one call (median of 3), queries/s one at a time (200))."""
    batch = []
    for _ in range(3):
        t = time.perf_counter()
        search(queries)
        batch.append(len(queries) / (time.perf_counter() - t))
    t = time.perf_counter()
    for q in queries[:200]:
        search(q[None])
    return statistics.median(batch), 200 / (time.perf_counter() - t)


# ------------------------------------------------------------------------------ build: children
def child_ondisk(work: Path) -> dict:
    from semsearch.distributed import ondisk
    from semsearch.distributed.cluster import connected
    shards = sorted(work.glob("part-*.parquet"))
    t = time.perf_counter()
    with connected(None, num_cpus=2):
        ray_start = time.perf_counter() - t
        base = [x / 2**20 for x in _tree_mem()]
        with PeakMemory() as mem:
            t = time.perf_counter()
            folder = ondisk.build(shards, work / "ondisk-1", spec=os.environ.get("SCALE_SPEC", "auto"))
            build = time.perf_counter() - t
    mm = ondisk.MmapIndex.open(folder)
    queries, gt = np.load(work / "queries.npy"), np.load(work / "gt.npy")
    _, I = mm.search(queries, K)
    b, one = qps(lambda q: mm.search(q, K), queries)
    return {"kind": "on-disk (mmap)", "build_s": build, "ray_start_s": ray_start, "steps": mm.meta["seconds"],
            "peak_rss_mb": mem.peak[0], "peak_anon_mb": mem.peak[1], "idle_rss_mb": base[0],
            "idle_anon_mb": base[1], "nprobe": mm.params["nprobe"], "spec": mm.spec,
            "recall": recall(I, gt), "qps_batch": b, "qps_one": one,
            "disk_mb": sum(f.stat().st_size for f in folder.iterdir()) / 2**20}


def child_memory(work: Path, nprobe: int, spec: str) -> dict:
    import faiss
    from semsearch.distributed import ondisk
    from semsearch.index import TRAIN_MAX
    shards = sorted(work.glob("part-*.parquet"))
    with PeakMemory() as mem:
        t = time.perf_counter()
        n = sum(ondisk.shard_rows(s) for s in shards)
        ids, x = np.empty(n, np.int64), np.empty((n, ondisk.shard_dim(shards[0])), np.float32)
        at = 0
        for s in shards:  # straight into one array: no second copy at the peak
            for i, v in ondisk.read_shard(s):
                ids[at:at + len(i)], x[at:at + len(i)] = i, v
                at += len(i)
        read = time.perf_counter() - t
        t = time.perf_counter()
        index = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(len(x), min(len(x), TRAIN_MAX), replace=False)])
        index.add_with_ids(x, ids)
        build = time.perf_counter() - t
    del x
    faiss.write_index(index, str(work / "memory.faiss"))
    faiss.extract_index_ivf(index).nprobe = nprobe
    queries, gt = np.load(work / "queries.npy"), np.load(work / "gt.npy")
    _, I = index.search(queries, K)
    b, one = qps(lambda q: index.search(q, K), queries)
    return {"kind": "in memory", "build_s": build, "read_s": read, "peak_rss_mb": mem.peak[0],
            "peak_anon_mb": mem.peak[1], "nprobe": nprobe, "spec": spec, "recall": recall(I, gt),
            "qps_batch": b, "qps_one": one, "disk_mb": (work / "memory.faiss").stat().st_size / 2**20}


def child_cold(work: Path, kind: str) -> dict:
    """Open the index with its files out of the page cache, until the first result."""
    import faiss
    from semsearch.distributed import ondisk
    q = np.load(work / "queries.npy")[:1]
    if kind == "ondisk":
        folder = work / "ondisk-1"
        evict(folder.iterdir())
        t = time.perf_counter()
        mm = ondisk.MmapIndex.open(folder)
        opened = time.perf_counter() - t
        mm.search(q, K)
    else:
        evict([work / "memory.faiss"])
        t = time.perf_counter()
        index = faiss.read_index(str(work / "memory.faiss"))
        opened = time.perf_counter() - t
        index.search(q, K)
    return {"open_s": opened, "first_result_s": time.perf_counter() - t}


def run_child(work: Path, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--work", str(work), "--child", *args],
                         check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_build(args) -> None:
    keep = args.data_dir is not None
    work = Path(args.data_dir) if keep else Path(tempfile.mkdtemp(prefix="scale-", dir=args.tmp))
    try:
        if not (work / "gt.npy").is_file() or len(list(work.glob("part-*.parquet"))) != args.shards:
            work.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            prepare(work, args.n, args.shards, args.data, args.cap)
            print(f"data: {args.n:,} vectors in {args.shards} shards, "
                  f"{sum(f.stat().st_size for f in work.glob('part-*')) / 2**20:,.0f} MiB of Parquet, "
                  f"prepared in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        disk = run_child(work, "ondisk")
        mem = run_child(work, "memory", str(disk["nprobe"]), disk["spec"])
        cold = {kind: statistics.median(run_child(work, "cold", kind)["first_result_s"] for _ in range(3))
                for kind in ("ondisk", "memory")}
    finally:
        if keep:
            shutil.rmtree(work / "ondisk-1", ignore_errors=True)
            (work / "memory.faiss").unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n### On-disk vs in-memory IVF build: {args.n:,} vectors x 384, {args.shards} shards, "
          f"{disk['spec']}, nprobe {disk['nprobe']}\n")
    print("| build | time s | peak RSS MiB | peak anon MiB | recall@10 | QPS (1000 in one call) "
          "| QPS (one at a time) | cold open to first result s | on disk MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, c in ((mem, cold["memory"]), (disk, cold["ondisk"])):
        print(f"| {r['kind']} | {r['build_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | "
              f"{r['recall']:.3f} | {r['qps_batch']:,.0f} | {r['qps_one']:,.0f} | {c:.3f} | {r['disk_mb']:,.0f} |")
    own = disk['peak_anon_mb'] - disk['idle_anon_mb']
    print(f"\nratios on-disk / in-memory: build time {disk['build_s'] / mem['build_s']:.2f}, peak RSS "
          f"{disk['peak_rss_mb'] / mem['peak_rss_mb']:.2f}, peak anon {disk['peak_anon_mb'] / mem['peak_anon_mb']:.2f} "
          f"(above the idle Ray: {own:,.0f} MiB, {own / mem['peak_anon_mb']:.2f}), "
          f"QPS {disk['qps_batch'] / mem['qps_batch']:.2f} (batch) / {disk['qps_one'] / mem['qps_one']:.2f} "
          f"(one at a time), cold open {cold['ondisk'] / cold['memory']:.3f}")
    print(f"\non-disk steps (s): {disk['steps']}; Ray start-up {disk['ray_start_s']:.1f} s (not in the build "
          f"time), an idle local Ray holds {disk['idle_rss_mb']:,.0f} MiB RSS / {disk['idle_anon_mb']:,.0f} "
          f"MiB anon (in the peak); the in-memory build read its shards in {mem['read_s']:.1f} s (not in "
          "the build time, in the peak)")


# ------------------------------------------------------------------------------ ingest
def split_corpus(data: Path, out: Path, per_file: int = 25) -> int:
    records = [json.loads(line) for line in open(data / "corpus.jsonl", encoding="utf-8")]
    for i in range(0, len(records), per_file):
        with open(out / f"part-{i // per_file:04d}.jsonl", "w", encoding="utf-8") as f:
            for r in records[i:i + per_file]:
                f.write(json.dumps({"id": r["_id"], "text": f"{r['title']}\n{r['text']}".strip()}) + "\n")
    return len(records)


def bench_ingest(args) -> None:
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.distributed.cluster import connected
    work = Path(tempfile.mkdtemp(prefix="scale-ingest-", dir=args.tmp))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        n_docs = split_corpus(args.data, corpus)
        times = {"local": [], "ray": []}
        t = time.perf_counter()
        with connected(None, num_cpus=os.cpu_count()):
            ray_start = time.perf_counter() - t
            for run in range(args.runs):
                for kind in ("local", "ray") if run % 2 == 0 else ("ray", "local"):
                    path = work / f"{kind}-{run}"
                    t = time.perf_counter()
                    with Collection.create(path, variant=args.variant) as coll:
                        report = coll.add_files([corpus]) if kind == "local" else index_paths(coll, [corpus])
                    times[kind].append(time.perf_counter() - t)
                    print(f"  {kind} run {run + 1}: {times[kind][-1]:.1f} s, {report.added} docs, "
                          f"{report.chunks} chunks", file=sys.stderr)
            diff = _max_vector_diff(work / "local-0", work / "ray-0")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local, ray_ = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"\n### `index --ray` (local one-node Ray, {os.cpu_count()} CPUs) vs `index`: Cranfield, "
          f"{n_docs} abstracts in {-(-n_docs // 25)} files, {args.variant}, median of {args.runs}\n")
    print("| path | seconds | docs/s | vs local |\n|---|---|---|---|")
    print(f"| local `index` | {local:.1f} | {n_docs / local:.0f} | 1.00 |")
    print(f"| `index --ray` | {ray_:.1f} | {n_docs / ray_:.0f} | {ray_ / local:.2f} |")
    print(f"\nRay start-up (not in the times above): {ray_start:.1f} s. Same documents and chunks; "
          f"largest vector difference between the two collections: {diff:.1e}")


def bench_big_jsonl(args) -> None:
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from semsearch.distributed.cluster import connected
    from semsearch.distributed.pipeline import part_size, plan
    from semsearch.loaders import jsonl_parts
    work = Path(tempfile.mkdtemp(prefix="scale-jsonl-", dir=args.tmp))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        dump = corpus / "corpus.jsonl"
        with open(args.jsonl_data / "corpus.jsonl", encoding="utf-8") as src, open(dump, "w", encoding="utf-8") as out:
            out.writelines(line for _, line in zip(range(args.jsonl_n), src))
        size, actors = dump.stat().st_size, plan(os.cpu_count(), 0)["actors"]
        parts = len(jsonl_parts(str(dump), part_size(str(dump), actors)))
        kinds = [("local `index`", None), ("`index --ray`, the file whole", 1 << 50),
                 (f"`index --ray`, the file in {parts} parts", "default")]
        times: dict[str, list[float]] = {name: [] for name, _ in kinds}
        t = time.perf_counter()
        with connected(None, num_cpus=os.cpu_count()):
            ray_start = time.perf_counter() - t
            for run in range(args.runs):
                for i, (name, part_bytes) in enumerate(kinds) if run % 2 == 0 else reversed(list(enumerate(kinds))):
                    t = time.perf_counter()
                    with Collection.create(work / f"{i}-{run}", variant=args.variant) as coll:
                        report = coll.add_files([corpus]) if part_bytes is None else \
                            index_paths(coll, [corpus], part_bytes=None if part_bytes == "default" else part_bytes)
                    times[name].append(time.perf_counter() - t)
                    print(f"  {name} run {run + 1}: {times[name][-1]:.1f} s, {report.added} docs, "
                          f"{report.chunks} chunks, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
            diffs = [_max_vector_diff(work / "0-0", work / f"{i}-0") for i in (1, 2)]
        cut, sniff = _cut_speed(args.jsonl_data / "corpus.jsonl", work / "big.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = statistics.median(times[kinds[0][0]])
    print(f"\n### One big JSONL, `index --ray` ({actors} actors, {os.cpu_count()} CPUs) vs `index`: the first "
          f"{report.added:,} records of {args.jsonl_data.name}'s corpus.jsonl ({size / 2**20:.2f} MiB), "
          f"{args.variant}, median of {args.runs}\n")
    print("| path | seconds | docs/s | vs local |\n|---|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.1f} | {report.added / m:.0f} | {m / local:.2f} |")
    print(f"\nRay start-up (not in the times above): {ray_start:.1f} s. Same documents and chunks; largest "
          f"vector difference from local: whole {diffs[0]:.1e}, in parts {diffs[1]:.1e}. Cutting "
          f"(`jsonl_parts`, the driver, before the job) {cut:.0f} MiB/s; `index` reading a file through "
          f"to sniff its encoding (`_file_info`) {sniff:.0f} MiB/s (the corpus cycled to 256 MiB, median of 3)")


def _cut_speed(src: Path, big: Path, mib: int = 256) -> tuple[float, float]:
    """MiB/s of cutting a big JSONL file in parts, and of the pass `index` makes over it first."""
    from semsearch.loaders import _file_info, jsonl_parts
    data = src.read_bytes()
    with open(big, "wb") as f:
        for _ in range(-(-(mib << 20) // len(data))):
            f.write(data)
    size = big.stat().st_size / 2**20
    speeds = []
    for fn in (lambda: jsonl_parts(str(big), 16 << 20), lambda: _file_info(str(big))):
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            runs.append(size / (time.perf_counter() - t))
        speeds.append(statistics.median(runs))
    return speeds[0], speeds[1]


def bench_writer(args) -> None:
    """The single writer's ceiling: one-chunk documents with precomputed vectors committed
    one transaction each (Collection.add_vectors -> Writer.put, the same call the Ray driver
    makes per document), text, FTS and vectors included."""
    from semsearch.collection import Collection
    work = Path(tempfile.mkdtemp(prefix="scale-writer-", dir=args.tmp))
    try:
        rng = np.random.default_rng(0)
        n = args.writer_n
        v = rng.standard_normal((n, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        words = np.array("wing flow pressure boundary layer heat transfer shock wave laminar".split())
        texts = [" ".join(words[rng.integers(0, len(words), 150)]) for _ in range(n)]  # ~1 KB, a chunk's size
        with Collection.create(work / "w", index="flat") as coll:
            t = time.perf_counter()
            coll.add_vectors([f"d{i}" for i in range(n)], v, texts)
            dt = time.perf_counter() - t
        size = (work / "w" / "store.sqlite").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### The single writer: {n:,} one-chunk documents (~1 KB of text + a 384-d vector each)\n")
    print(f"{n / dt:,.0f} documents/s committed, one transaction each ({dt:.1f} s); "
          f"{size / n:,.0f} bytes of store per chunk")


def child_create(work: Path, index: str, n: int) -> dict:
    """Ingest n synthetic vectors into a new collection; this process's peak RSS."""
    import resource

    from semsearch.collection import INDEX_FILE, Collection
    step, dim = 50_000, 384
    with Collection.create(work / index, index=index) as coll:
        coll.embedder  # the model in memory in both, before the baseline
        base = _tree_mem()[0] / 2**20
        t = time.perf_counter()
        for start in range(0, n, step):  # the vectors are made a call at a time, never all at once
            rng = np.random.default_rng(start)
            v = rng.standard_normal((min(step, n - start), dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            coll.add_vectors([f"d{i}" for i in range(start, start + len(v))], v,
                             [f"document {i} about wing flow" for i in range(start, start + len(v))])
        ingest = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        q = v[:1] + 0.1
        coll.search_vectors(q / np.linalg.norm(q), k=K)  # the first search loads / scans once
        t = time.perf_counter()
        hit = coll.search_vectors(q / np.linalg.norm(q), k=K)[0][0].id
        search = time.perf_counter() - t
        info = coll.info()["index"]
        index_mb = (work / index / INDEX_FILE).stat().st_size / 2**20 if (work / index / INDEX_FILE).exists() else 0
    return {"index": index, "spec": info["spec"], "kind": info["kind"], "ingest_s": ingest, "base_mb": base,
            "peak_mb": peak, "search_s": search, "top": hit, "index_file_mb": index_mb,
            "after_search_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_create(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="scale-create-", dir=args.tmp))
    try:
        runs = [run_child(work, "create", kind, str(args.create_n)) for kind in (args.create_index, "ondisk")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mem, disk = runs
    print(f"\n### Ingest into a new collection: {args.create_n:,} vectors x 384 by add_vectors, in memory "
          f"vs created on-disk\n")
    print("| collection | index | ingest s | RSS before ingest MiB | peak RSS MiB | growth MiB "
          "| index.faiss MiB | one dense query s |\n|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['kind']} ({r['index']}) | {r['spec']} | {r['ingest_s']:.1f} | {r['base_mb']:,.0f} | "
              f"{r['peak_mb']:,.0f} | {r['peak_mb'] - r['base_mb']:,.0f} | {r['index_file_mb']:,.0f} | "
              f"{r['search_s']:.3f} |")
    print(f"\nratios on-disk / in-memory: peak RSS {disk['peak_mb'] / mem['peak_mb']:.2f}, growth over the "
          f"loaded model {(disk['peak_mb'] - disk['base_mb']) / (mem['peak_mb'] - mem['base_mb']):.2f}, ingest "
          f"time {disk['ingest_s'] / mem['ingest_s']:.2f}; same top hit: {disk['top'] == mem['top']}; the "
          f"vectors themselves: {args.create_n * 384 * 4 / 2**20:,.0f} MiB")


def _max_vector_diff(a: Path, b: Path) -> float:
    from semsearch.store import Store
    sa, sb = Store(a / "store.sqlite"), Store(b / "store.sqlite")
    va = {k: v for ids, vs in sa.vectors() for k, v in zip(ids.tolist(), vs)}
    vb = {k: v for ids, vs in sb.vectors() for k, v in zip(ids.tolist(), vs)}
    assert va.keys() == vb.keys(), "the two paths stored different chunks"
    return float(max(np.abs(va[k] - vb[k]).max() for k in va))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap", type=int, default=15_000, help="real sentences to embed (search.py's cache)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tmp", default=None, help="folder for the shards and indexes (default: the system's)")
    ap.add_argument("--data-dir", default=None, help="keep the shards, queries and ground truth here "
                    "and reuse them on the next run with the same --n / --shards")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--writer-n", type=int, default=20_000, help="documents for the single-writer run")
    ap.add_argument("--create-n", type=int, default=0, help="vectors for the created-on-disk ingest run "
                    "(0: skip it)")
    ap.add_argument("--create-index", default="flat", help="the in-memory collection's index for that run")
    ap.add_argument("--jsonl-n", type=int, default=0, help="records of one big JSONL file for the "
                    "whole-vs-parts `index --ray` run (0: skip it)")
    ap.add_argument("--jsonl-data", type=Path, default=REPO.parent / "shared" / "data" / "npl",
                    help="a folder with the corpus.jsonl for that run")
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        work, (what, *rest) = Path(args.work), args.child
        if what == "ondisk":
            out = child_ondisk(work)
        elif what == "memory":
            out = child_memory(work, int(rest[0]), rest[1])
        elif what == "create":
            out = child_create(work, rest[0], int(rest[1]))
        else:
            out = child_cold(work, rest[0])
        print(json.dumps(out))
        return
    if not args.skip_ingest:
        bench_ingest(args)
        bench_writer(args)
    if args.jsonl_n:
        bench_big_jsonl(args)
    if args.create_n:
        bench_create(args)
    if not args.skip_build:
        bench_build(args)


if __name__ == "__main__":
    main()
