"""Writing an embeddings answer: Starlette's JSONResponse of ``tolist()`` rows (json.dumps,
float64 digits; what the server did before) against ``FastJSON`` (orjson, float32 digits),
on the same unit vectors, in the same process. It runs on the event loop, so while it runs
no other request is served. Medians of ``--runs``.

    python benchmarks/json_answer.py [--rows 32,256,2048] [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from starlette.responses import JSONResponse

from semsearch.server.app import FastJSON


def answer(rows):
    return {"object": "list", "model": "m", "data": [{"object": "embedding", "index": i, "embedding": r}
                                                     for i, r in enumerate(rows)]}


def timed(render, runs: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = len(render().body)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="32,256,2048")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print("| texts | json.dumps ms | orjson ms | ratio | json.dumps MB | orjson MB |\n|---:|---:|---:|---:|---:|---:|")
    for n in map(int, args.rows.split(",")):
        vectors = np.random.default_rng(n).standard_normal((n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        old, old_size = timed(lambda: JSONResponse(answer(vectors.tolist())), args.runs)
        new, new_size = timed(lambda: FastJSON(answer(list(vectors))), args.runs)
        print(f"| {n:,} | {old * 1e3:.1f} | {new * 1e3:.1f} | {old / new:.1f}x | {old_size / 1e6:.2f} | {new_size / 1e6:.2f} |")


if __name__ == "__main__":
    main()
