"""`semsearch backup`: what a copy costs against copying the files, and what it costs a
writer that goes on meanwhile (ratios, in the same run).

A collection of N one-chunk documents (random unit vectors, ~300-character texts, a little
metadata; no model runs) is built in a temporary folder. Medians of --runs, the calls
taking turns in every run:
  - backup: Collection.backup (SQLite's online backup of one snapshot, quick_check, the
    index file, fsyncs, renames);
  - sqlite backup: Python's sqlite3 backup of store.sqlite alone, no check, no fsync (what
    the README showed before `semsearch backup`);
  - cp: shutil.copytree of the folder (the floor: no check, no fsync, and torn if anyone
    writes meanwhile).
Then a writer adds --batch documents per commit for --seconds, alone and while backups run
back to back in another thread: its commits per second in both, and the backups' count.

    nice -n 19 .venv/bin/python benchmarks/backup.py --n 100000
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from semsearch import Collection

from filters import medians  # the calls taking turns in every run

DIM = 384


def vectors(n: int, rng) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(path: Path, n: int, rng) -> Collection:
    coll = Collection.create(path)
    text = "The harbour master counted boats, checked the tide tables and logged the weather. " * 4
    for start in range(0, n, 10_000):
        ids = [f"d{i}" for i in range(start, min(n, start + 10_000))]
        coll.add_vectors(ids, vectors(len(ids), rng), [f"{i} {text}" for i in ids],
                         metadata=[{"team": f"t{hash(i) % 10}"} for i in ids])
    coll.rebuild_index()  # the index file saved as of the last write
    return coll


def writer_rate(coll: Collection, seconds: float, batch: int, rng, backup) -> tuple[float, int]:
    """Commits a second of a writer adding ``batch`` documents a commit for ``seconds``,
    while ``backup`` runs back to back in a thread (None: alone); and the backups made."""
    made, stop = [0], threading.Event()

    def backups():
        while not stop.is_set():
            backup()
            made[0] += 1

    thread = threading.Thread(target=backups) if backup else None
    if thread:
        thread.start()
    commits, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        ids = [f"w{rng.integers(1 << 62)}" for _ in range(batch)]
        coll.add_vectors(ids, vectors(batch, rng), [f"written {i}" for i in ids])
        commits += 1
    elapsed = time.perf_counter() - started
    stop.set()
    if thread:
        thread.join()
    return commits / elapsed, made[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        coll = build(tmp / "src", args.n, rng)
        size = sum(p.stat().st_size for p in (tmp / "src").iterdir() if p.is_file())
        target = tmp / "copy"

        def ours():
            coll.backup(target)
            shutil.rmtree(target)

        def sqlite_backup():
            target.mkdir()
            with closing(sqlite3.connect(tmp / "src" / "store.sqlite")) as src, \
                    closing(sqlite3.connect(target / "store.sqlite")) as dst:
                src.backup(dst)
            shutil.rmtree(target)

        def cp():
            shutil.copytree(tmp / "src", target)
            shutil.rmtree(target)

        got = medians({"backup": ours, "sqlite backup": sqlite_backup, "cp": cp}, args.runs)
        print(f"{args.n:,} documents, collection {size / 1e6:.0f} MB, medians of {args.runs}")
        print("| copy | seconds | MB/s | vs cp |")
        print("|---|---|---|---|")
        for name, sec in got.items():
            print(f"| {name} | {sec:.2f} | {size / 1e6 / sec:.0f} | {sec / got['cp']:.2f}x |")

        alone, _ = writer_rate(coll, args.seconds, args.batch, rng, None)
        beside, made = writer_rate(coll, args.seconds, args.batch, rng, ours)
        print(f"\nwriter, {args.batch} documents a commit, {args.seconds:g} s each:")
        print("| writer | commits/s | backups made |")
        print("|---|---|---|")
        print(f"| alone | {alone:.1f} | - |")
        print(f"| with backups back to back | {beside:.1f} ({beside / alone:.2f}x) | {made} |")
        coll.close()


if __name__ == "__main__":
    main()
