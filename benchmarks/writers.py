"""Several writers: what another writer gets while a long `semsearch index` runs.

One process runs `semsearch index` over a folder of real abstracts; once it has committed
its first documents, a second process adds one short document at a time through the
Python API (as a server's POST would) and records, for each, whether it was written and
how long it waited. `--baseline DIR` runs an earlier ``semsearch/`` (a folder holding
that package) side by side, on the same folder, in the same run.

    python benchmarks/writers.py                                # this checkout
    python benchmarks/writers.py --baseline /tmp/before --json /tmp/writers.json
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

ADDER = """
import json, sys, time
from semsearch.collection import Collection
from semsearch.errors import CollectionBusy
coll = Collection.open(sys.argv[1])
coll.embedder  # the model loads before the clock starts
out = []
for i in range(int(sys.argv[2])):
    start = time.perf_counter()
    try:
        coll.add_texts([f"note {i}, written while another process indexes"], ids=[f"w{i}"])
        ok = True
    except CollectionBusy:
        ok = False
    out.append([ok, time.perf_counter() - start])
    time.sleep(float(sys.argv[3]))
print(json.dumps(out))
"""


def make_folder(folder: Path, docs: int) -> Path:
    """``docs`` NPL abstracts, one .txt file each."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(DATA / "npl" / "corpus.jsonl") as f:
        for i, line in zip(range(docs), f):
            (folder / f"{i:05d}.txt").write_text(json.loads(line)["text"])
    return folder


def committed(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0


def run(name: str, package_dir: Path, folder: Path, adds: int, gap: float) -> dict:
    """One implementation: index ``folder`` and add ``adds`` documents meanwhile."""
    home = Path(tempfile.mkdtemp(prefix=f"writers-{name}-"))
    env = {**os.environ, "SEMSEARCH_HOME": str(home), "PYTHONPATH": str(package_dir)}
    cli = [sys.executable, "-m", "semsearch"]
    # `python -m` imports from the working folder first: run inside the package's own folder
    subprocess.run(cli + ["add", "c", "--text", "seed", "--id", "seed"], env=env, cwd=package_dir,
                   check=True, capture_output=True)
    started = time.perf_counter()
    index = subprocess.Popen(cli + ["index", str(folder), "--name", "c"], env=env, cwd=package_dir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while committed(home / "c" / "store.sqlite") < 2 and index.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    adder = subprocess.run([sys.executable, "-c", ADDER, str(home / "c"), str(adds), str(gap)], env=env,
                           cwd=package_dir, capture_output=True, text=True, timeout=1200)
    index_running_after_adds = index.poll() is None
    index.wait(1200)
    index_seconds = time.perf_counter() - started
    results = json.loads(adder.stdout.strip().splitlines()[-1]) if adder.returncode == 0 else []
    written = [s for ok, s in results if ok]
    return {"name": name, "adds": adds, "written": len(written),
            "refused": sum(1 for ok, _ in results if not ok),
            "median_wait_s": round(statistics.median(s for _, s in results), 3) if results else None,
            "median_written_wait_s": round(statistics.median(written), 3) if written else None,
            "index_exit": index.returncode, "index_seconds": round(index_seconds, 1),
            "index_ran_through_the_adds": index_running_after_adds,
            "documents": committed(home / "c" / "store.sqlite")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000, help="NPL abstracts in the indexed folder")
    ap.add_argument("--adds", type=int, default=5, help="documents the second writer adds, one at a time")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between its adds")
    ap.add_argument("--baseline", type=Path, help="a folder holding an earlier semsearch/ package")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    folder = make_folder(Path(tempfile.mkdtemp(prefix="writers-docs-")), args.docs)
    impls = [("semsearch", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    rows = [run(name, path, folder, args.adds, args.gap) for name, path in impls]
    print("| writer | adds written / refused | median wait of an add (s) | of a written one (s) "
          "| index s | index still running after the adds | documents |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['written']} / {r['refused']} | {r['median_wait_s']} | "
              f"{r['median_written_wait_s']} | {r['index_seconds']} (exit {r['index_exit']}) | "
              f"{r['index_ran_through_the_adds']} | {r['documents']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
