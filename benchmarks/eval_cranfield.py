"""Retrieval quality on Cranfield (BEIR layout): every mode and variant in one table.

Each (variant, index type) is indexed once into benchmarks/.cache/eval-*, then every mode
is scored on it through `semsearch.evaluate`, the same code as `semsearch eval`.

    python benchmarks/eval_cranfield.py [--data ../shared/data/cranfield]
"""
import argparse
import json
from pathlib import Path

from semsearch.evaluation import evaluate

HERE = Path(__file__).resolve().parent
RUNS = [  # (label, variant, index type, mode)
    ("lexical (FTS5 BM25)", "fp32", "flat", "lexical"),
    ("dense fp32", "fp32", "flat", "dense"),
    ("dense int8", "int8", "flat", "dense"),
    ("hybrid fp32", "fp32", "flat", "hybrid"),
    ("hybrid int8", "int8", "flat", "hybrid"),
    ("dense fp32, HNSW", "fp32", "hnsw", "dense"),
    ("hybrid fp32, HNSW", "fp32", "hnsw", "hybrid"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cranfield"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rows = []
    print("| run | nDCG@10 | Recall@100 | MRR@10 | MAP@100 |\n|---|---:|---:|---:|---:|")
    for label, variant, spec, mode in RUNS:
        name = str(HERE / ".cache" / f"eval-{variant}-{spec}")
        result = evaluate(args.data, mode=mode, variant=variant, collection=name, index=spec)
        m = result["metrics"]
        rows.append({"run": label, "index": result["index"], **m})
        print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} | {m['map@100']:.4f} |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
