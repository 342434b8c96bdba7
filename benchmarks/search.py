"""Search benchmark: index build time, memory, QPS and recall@10 per index type, the
Collection API's overhead over raw FAISS on the same index, CLI cold start, and indexing
throughput end to end.

Vectors. Uniform random 384-d vectors make every approximate index look broken and
well-separated clusters make IVF look perfect, so the vectors here start from real
embeddings: up to ~15k sentences of the Cranfield abstracts (``../shared/data/cranfield``)
and of CPython's help topics (``pydoc_data.topics``), embedded once with the int8 model and
cached in ``benchmarks/.cache/``. They are grown to ``--n`` by sampling around them:

* 60 %: a real "base" vector plus noise shaped like the real vectors' own covariance
  (not isotropic: isotropic noise in 384-d points away from every other embedding, so a
  synthetic point's only neighbours would be its siblings), scaled for cosine U(0.75, 0.85)
  to the base;
* 40 %: an interpolation between a base and one of its 20 nearest real neighbours
  (t ~ U(0.15, 0.85)) plus a little noise (cosine U(0.9, 0.97));

then renormalised. Queries: 775 held-out synthetics drawn the same way + the 225 real
Cranfield queries. A sanity line prints the mean cosine of the exact top-1 / top-10 and
the fraction of a query's top-10 that share its base vector.

Each index is built and measured in its own subprocess (RSS delta = that build alone),
through the public API only: the collection holds the N vectors (``Collection.add_vectors``)
and each index type is built with ``Collection.rebuild_index(spec)``. Per index:
* raw   = ``faiss_index.search`` on the same faiss object (``VectorIndex.faiss_index`` of
          the saved file, knobs set to the tuned params), one query at a time / all at once;
* api   = what Collection.search does after embedding: ``VectorIndex.search`` +
          ``store.chunk_rows`` + ``Hit`` objects (``coll.search_vectors``);
* full  = ``Collection.search(..., mode="dense", query_vectors=...)`` itself, given the
          precomputed query vectors (adds validation, the per-call snapshot and the
          generation check).

    python benchmarks/search.py --quick                       # n = 20,000
    python benchmarks/search.py --n 200000 > results.md       # default n = 200,000
    python benchmarks/search.py --only flat,hnsw --skip-cold --skip-ingest
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cranfield"
CACHE = REPO / "benchmarks" / ".cache"
DIM = 384
K = 10
N_QUERIES = 1000
SPECS = {"flat": "flat", "hnsw": "hnsw", "ivfpq": "ivfpq", "ivf": "ivf"}


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


# ------------------------------------------------------------------------------ real vectors
def real_sentences(data: Path, cap: int) -> list[str]:
    """Sentences of the Cranfield abstracts and of CPython's help topics, deduplicated."""
    out: dict[str, None] = {}
    cran = []
    with open(data / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            for s in json.loads(line)["text"].split(" . "):
                s = " ".join(s.split())
                if 30 <= len(s) <= 400:
                    cran.append(s)
    from pydoc_data.topics import topics
    py = []
    for text in topics.values():
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
                if 30 <= len(s) <= 400:
                    py.append(s)
    rng = np.random.default_rng(0)
    half = cap // 2
    py = [py[i] for i in rng.permutation(len(py))[:half]]
    cran = [cran[i] for i in rng.permutation(len(cran))[:cap - len(py)]]
    for s in cran + py:
        out.setdefault(s)
    return list(out)


def real_vectors(data: Path, cap: int, skip_cache: bool):
    """(texts, vectors, query_vectors) embedded with the int8 model, cached."""
    file = CACHE / f"real_{cap}.npz"
    if file.is_file() and not skip_cache:
        z = np.load(file, allow_pickle=False)
        return list(z["texts"]), z["vectors"], z["queries"]
    from semsearch.embedder import Embedder
    texts = real_sentences(data, cap)
    queries = [json.loads(l)["text"] for l in open(data / "queries.jsonl", encoding="utf-8")]
    emb = Embedder.load(None, variant="int8")
    t = time.perf_counter()
    vectors = emb.embed(texts, kind="passage")
    qv = emb.embed(queries, kind="query")
    dt = time.perf_counter() - t
    print(f"embedded {len(texts)} sentences + {len(queries)} queries in {dt:.0f}s "
          f"({(len(texts) + len(queries)) / dt:.0f}/s, int8)", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(file, texts=np.array(texts), vectors=vectors, queries=qv)
    return texts, vectors, qv


def synthesize(real: np.ndarray, n: int, seed: int, cos_range=(0.75, 0.85)):
    """n vectors around the real ones; returns (vectors, base index of each)."""
    import faiss
    rng = np.random.default_rng(seed)
    m, d = real.shape
    # noise with the real vectors' covariance, scaled to unit expected norm
    centered = real - real.mean(0)
    cov = centered.T @ centered / m
    evals, evecs = np.linalg.eigh(cov)
    shape = evecs * np.sqrt(np.maximum(evals, 0) / np.maximum(evals, 0).sum())
    flat = faiss.IndexFlatIP(d)
    flat.add(real)
    _, nbrs = flat.search(real, 21)
    base = rng.integers(0, m, n)
    out = real[base].copy()
    interp = rng.random(n) < 0.4
    j = nbrs[base[interp], rng.integers(1, 21, interp.sum())]
    t = rng.uniform(0.15, 0.85, interp.sum())[:, None].astype(np.float32)
    out[interp] = (1 - t) * out[interp] + t * real[j]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    # |noise| for a target cosine c to the (unit) base: c = 1/sqrt(1 + s^2)
    c = rng.uniform(*cos_range, n)
    c[interp] = rng.uniform(0.9, 0.97, interp.sum())
    s = np.sqrt(1 / c**2 - 1)
    noise = (rng.standard_normal((n, d)).astype(np.float32) @ shape.T.astype(np.float32))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # keep only the part orthogonal to the point, so the cosine is what was asked for
    noise -= (noise * out).sum(1, keepdims=True) * out
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out += s[:, None].astype(np.float32) * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out, np.float32), base


def dataset(n: int, data: Path, cap: int, skip_cache: bool):
    """(texts per vector, vectors, base id per vector, queries, query bases or -1)."""
    texts, real, real_q = real_vectors(data, cap, skip_cache)
    m = len(real)
    syn, base = synthesize(real, max(0, n - m), seed=1)
    vectors = np.concatenate([real, syn])[:n]
    bases = np.concatenate([np.arange(m), base])[:n]
    nq_syn = N_QUERIES - len(real_q)
    qs, qb = synthesize(real, nq_syn, seed=2)
    queries = np.concatenate([qs, real_q]).astype(np.float32)
    qbases = np.concatenate([qb, np.full(len(real_q), -1)])
    return [texts[b] for b in bases], vectors, bases, queries, qbases


def sanity(vectors, bases, queries, qbases, gt_pos, gt_scores) -> str:
    syn = qbases >= 0
    share = (bases[gt_pos[syn]] == qbases[syn, None]).mean()
    # real vectors among themselves (leave-one-out) for comparison
    import faiss
    m = int((np.arange(len(bases)) == bases).sum()) if len(bases) else 0
    real = vectors[:min(m, len(vectors))]
    flat = faiss.IndexFlatIP(DIM)
    flat.add(real)
    rs, _ = flat.search(real[:1000], K + 1)
    return (f"sanity: exact top-1 cosine {gt_scores[:, 0].mean():.3f}, top-10 mean "
            f"{gt_scores.mean():.3f} (synthetic queries {gt_scores[syn].mean():.3f}, real "
            f"Cranfield queries {gt_scores[~syn].mean():.3f}; real sentences among themselves: "
            f"top-1 {rs[:, 1].mean():.3f}, top-10 {rs[:, 1:].mean():.3f}); "
            f"{share:.1%} of a synthetic query's top-10 share its base")


# ------------------------------------------------------------------------------ collections
def bulk_collection(path: Path, texts, vectors, index: str = "auto", variant: str = "fp32"):
    """A collection holding the vectors as one-chunk documents (``add_vectors``)."""
    from semsearch.collection import Collection
    if path.exists():
        shutil.rmtree(path)
    with Collection.create(path, index=index, variant=variant) as coll:
        coll.add_vectors([f"doc{i}" for i in range(len(vectors))], vectors, list(texts),
                         [{"part": i % 7} for i in range(len(vectors))])


def set_raw_knobs(vi):
    """Put the VectorIndex's tuned knobs on the faiss objects themselves."""
    import faiss
    from semsearch.index import _children
    idx = vi.faiss_index
    if isinstance(idx, faiss.IndexIDMap2):
        idx = faiss.downcast_index(idx.index)
    while idx is not None:
        if isinstance(idx, faiss.IndexRefine):
            idx.k_factor = float(vi.params["k_factor"])
        elif isinstance(idx, faiss.IndexHNSW):
            idx.hnsw.efSearch = int(vi.params["efSearch"])
        elif isinstance(idx, faiss.IndexIVF):
            idx.nprobe = int(vi.params["nprobe"])
        idx = _children(idx)


def child(args) -> None:
    """Build one index over the collection and measure it; prints one JSON line."""
    import faiss
    from semsearch.collection import Collection
    work = Path(args.work)
    queries = np.load(work / "queries.npy")
    gt = np.load(work / "gt_ids.npy")
    nt = min(args.time_queries, len(queries))
    coll = Collection.open(work / "coll")
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    coll.rebuild_index(args.child)  # rebuilds from the store and saves the file
    build = time.perf_counter() - t
    gc.collect()
    rss1 = rss_mb()
    from semsearch.index import VectorIndex
    vi, _ = VectorIndex.load(work / "coll" / "index.faiss")
    size = faiss.serialize_index(vi.faiss_index).nbytes
    raw = vi.faiss_index
    set_raw_knobs(vi)
    coll.search_vectors(queries[:1], K)  # the collection's own copy, loaded outside the timing
    names = [f"q{i}" for i in range(len(queries))]

    # recall, and the raw and API rankings agree
    D, I = raw.search(queries, K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(I, gt)])
    api = coll.search(names, k=K, mode="dense", query_vectors=queries)
    api_ids = np.array([[h.chunk_id for h in hits] + [-1] * (K - len(hits)) for hits in api])
    agree = float((api_ids == I).mean())

    def raw_single():
        for i in range(nt):
            raw.search(queries[i:i + 1], K)

    def api_single():
        for i in range(nt):
            coll.search_vectors(queries[i], K)

    def full_single():
        for i in range(nt):
            coll.search(names[i], k=K, mode="dense", query_vectors=queries[i:i + 1])

    def raw_batch():
        raw.search(queries, K)

    def full_batch():
        coll.search(names, k=K, mode="dense", query_vectors=queries)

    runs = {name: [] for name in ("raw1", "api1", "full1", "rawB", "fullB")}
    threads = faiss.omp_get_max_threads()
    for _ in range(args.runs):  # interleaved, so the ratios within a run share the load
        for name, fn, count in (("raw1", raw_single, nt), ("api1", api_single, nt),
                                ("full1", full_single, nt), ("rawB", raw_batch, len(queries)),
                                ("fullB", full_batch, len(queries))):
            # one query at a time runs on 1 thread: an OpenMP region per call on a busy
            # 2-core machine costs milliseconds (IndexIDMap2.search opens one to map ids)
            faiss.omp_set_num_threads(1 if name.endswith("1") else threads)
            t = time.perf_counter()
            fn()
            runs[name].append(count / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(runs[a], runs[b]))  # noqa: E731
    print(json.dumps({
        "spec": vi.spec, "params": {k: v for k, v in vi.params.items() if k != "built_for"},
        "build_s": build, "rss_mb": rss1 - rss0, "index_mb": size / 2**20, "recall": recall,
        "agree": agree, "qps": med, "overhead_api": ratio("raw1", "api1") - 1,
        "overhead_full": ratio("raw1", "full1") - 1, "overhead_batch": ratio("rawB", "fullB") - 1,
        "n": int(vi.ntotal), "nt": nt, "omp": threads}))


