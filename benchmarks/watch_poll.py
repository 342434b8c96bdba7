"""What one idle poll of `index --watch` costs: loaders.file_stamps (the index walk, then a
stat a file) over a tree of small files, against a plain os.walk + os.stat of the same tree
in the same run (the least any poll by stat could do). Medians of --repeats, interleaved, warm cache.

    nice -n 19 .venv/bin/python benchmarks/watch_poll.py --files 1000 10000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from semsearch.loaders import file_stamps  # noqa: E402

PER_FOLDER = 100  # files a folder, as notes are kept: a few levels of folders


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        folder = root / f"d{i // PER_FOLDER // 10:02d}" / f"e{i // PER_FOLDER % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note{i:05d}.md").write_text(f"note {i}: a line of text\n")


def plain(root: Path) -> list:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            found.append((name, st.st_size, st.st_mtime_ns))
    return found


def medians_ms(fns, repeats: int) -> list[float]:
    """Each function's median time, the runs interleaved (a busy machine weighs on all alike)."""
    for fn in fns:
        fn()  # warm the cache
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, taken in zip(fns, times):
            start = time.perf_counter()
            fn()
            taken.append((time.perf_counter() - start) * 1000)
    return [statistics.median(taken) for taken in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print("| files | idle poll (file_stamps), ms | os.walk + os.stat, ms | ratio |")
    print("|---:|---:|---:|---:|")
    for n in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_tree(root, n)
            assert len(file_stamps([root])) == len(plain(root)) == n
            poll, base = medians_ms([lambda: file_stamps([root]), lambda: plain(root)], args.repeats)
            print(f"| {n:,} | {poll:.1f} | {base:.1f} | {poll / base:.2f} |")


if __name__ == "__main__":
    main()
