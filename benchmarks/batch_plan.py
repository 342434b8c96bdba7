"""The GPU pipeline's batches and windows before and after issue 12's batch planner, on the
texts of `embed_throughput.py --device cuda`, computed here without a GPU.

Before: windows of 4,096 texts, each cut into batches of as many rows as the token budget
allows (1,024). After: windows growing from 512 and shrinking at the end
(``window_spans``), cut where padding plus each run's fixed cost is least
(``plan_batches``). Counted exactly: runs, padded tokens (rows padded too, for fp16)
against real ones, the (rows, width) shapes fp16 meets (each costs it 40-115 ms the first
time), texts in the first window. Modelled (not measured): the time on the H200 of the 14:57 run, from
that run's own stage times (tokenise, GPU alone) for the old plan: a window is ready when
the tokeniser has done it and everything before it, a run costs ``g × (padded tokens +
its fixed cost)`` (``RUN_COST_H200``) with ``g`` fitted to the old plan's GPU time, and runs go in order once their
window is ready. The model leaves out the GIL: it under-predicted short texts' old time.

    python benchmarks/batch_plan.py [--data ../shared/data/cranfield]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from embed_throughput import gpu_texts

# The H200 run of 2026-11-25 14:57 (benchmarks/README.md), old plans: (tokenise s, GPU
# alone s, pipelined s) for 20,000 short and 7,000 long texts.
H200 = {("short", "fp32"): (0.100, 0.372, 0.439), ("short", "fp16"): (0.130, 0.092, 0.181),
        ("long", "fp32"): (0.288, 1.024, 1.233), ("long", "fp16"): (0.315, 0.146, 0.380)}
# What a run costs beyond its tokens on that H200, in tokens: a run of 32 short rows took 1.8
# ms (fp32) and 1.1 ms (fp16), of which its tokens take 0.4 and 0.1 ms. The planner's own
# run_cost may differ (fp16's is higher to keep its shapes few); the model uses these.
RUN_COST_H200 = {"fp32": 2000, "fp16": 6000}
OLD_WINDOW = 4096


def old_plan(lengths, budget: int, rows_cap: int, widths, run_cost: int) -> list[np.ndarray]:
    """The planner before: the longest rows first, as many rows a batch as fit."""
    from semsearch.embedder import bucket

    order, batches, i = np.argsort(-np.asarray(lengths), kind="stable"), [], 0
    while i < len(order):
        take = max(1, min(rows_cap, budget // bucket(int(lengths[order[i]]), widths)))
        batches.append(order[i:i + take])
        i += take
    return batches


def runs(lengths, spans, plan, widths, run_cost) -> list[tuple[int, int, int]]:
    """(texts tokenised before the run can start, its padded rows, its padded width) of
    each model run."""
    from semsearch.embedder import GPU_BATCH, bucket, full_rows, padded_rows

    budget, rows_cap, out = GPU_BATCH["max_batch_tokens"], GPU_BATCH["max_batch_size"], []
    for start, stop in spans:
        part = lengths[start:stop]
        for rows in plan(part, budget, rows_cap, widths, run_cost):
            width = bucket(int(part[rows].max()), widths)
            out.append((stop, int(padded_rows(len(rows), full_rows(width, budget, rows_cap), widths)), width))
    return out


def main() -> None:
    from semsearch.embedder import GPU_BATCH, GPU_FP16_RUN_COST, Embedder, bucket_widths, plan_batches, window_spans

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield")
    args = p.parse_args()
    embedder = Embedder.load(device="cpu")
    print("| texts | precision | plan | runs | shapes | padded / real tokens | first window | "
          "modelled H200 s | modelled texts/s | measured (old) texts/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for which, texts in gpu_texts(args.data, 20000, 7000).items():
        lengths = embedder.tokenize(texts).lengths
        for variant, widths, run_cost in (("fp32", None, GPU_BATCH["run_cost"]),
                                          ("fp16", bucket_widths(embedder.max_length), GPU_FP16_RUN_COST)):
            tokenise_s, gpu_s, pipelined_s = H200[(which, variant)]
            old_spans = [(s, min(s + OLD_WINDOW, len(texts))) for s in range(0, len(texts), OLD_WINDOW)]
            plans = {"before": runs(lengths, old_spans, old_plan, widths, run_cost),
                     "after": runs(lengths, window_spans(len(texts)), plan_batches, widths, run_cost)}
            fixed = RUN_COST_H200[variant]
            g = gpu_s / sum(rows * width + fixed for _, rows, width in plans["before"])
            for name, plan in plans.items():
                clock = 0.0
                for ready, rows, width in plan:
                    clock = max(clock, tokenise_s * ready / len(texts)) + g * (rows * width + fixed)
                measured = f"{len(texts) / pipelined_s:,.0f}" if name == "before" else ""
                padded = sum(rows * width for _, rows, width in plan) / lengths.sum()
                print(f"| {which} | {variant} | {name} | {len(plan)} | {len({r[1:] for r in plan})} | "
                      f"{padded:.3f} | {plan[0][0]:,} | {clock:.3f} | {len(texts) / clock:,.0f} | {measured} |")


if __name__ == "__main__":
    main()