def run_child(work: Path, spec: str, args, save: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, "--work", str(work), "--runs", str(args.runs),
           "--time-queries", str(args.time_queries)] + (["--save"] if save else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{spec}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ sections
def search_section(args, texts, vectors, bases, queries, qbases, work: Path) -> list[str]:
    import faiss
    from semsearch.index import choose_spec
    lines = []
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    gt_scores, gt_pos = flat.search(queries, K)
    del flat
    lines.append(sanity(vectors, bases, queries, qbases, gt_pos, gt_scores))
    t = time.perf_counter()
    bulk_collection(work / "coll", texts, vectors)
    lines.append(f"store: {len(vectors)} chunks bulk-inserted in {time.perf_counter() - t:.1f}s")
    np.save(work / "queries.npy", queries)
    np.save(work / "gt_ids.npy", gt_pos + 1)  # chunk ids are positions + 1
    auto = choose_spec(len(vectors), DIM)
    only = args.only.split(",") if args.only else ["auto", "flat", "hnsw", "ivfpq"]
    from semsearch.index import resolve_spec
    rows, done = [], {}
    for name in only:
        spec = auto if name == "auto" else SPECS.get(name, name)
        key = resolve_spec(spec, len(vectors), DIM)
        label = f"auto ({key})" if name == "auto" else name
        if key in done:
            r = done[key]
            rows.append((label + " = same build", r))
            continue
        print(f"building {label} ...", file=sys.stderr, flush=True)
        r = run_child(work, spec, args)
        done[key] = r
        rows.append((label, r))
    lines.append("")
    lines.append(f"N = {len(vectors):,} vectors, {len(queries)} queries (recall@{K} vs exact over "
                 f"all; single-query QPS over the first {rows[0][1]['nt']}), k = {K}; single-query loops on 1 faiss "
                 f"thread, batches on {rows[0][1]['omp']}; medians of {args.runs} interleaved runs")
    lines.append("")
    lines.append("| index | faiss spec | tuned knobs | build s | RSS delta MB | index MB | recall@10 "
                 "| raw QPS 1-query | api QPS | full search() QPS | api overhead | full overhead "
                 "| raw QPS batch | search(list) QPS | batch overhead |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        q = r["qps"]
        knobs = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(
            f"| {label} | `{r['spec']}` | {knobs} | {r['build_s']:.1f} | {r['rss_mb']:.0f} | "
            f"{r['index_mb']:.0f} | {r['recall']:.3f} | {q['raw1']:.0f} | {q['api1']:.0f} | "
            f"{q['full1']:.0f} | {r['overhead_api']:+.0%} | {r['overhead_full']:+.0%} | "
            f"{q['rawB']:.0f} | {q['fullB']:.0f} | {r['overhead_batch']:+.0%} |")
        if r["agree"] < 1:
            lines.append(f"  (note: api and raw rankings agree on only {r['agree']:.1%} of slots)")
    return lines


def cold_section(args, texts, vectors, work: Path) -> list[str]:
    n = min(args.cold_n, len(vectors))
    home = work / "home"
    home.mkdir(exist_ok=True)
    bulk_collection(home / "cold", texts[:n], vectors[:n])
    cw = work / "coldwork"
    cw.mkdir(exist_ok=True)
    shutil.copytree(home / "cold", cw / "coll", dirs_exist_ok=True)
    np.save(cw / "queries.npy", np.zeros((1, DIM), np.float32))
    np.save(cw / "gt_ids.npy", np.zeros((1, K), np.int64))
    # build the auto index once and save it, as `semsearch index` would have
    run_child(cw, "auto", argparse.Namespace(runs=1, time_queries=1), save=True)
    shutil.copy(cw / "coll" / "index.faiss", home / "cold" / "index.faiss")
    lines = [f"Cold start: `python -m semsearch --home DIR search cold QUERY` in a fresh process, "
             f"{n:,}-chunk collection (auto index), fp32 model; median of {args.cold_runs} runs "
             f"(1 untimed warm-up for the page cache)", "",
             "| mode | median s | min s | max s |", "|---|---:|---:|---:|"]
    env = dict(os.environ)
    for mode in ("dense", "hybrid"):
        cmd = [sys.executable, "-m", "semsearch", "--home", str(home), "search", "cold",
               "lift of a wing in a propeller slipstream", "--mode", mode]
        times = []
        for i in range(args.cold_runs + 1):
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t
            if out.returncode:
                raise RuntimeError(out.stderr)
            if i:
                times.append(dt)
        lines.append(f"| {mode} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    # where the time goes, in one process
    probe = (
        "import time; t0=time.perf_counter(); import numpy, faiss, onnxruntime, tokenizers; t1=time.perf_counter();\n"
        "from semsearch.collection import Collection; t2=time.perf_counter();\n"
        f"c=Collection.open({str(home / 'cold')!r}); c.embedder; t3=time.perf_counter();\n"
        "from semsearch.models import sha256_file; f=c.embedder.folder/c.embedder.manifest['variants'][c.pinned['variant']]['file'];"
        " ts=time.perf_counter(); sha256_file(f); tsha=time.perf_counter()-ts;\n"
        "c.sync_index()\n"
        "t4=time.perf_counter(); c.search('lift of a wing in a propeller slipstream', mode='dense'); t5=time.perf_counter();\n"
        "c.search('lift of a wing in a propeller slipstream', mode='hybrid'); t6=time.perf_counter();\n"
        "print(f'{t1-t0:.2f} {t2-t1:.2f} {t3-t2:.2f} {tsha:.2f} {t4-t3:.2f} {t5-t4:.3f} {t6-t5:.3f}')")
    parts = []
    for _ in range(3):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
        total = time.perf_counter() - t
        if out.returncode:
            raise RuntimeError(out.stderr)
        parts.append([float(x) for x in out.stdout.split()] + [total])
    p = np.median(np.array(parts), axis=0)
    lines += ["", f"Breakdown (one process, median of 3): imports numpy/faiss/onnxruntime/tokenizers "
              f"{p[0]:.2f}s, semsearch {p[1]:.2f}s, open + load model {p[2]:.2f}s (of which sha256 "
              f"of the .onnx alone {p[3]:.2f}s), load index file {p[4]:.2f}s, first dense query "
              f"{p[5] * 1000:.0f} ms, then a hybrid query {p[6] * 1000:.0f} ms; whole process "
              f"{p[7]:.2f}s"]
    return lines


def ingest_section(args, data: Path, work: Path) -> list[str]:
    from semsearch.embedder import Embedder
    docs = [json.loads(l) for l in open(data / "corpus.jsonl", encoding="utf-8")]
    if args.quick:
        docs = docs[:300]
    folder = work / "cranfield_txt"
    folder.mkdir(exist_ok=True)
    for d in docs:
        (folder / f"{d['_id']}.txt").write_text(f"{d['title']}\n\n{d['text']}", encoding="utf-8")
    texts = [f"{d['title']}\n\n{d['text']}" for d in docs]
    lines = [f"Indexing {len(docs)} Cranfield documents (one .txt each: title + abstract): "
             "`semsearch index` wall time (fresh process: imports, model load, chunking, "
             "embedding, SQLite, index) vs `Embedder.embed` of the same texts (model already "
             "loaded, batch 32)", "",
             "| variant | `semsearch index` docs/s (wall) | its own report docs/s | chunks | "
             "Embedder.embed docs/s (1 text per doc) | pipeline / embed time | embed of the "
             "pipeline's own chunk texts, s | pipeline / chunk-embed time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in ("fp32", "int8"):
        emb = Embedder.load(None, variant=variant)
        emb.embed(texts[:32])
        t = time.perf_counter()
        emb.embed(texts, kind="passage")
        embed_s = time.perf_counter() - t
        home = work / f"ingest_{variant}"
        shutil.rmtree(home, ignore_errors=True)
        cmd = [sys.executable, "-m", "semsearch", "--home", str(home), "index", str(folder),
               "--name", "cran", "--variant", variant]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if out.returncode:
            raise RuntimeError(out.stderr)
        m = re.search(r"(\d+) chunks in ([\d.]+)s", out.stdout)
        chunks, own = int(m.group(1)), float(m.group(2))
        import sqlite3
        db = sqlite3.connect(home / "cran" / "store.sqlite")
        chunk_texts = [r[0] for r in db.execute("SELECT text FROM chunks ORDER BY id")]
        db.close()
        t = time.perf_counter()
        emb.embed(chunk_texts, kind="passage")
        chunk_s = time.perf_counter() - t
        del emb
        lines.append(f"| {variant} | {len(docs) / wall:.1f} | {len(docs) / own:.1f} | {chunks} | "
                     f"{len(docs) / embed_s:.1f} | {own / embed_s:.2f}x | {chunk_s:.1f} | "
                     f"{own / chunk_s:.2f}x |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="n = 20,000, fewer runs, 300 documents")
    ap.add_argument("--only", default=None, help="comma list of auto,flat,hnsw,ivfpq,ivf or faiss specs")
    ap.add_argument("--skip-embed-cache", action="store_true", help="re-embed the real sentences")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--cap", type=int, default=15_000, help="real sentences to embed")
    ap.add_argument("--cold-n", type=int, default=100_000)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time-queries", type=int, default=200)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.n = min(args.n, 20_000) if args.n != 200_000 else 20_000
        args.cold_n = min(args.cold_n, args.n)
    import faiss
    import onnxruntime
    import platform
    print(f"# semsearch search benchmark (n = {args.n:,}{', quick' if args.quick else ''})\n")
    print(f"Python {platform.python_version()}, faiss {faiss.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    work = Path(tempfile.mkdtemp(prefix="semsearch-bench-"))
    try:
        texts, vectors, bases, queries, qbases = dataset(
            max(args.n, args.cold_n if not args.skip_cold else 0), args.data, args.cap, args.skip_embed_cache)
        if not args.skip_search:
            n = args.n
            for line in search_section(args, texts[:n], vectors[:n], bases[:n], queries, qbases, work):
                print(line)
            print(flush=True)
        if not args.skip_cold:
            for line in cold_section(args, texts, vectors, work):
                print(line)
            print(flush=True)
        if not args.skip_ingest:
            for line in ingest_section(args, args.data, work):
                print(line)
        print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
