"""How long the thread that starts model runs waits for the GIL while the GPU pipeline
tokenises: tokenising in a thread of the same process vs in TokenizerProcesses workers.

On a GPU, the thread that starts each model run sleeps in ONNX Runtime (GIL released)
while the GPU works, then needs the GIL back to start the next run. If another thread of
the process holds the GIL then (tokenising: building, reading and freeing a Python
object per text), the wait can reach Python's switch interval (5 ms), as long as a whole
fp16 run. This measures that wait without a GPU: the probe thread sleeps 2 ms (the GPU
run) in a loop while the tokeniser runs flat out beside it, and we report how late each
wake-up was, plus the tokeniser's own texts/s. Medians of --runs.

It also measures how long the first window of a call (4,096 of 7,000 long texts) takes to
come back, tokenised in this process or by the workers: the GPU waits that long before
its first run.

    python benchmarks/feeder.py                  # short and long Cranfield texts
    python benchmarks/feeder.py --processes 2 --threads 1
    python benchmarks/feeder.py --measure first-window --runs 7
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from semsearch.embedder import WINDOW, Embedder
from semsearch.runtime import TokenizerProcesses, cpu_cores

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cranfield"
PROBE_S = 0.002


def texts_of(which: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in (DATA / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    texts = [r.get("title" if which == "short" else "text", "") for r in rows]
    return (texts * (n // len(texts) + 1))[:n]


def measure(pool: TokenizerProcesses, texts: list[str], seconds: float) -> dict:
    """Probe wake-up lateness (ms) while ``pool`` tokenises ``texts`` window after window."""
    windows = [texts[i:i + WINDOW] for i in range(0, len(texts), WINDOW)]
    done, stop = [0], threading.Event()

    def tokenise():
        while windows and not stop.is_set():
            for tokens in pool.map(windows):
                done[0] += len(tokens)

    worker = threading.Thread(target=tokenise)  # with no texts, it ends at once
    late = []
    started = time.perf_counter()
    worker.start()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        time.sleep(PROBE_S)
        late.append(time.perf_counter() - t - PROBE_S)
    rate = done[0] / (time.perf_counter() - started)
    stop.set()
    worker.join()
    ms = np.array(late) * 1e3
    return {"mean": ms.mean(), "p99": np.percentile(ms, 99), "max": ms.max(), "rate": rate}


def first_window(pool: TokenizerProcesses, texts: list[str]) -> float:
    """Seconds until the first window of a call comes back; the rest is read unclocked."""
    windows = [texts[i:i + WINDOW] for i in range(0, len(texts), WINDOW)]
    started = time.perf_counter()
    stream = pool.map(windows)
    next(stream)
    took = time.perf_counter() - started
    for _ in stream:
        pass
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="tokeniser threads in each worker process")
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--measure", choices=("both", "wake-up", "first-window"), default="both")
    args = p.parse_args()
    e = Embedder.load(None, device="cpu", threads=1)
    here = TokenizerProcesses(e.tokenizer, False, 0)
    workers = TokenizerProcesses(e.tokenizer, False, args.processes, args.threads)
    list(workers.map([["warm up"] * 64 * args.processes] * args.processes))  # every worker has booted
    if args.measure != "wake-up":
        texts = texts_of("long", 7_000)
        took = {"here": [], "workers": []}
        for _ in range(args.runs):
            took["here"].append(first_window(here, texts))
            took["workers"].append(first_window(workers, texts))
        print(f"# {cpu_cores()} cores; first window of a call of 7,000 long texts, median of {args.runs}, alternating")
        print("| tokenising | first window back, s |\n|---|---:|")
        print(f"| in this process (all cores) | {statistics.median(took['here']):.3f} |")
        print(f"| {args.processes} worker processes × {args.threads} threads | "
              f"{statistics.median(took['workers']):.3f} |", flush=True)
    if args.measure == "first-window":
        workers.close()
        return
    print(f"# {cpu_cores()} cores; probe: sleep {PROBE_S * 1e3:.0f} ms in a loop; {args.seconds:.0f} s a "
          f"measurement, median of {args.runs}, alternating")
    print("| texts | tokenising | wake-up late, mean ms | p99 ms | max ms | tokeniser texts/s |")
    print("|---|---|---:|---:|---:|---:|")
    for which, n in (("short", 20_000), ("long", 7_000)):
        texts = texts_of(which, n)
        results = {"none": [], "thread": [], "processes": []}
        for _ in range(args.runs):
            results["none"].append(measure(here, [], args.seconds))
            results["thread"].append(measure(here, texts, args.seconds))
            results["processes"].append(measure(workers, texts, args.seconds))
        for label, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            name = {"none": "none (the probe alone)", "thread": "in a thread of this process",
                    "processes": f"{args.processes} worker processes × {args.threads} threads"}[label]
            rate = f"{med['rate']:,.0f}" if label != "none" else "–"
            print(f"| {which} | {name} | {med['mean']:.3f} | {med['p99']:.2f} | {med['max']:.2f} | {rate} |", flush=True)
    workers.close()


if __name__ == "__main__":
    main()
