"""E-mail load speed: an mbox of N generated messages against the same texts as one .jsonl,
read by `loaders.load_file` to the end (each document's text read; no model, no store).
Medians of --runs, the two files taking turns.

    nice -n 19 .venv/bin/python benchmarks/mail_load.py --n 20000
"""
from __future__ import annotations

import argparse
import email.message
import json
import mailbox
import random
import statistics
import tempfile
import time
from pathlib import Path

from semsearch.loaders import Document, load_file

WORDS = ("the a budget meeting garden rocket orbit bread oven cats purr report quarter revenue team plan "
         "launch water sun").split()


def write(folder: Path, n: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    bodies = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 160))) + "." for _ in range(n)]
    box_path, jsonl_path = folder / "big.mbox", folder / "big.jsonl"
    box = mailbox.mbox(box_path)
    for i, body in enumerate(bodies):
        m = email.message.EmailMessage()
        m["From"] = f"User {i % 50} <user{i % 50}@example.com>"
        m["To"] = "team@example.com, Boss <boss@example.org>"
        m["Subject"] = f"Report {i}"
        m["Date"] = f"Mon, {1 + i % 28:02d} Apr 2024 10:{i % 60:02d}:00 +0200"
        m["Message-ID"] = f"<{i}@bench.example>"
        m.set_content(body)
        box.add(m)
    box.close()
    with open(jsonl_path, "w") as f:
        for i, body in enumerate(bodies):
            f.write(json.dumps({"id": f"{i}@bench.example", "text": f"Report {i}\n{body}"}) + "\n")
    return box_path, jsonl_path


def load(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    n = sum(1 for d in load_file(str(path)) if isinstance(d, Document) and "".join(d.segments()))
    return time.perf_counter() - started, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mail-") as tmp:
        paths = write(Path(tmp), args.n)
        times: dict[Path, list[float]] = {p: [] for p in paths}
        counts = {}
        for _ in range(args.runs):
            for p in paths:
                seconds, counts[p] = load(p)
                times[p].append(seconds)
        print("| file | size | documents | median (s) | documents/s |")
        print("|---|---:|---:|---:|---:|")
        for p in paths:
            med = statistics.median(times[p])
            print(f"| {p.name} | {p.stat().st_size / 1e6:.1f} MB | {counts[p]:,} | {med:.2f} | {counts[p] / med:,.0f} |")


if __name__ == "__main__":
    main()
