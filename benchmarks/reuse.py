"""`index` after a folder is moved: the moved files' chunks and vectors reused (not embedded
again) against embedding them, as before (a fresh collection indexing the moved folder).

N Cranfield abstracts are written as .txt files in a folder under a parent, which is indexed
once. Medians of --runs, the calls taking turns in every run:
  - reuse: the folder renamed (to and fro), then `index` of the parent: every file reused,
    the old ids removed;
  - embed: a fresh collection indexing the parent: every file embedded.
--ray: both as `index --ray` (distributed.index_paths) on a local Ray started once.

    nice -n 19 .venv/bin/python benchmarks/reuse.py --n 500 [--data ../shared/data/cranfield] [--ray]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from semsearch import Collection

from filters import medians  # the calls taking turns in every run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


def write_files(folder: Path, n: int, data: Path) -> None:
    folder.mkdir(parents=True)
    with open(data / "corpus.jsonl") as f:
        for i, line in zip(range(n), f):
            rec = json.loads(line)
            (folder / f"{rec['_id']}.txt").write_text(f"{rec['title']}\n{rec['text']}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA, help="Cranfield (../shared/data/cranfield)")
    ap.add_argument("--ray", action="store_true", help="index on a local Ray (the ray extra)")
    args = ap.parse_args()
    index = lambda coll, paths: coll.add_files(paths)  # noqa: E731
    if args.ray:
        import ray
        from semsearch.distributed import index_paths
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        index = index_paths
    with tempfile.TemporaryDirectory(prefix="reuse-") as tmp:
        tmp = Path(tmp)
        parent, here, there = tmp / "docs", tmp / "docs" / "a", tmp / "docs" / "b"
        write_files(here, args.n, args.data)
        coll = Collection.create(tmp / "moved")
        first = coll.add_files([parent])
        print(f"{args.n} files ({first.added} with text), {first.chunks} chunks, indexed once in {first.seconds:.1f}s")
        moves, embeds, fresh = [], [], [0]

        def reuse():
            src, dst = (here, there) if here.exists() else (there, here)
            os.rename(src, dst)
            moves.append(index(coll, [parent]))

        def embed():
            fresh[0] += 1
            with Collection.create(tmp / f"fresh{fresh[0]}", embedder=coll.embedder) as other:
                embeds.append(index(other, [parent]))

        got = medians({"reuse": reuse, "embed": embed}, args.runs)
        assert all(r.reused == r.added == r.removed == first.added for r in moves), moves
        assert all(r.added == first.added and not r.reused for r in embeds), embeds
        print("| N files | index after a move, reused (s) | embedded, fresh collection (s) | ratio |")
        print("|---:|---:|---:|---:|")
        print(f"| {args.n}{' (--ray)' if args.ray else ''} | {got['reuse']:.2f} | {got['embed']:.2f} "
              f"| {got['embed'] / got['reuse']:.0f}x |")
        coll.close()


if __name__ == "__main__":
    main()
