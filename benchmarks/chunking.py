"""Chunking throughput: one document at a time (``iter_chunks``, what ingest did) vs
documents in groups (``chunk_documents``, what ingest does now), on real corpora.

On a GPU, embedding is so fast that ingest waits on chunking: one document at a time
tokenises on one core (plus a per-chunk re-count), while a group goes through the
tokeniser's ``encode_batch`` on every core. Both give the same chunks (checked here).
Corpora: the demo's CPython documentation (examples/python_docs.py, long pages) and the
MED abstracts (../shared/data/med). Alternating passes, medians.

    python benchmarks/chunking.py [--runs 5] [--chunk-tokens 254 --overlap 32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def corpora() -> dict[str, list[list[str]]]:
    from semsearch.loaders import list_files, load_file

    out = Path(tempfile.mkdtemp(prefix="semsearch-chunking-")) / "python-docs"
    subprocess.run([sys.executable, str(REPO / "examples" / "python_docs.py"), str(out)], check=True,
                   capture_output=True)
    docs = [list(d.segments()) for f in list_files([str(out)]) for d in load_file(f) if hasattr(d, "key")]
    med = REPO.parent / "shared" / "data" / "med" / "corpus.jsonl"
    abstracts = [[json.loads(line)["text"]] for line in med.open(encoding="utf-8") if line.strip()]
    return {"CPython docs": docs, "MED abstracts": abstracts}


def main() -> None:
    from semsearch.chunking import chunk_documents, iter_chunks
    from semsearch.embedder import Embedder
    from semsearch.ingest import CHUNK_GROUP_CHARS
    from semsearch.runtime import cpu_cores

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--chunk-tokens", type=int, default=254)
    p.add_argument("--overlap", type=int, default=32)
    args = p.parse_args()
    tokenizer = Embedder.load(None, device="cpu").tokenizer
    size = args.chunk_tokens, args.overlap

    def one_at_a_time(docs):
        return [list(iter_chunks(d, tokenizer, *size)) for d in docs]

    def grouped(docs):
        out, group, chars = [], [], 0
        for d in docs + [None]:
            if d is None or chars >= CHUNK_GROUP_CHARS:
                out += chunk_documents(group, tokenizer, *size)
                group, chars = [], 0
            if d is not None:
                group.append(d)
                chars += sum(map(len, d))
        return out

    print(f"# {cpu_cores()} cores; {args.chunk_tokens}-token chunks, overlap {args.overlap}; "
          f"groups of {CHUNK_GROUP_CHARS:,} characters; {args.runs} alternating passes, medians")
    print("| corpus | documents | chunks | one at a time, chunks/s | grouped, chunks/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, docs in corpora().items():
        want = one_at_a_time(docs)
        assert grouped(docs) == want, "chunk_documents must give iter_chunks' chunks"
        n = sum(map(len, want))
        rates = {one_at_a_time: [], grouped: []}
        for _ in range(args.runs):
            for fn in rates:
                t = time.perf_counter()
                fn(docs)
                rates[fn].append(n / (time.perf_counter() - t))
        a, b = (statistics.median(r) for r in rates.values())
        print(f"| {name} | {len(docs):,} | {n:,} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
