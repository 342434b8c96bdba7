"""Search latency with highlights and without: the median over NPL queries of
`Collection.search(q, k=k, mode=mode, highlight=True/False)`, the two taking turns on each
query, per mode and k. NPL (11,426 abstracts) is indexed into --home first if it is not there.

    nice -n 19 .venv/bin/python benchmarks/highlight_cost.py --queries 30 [--home /tmp/hl-home]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from semsearch.collection import Collection, index_files, list_collections

NPL = Path(__file__).resolve().parents[2] / "shared" / "data" / "npl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--home", default="/tmp/highlight-cost-home")
    ap.add_argument("--data", type=Path, default=NPL, help="a BEIR folder (../shared/data/npl)")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 1000, 10000])
    args = ap.parse_args()
    if "npl" not in list_collections(args.home):
        index_files(Path(args.home) / "npl", [args.data / "corpus.jsonl"], progress=True)
    with open(args.data / "queries.jsonl") as f:
        queries = [json.loads(line)["text"] for line in f][:args.queries]
    with Collection.open("npl", home=args.home) as coll:
        coll.search("warm up", k=10)
        print("| mode | k | median ms, highlight=False | median ms, highlight=True | ratio | median hits with a highlight |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode in ("hybrid", "lexical", "dense"):
            for k in args.k:
                times: dict[bool, list[float]] = {False: [], True: []}
                marked = []
                for q in queries:
                    for highlight in (False, True):
                        started = time.perf_counter()
                        hits = coll.search(q, k=k, mode=mode, highlight=highlight)
                        times[highlight].append(time.perf_counter() - started)
                    marked.append(sum(bool(h.highlights) for h in hits))
                off, on = (statistics.median(times[x]) * 1000 for x in (False, True))
                print(f"| {mode} | {k} | {off:.1f} | {on:.1f} | {on / off:.2f} | {statistics.median(marked):g} |",
                      flush=True)


if __name__ == "__main__":
    main()
