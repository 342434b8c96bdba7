"""Searches while documents are added: what an add costs the searches of a `semsearch serve`.

A real server on loopback over a scratch home (``--home``; a Cranfield collection to search,
built once, and one ``inbox`` collection a server to add to). Each phase runs for
``--seconds``: ``--readers`` clients post hybrid searches (k=10, Cranfield queries) back to
back, alone (the reference) and then with ``--writers`` clients posting ``--docs-per-add``
Cranfield abstracts a request (their own ids, so a second pass replaces rather than grows);
each phase at most ``--max-adds`` adds. Reported per phase: search p50/p99 ms, searches/s,
added docs/s, the load average before it. With ``--other NAME=DIR`` (a folder holding another
``semsearch/``, e.g. ``git archive HEAD semsearch | tar -x -C DIR``; repeatable) that server runs
too, all of them taking turns phase by phase in every round (in reverse order every other
round); figures are medians of ``--repeats`` rounds.

    python benchmarks/serve_writes.py --other before=/tmp/before
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import Connection, encode_request, free_port, read_jsonl, start, stop  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build_home(data: Path, home: Path, servers: list[str]) -> None:
    """The Cranfield collection (built once, kept) and an empty inbox per server (made anew)."""
    from semsearch.collection import Collection, delete_collection

    if not (home / "cranfield" / "store.sqlite").is_file():
        docs = [d for d in read_jsonl(data / "corpus.jsonl") if d["text"].strip()]
        with Collection.create(home / "cranfield") as coll:
            coll.add_texts([d["text"] for d in docs], ids=[d["_id"] for d in docs])
    for name in servers:
        if (home / f"inbox-{name}").exists():
            delete_collection(home / f"inbox-{name}")
        Collection.create(home / f"inbox-{name}").close()


async def phase(url: str, inbox: str, queries: list[str], abstracts: list[tuple[str, str]], readers: int,
                writers: int, per_add: int, seconds: float, max_adds: int, first_add: int) -> dict:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    search = [encode_request(url, "/v1/collections/cranfield/search", {"query": q, "k": 10}) for q in queries]
    latencies, add_seconds, errors = [], [], {}
    counts = {"searches": 0, "adds": 0}
    deadline = time.perf_counter() + seconds

    async def client(kind: str, n: int):
        conn = Connection(host, int(port))
        i = n
        try:
            while time.perf_counter() < deadline:
                if kind == "add":
                    if counts["adds"] >= max_adds:
                        return
                    counts["adds"] += 1
                    start_at = (first_add + counts["adds"]) * per_add
                    docs = [abstracts[(start_at + j) % len(abstracts)] for j in range(per_add)]
                    request = encode_request(url, f"/v1/collections/{inbox}/documents",
                                             {"documents": [{"id": key, "text": text} for key, text in docs]})
                else:
                    request = search[i % len(search)]
                    i += readers
                started = time.perf_counter()
                status = await asyncio.wait_for(conn.post(request), 300)
                took = time.perf_counter() - started
                if status != 200:
                    errors[f"{kind} {status}"] = errors.get(f"{kind} {status}", 0) + 1
                elif kind == "add":
                    add_seconds.append(took)
                elif time.perf_counter() <= deadline:  # a search the writers' phase overlapped
                    latencies.append(took)
        finally:
            conn.close()

    load = os.getloadavg()[0]
    started = time.perf_counter()
    await asyncio.gather(*[client("search", n) for n in range(readers)], *[client("add", n) for n in range(writers)])
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "searches_per_s": len(latencies) / seconds, "docs_per_s": len(add_seconds) * per_add / wall,
            "add_p50_s": statistics.median(add_seconds) if add_seconds else float("nan"),
            "errors": errors, "load": load, "adds": counts["adds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    ap.add_argument("--home", type=Path, default=ROOT / "build" / "bench-serve-writes",
                    help="scratch SEMSEARCH_HOME (the Cranfield collection is built once and kept)")
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--docs-per-add", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=15.0, help="per phase")
    ap.add_argument("--max-adds", type=int, default=200, help="per phase")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--other", action="append", default=[], metavar="NAME=DIR",
                    help="a folder holding another semsearch/: served too, in turns")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    queries = [q["text"] for q in read_jsonl(args.data / "queries.jsonl")]
    abstracts = [(d["_id"], d["text"]) for d in read_jsonl(args.data / "corpus.jsonl") if d["text"].strip()]
    others = dict(o.split("=", 1) for o in args.other)
    names = ["current", *others]
    args.home.mkdir(parents=True, exist_ok=True)
    build_home(args.data, args.home, names)
    os.environ["SEMSEARCH_HOME"] = str(args.home.resolve())
    procs, urls = {}, {}
    try:
        for name in names:
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            cwd = others.get(name)  # `python -m` imports from cwd first
            procs[name] = start([sys.executable, "-m", "semsearch.server", "--port", str(port)], urls[name],
                                args.home / f"{name}.log", "/healthz", cwd)
        runs: dict[tuple[str, int], list[dict]] = {}
        adds = dict.fromkeys(names, 0)
        for round_ in range(args.repeats):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                for writers in (0, args.writers):
                    run = asyncio.run(phase(urls[name], f"inbox-{name}", queries, abstracts, args.readers, writers,
                                            args.docs_per_add, args.seconds, args.max_adds, adds[name]))
                    adds[name] += run["adds"]
                    runs.setdefault((name, writers), []).append(run)
                    print(json.dumps({"server": name, "round": round_, "writers": writers, **run}), flush=True)
    finally:
        for proc in procs.values():
            stop(proc)
    rows = []
    for (name, writers), rs in runs.items():
        row = {"server": name, "readers": args.readers, "writers": writers}
        row.update({k: statistics.median(r[k] for r in rs)
                    for k in ("p50", "p99", "searches_per_s", "docs_per_s", "add_p50_s", "load")})
        row["errors"] = sum(sum(r["errors"].values()) for r in rs)
        rows.append(row)
    print("| server | readers | writers | search p50 ms | search p99 ms | searches/s | added docs/s "
          "| add p50 s | errors | load |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['server']} | {r['readers']} | {r['writers']} | {r['p50']:.0f} | {r['p99']:.0f} "
              f"| {r['searches_per_s']:.1f} | {r['docs_per_s']:.1f} | {r['add_p50_s']:.2f} | {r['errors']} "
              f"| {r['load']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
