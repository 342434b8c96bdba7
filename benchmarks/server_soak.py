"""Soak a real `semsearch serve` for leaks: what a server that runs for weeks accumulates.

It starts `semsearch serve` (127.0.0.1, a free port, a home in a tmp folder with three small
collections) and drives it for ``--cycles`` cycles (or ``--minutes``, whichever ends
first), seeded: /v1/embeddings (float and base64, one text and a batch), searches in
every mode on every collection, adds and deletes over HTTP, errors on purpose (bad JSON,
unknown fields, unknown collection, over the limits, an unknown HTTP method), clients that
hang up mid-request, keep-alive and fresh connections; beside it the CLI changes the home:
`semsearch rm NAME --yes` and `semsearch add NAME` again, and a new collection made each
cycle (and removed the next). The server follows it (server/served.py). Every third cycle
ends with a quiet spell, as real traffic has: the server's threadpool ends idle threads
and starts new ones for the next burst.

After each cycle it samples the server from /proc/PID: RSS, open file descriptors (and
how many point to store.sqlite, -wal, -shm, index files, deleted files), threads; and the
number of series /metrics exposes. After the warm-up, a figure that keeps rising with the
cycles (every one of the last third's samples above every one of the first third's, past
a small allowance) is a leak; so is any deleted file still held seconds after a cycle's
end. Exit 1 on a leak.

    python benchmarks/server_soak.py --cycles 21 --seed 7    # about 5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

STABLE = ("alpha", "beta")  # served all along, written over HTTP
VICTIM = "gamma"            # removed and made again by the CLI every cycle
WORDS = ("volcano lava magma eruption bread flour oven yeast tide moon ocean wave violin bow string "
         "budget meeting finance report river bridge train station garden seed rain").split()
# what each figure may rise between the first and the last third before it is called a leak
ALLOWANCE = {"rss_mb": 64.0, "fds": 6, "threads": 4, "series": 36}  # series: two label sets of a histogram
SETTLE = 3.0  # seconds before a sample: the server lets go of a removed collection within 2 s
QUIET = 11.0  # seconds of no requests every third cycle: the threadpool ends threads idle 10 s


def sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def jsonl(path: Path, rng: random.Random, n: int, prefix: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{prefix}{i}", "text": sentence(rng, 12), "team": rng.choice("xyz")}) + "\n")
    return path


def cli(env: dict, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "semsearch", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode:
        raise RuntimeError(f"semsearch {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- what the server holds ----------------------------------------------------------------------
def sample(pid: int, home: Path) -> dict:
    """RSS, threads and open fds of ``pid`` from /proc, the fds sorted by what they point to."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status)[1])
    kinds = dict.fromkeys(("store", "wal", "shm", "index", "deleted", "socket", "other"), 0)
    fds, held = 0, set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        fds += 1
        if target.endswith(" (deleted)"):
            kinds["deleted"] += 1
            target = target[: -len(" (deleted)")]
            held.add(Path(target).parent.name)
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith(str(home)):
            name = Path(target).name
            kind = ("wal" if name.endswith("-wal") else "shm" if name.endswith("-shm")
                    else "store" if name.endswith(".sqlite") else "index" if "index" in name else "other")
            kinds[kind] += 1
        else:
            kinds["other"] += 1
    maps = sum(1 for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
               if line.endswith("(deleted)") and str(home) in line)  # a removed collection's -shm, mapped
    return {"rss_mb": rss, "threads": threads, "fds": fds, "deleted_maps": maps, "held": sorted(held), **kinds}


def series(client: httpx.Client) -> int:
    text = client.get("/metrics").text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# -- the clients -----------------------------------------------------------------------------
class Driver:
    """One cycle's worth of requests of every kind; counts what came back."""

    def __init__(self, base: str, port: int, rng: random.Random):
        self.base, self.port, self.rng = base, port, rng
        self.local = threading.local()
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.clients: list[httpx.Client] = []

    def client(self) -> httpx.Client:
        """This thread's keep-alive client."""
        c = getattr(self.local, "client", None)
        if c is None:
            c = self.local.client = httpx.Client(base_url=self.base, timeout=120)
            with self.lock:
                self.clients.append(c)
        return c

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def request(self, method: str, path: str, body=None, content: bytes | None = None, fresh=False,
                expect=(200,)) -> None:
        if fresh:  # a new connection for this request alone
            with httpx.Client(base_url=self.base, timeout=120, headers={"Connection": "close"}) as c:
                r = c.request(method, path, json=body, content=content)
        else:
            r = self.client().request(method, path, json=body, content=content)
        self.count(r.status_code)
        if r.status_code not in expect:
            raise AssertionError(f"{method} {path}: {r.status_code} (expected {expect}): {r.text[:200]}")

    def hang_up(self, kind: str, names: list[str]) -> None:
        """A client that leaves mid-request: inside its body, or while its answer is computed."""
        rng = self.rng
        body = json.dumps({"model": "all-MiniLM-L6-v2", "input": [sentence(rng, 60) for _ in range(48)]}).encode()
        path = "/v1/embeddings"
        if kind == "search":
            body = json.dumps({"query": sentence(rng), "mode": "hybrid", "k": 5}).encode()
            path = f"/v1/collections/{rng.choice(names)}/search"
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            if kind == "body":
                s.sendall(head + body[: len(body) // 2])
            else:
                s.sendall(head + body)
            time.sleep(rng.uniform(0, 0.05))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        self.count(-1)

    def one(self, names: list[str]) -> None:
        """One request drawn from the mix."""
        rng = self.rng
        fresh = rng.random() < 0.3
        pick = rng.random()
        name = rng.choice(names)
        if pick < 0.25:
            batch = rng.random() < 0.5
            texts = [sentence(rng) for _ in range(rng.randint(2, 24))] if batch else sentence(rng)
            self.request("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": texts,
                         "encoding_format": rng.choice(["float", "base64"])}, fresh=fresh)
        elif pick < 0.55:
            body = {"k": rng.randint(1, 8), "mode": rng.choice(["dense", "lexical", "hybrid"])}
            if rng.random() < 0.5:
                body["query"] = sentence(rng, 4)
            else:
                body["queries"] = [sentence(rng, 4) for _ in range(rng.randint(2, 5))]
            expect = (200, 404)  # 404: a collection the CLI removed meanwhile
            if rng.random() < 0.3:  # 400 too: one the CLI has made but not yet filled knows no 'team'
                body["where"], expect = {"team": rng.choice("xyz")}, (200, 400, 404)
            if rng.random() < 0.3:
                body["docs"] = True
            self.request("POST", f"/v1/collections/{name}/search", body, fresh=fresh, expect=expect)
        elif pick < 0.65:
            target = rng.choice(STABLE)
            docs = [{"id": f"h{i}", "text": sentence(rng, 20), "metadata": {"team": rng.choice("xyz")}}
                    for i in rng.sample(range(40), rng.randint(1, 4))]
            self.request("POST", f"/v1/collections/{target}/documents", {"documents": docs}, fresh=fresh)
        elif pick < 0.72:
            target = rng.choice(STABLE)
            self.request("DELETE", f"/v1/collections/{target}/documents/h{rng.randint(0, 40)}", fresh=fresh,
                         expect=(200, 404))
        elif pick < 0.78:
            self.request("GET", rng.choice(["/v1/collections", f"/v1/collections/{name}", "/readyz", "/v1/models",
                                            "/healthz"]), fresh=fresh, expect=(200, 404))
        elif pick < 0.9:
            self.error(rng.randint(0, 7), name, fresh)
        else:
            self.hang_up(rng.choice(["body", "embed", "search"]), names)

    def error(self, which: int, name: str, fresh: bool) -> None:
        rng = self.rng
        if which == 0:
            self.request("POST", "/v1/embeddings", content=b'{"input": [', fresh=fresh, expect=(400,))
        elif which == 1:
            self.request("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x", "bogus": 1},
                         fresh=fresh, expect=(400, 422))
        elif which == 2:
            self.request("POST", f"/v1/collections/nope{rng.randint(0, 999)}/search", {"query": "x"}, fresh=fresh,
                         expect=(404,))
        elif which == 3:
            self.request("POST", f"/v1/collections/{name}/search", {"query": "x", "k": 10**6}, fresh=fresh,
                         expect=(404, 413))
        elif which == 4:  # over --max-inputs
            self.request("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["a"] * 65},
                         fresh=fresh, expect=(413,))
        elif which == 5:  # over --max-body-bytes
            self.request("POST", "/v1/embeddings", content=b'{"input": "' + b"a" * 300_000 + b'"}',
                         fresh=fresh, expect=(413,))
        elif which == 6:  # a method no route has, spelt anew each time
            self.request(f"X{rng.randint(0, 10**6)}", "/v1/embeddings", fresh=fresh, expect=(400, 405))
        else:
            self.request("POST", f"/v1/collections/{name}/search", {"query": "x", "mode": "nope"}, fresh=fresh,
                         expect=(400, 404, 422))

    def close(self) -> None:
        for c in self.clients:
            c.close()


# -- the soak -------------------------------------------------------------------------------------
def start(env: dict, port: int, log: Path) -> subprocess.Popen:
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--port", str(port), "--max-inputs", "64",
                             "--max-body-bytes", str(256 * 1024)], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready in 180 s")


def verdict(rows: list[dict], warmup: int) -> list[str]:
    """The figures that kept rising after the warm-up, and deleted files still held."""
    after = rows[warmup:]
    third = max(1, len(after) // 3)
    first, last = after[:third], after[-third:]
    leaks = []
    for key, allowance in ALLOWANCE.items():
        if len(after) >= 3 and min(r[key] for r in last) > max(r[key] for r in first) + allowance:
            leaks.append(f"{key} rose {max(r[key] for r in first):g} -> {min(r[key] for r in last):g} "
                         f"(first third's max -> last third's min, after {warmup} warm-up cycles)")
    held = [r["cycle"] for r in rows if r["deleted"] or r["deleted_maps"]]
    if held:
        leaks.append(f"deleted files still held at the end of cycle(s) {held[:10]}"
                     f"{' ...' if len(held) > 10 else ''} (last: {rows[-1]['deleted']} fds, "
                     f"{rows[-1]['deleted_maps']} mappings)")
    return leaks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=21)
    p.add_argument("--minutes", type=float, default=8.0, help="stop after this long even if cycles are left")
    p.add_argument("--requests", type=int, default=80, help="HTTP requests per cycle")
    p.add_argument("--clients", type=int, default=6, help="threads sending them")
    p.add_argument("--warmup", type=int, default=4, help="cycles left out of the verdict")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the tmp folder (server log, home)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="semsearch-soak-"))
    home = tmp / "home"
    env = dict(os.environ, SEMSEARCH_HOME=str(home))
    env.pop("SEMSEARCH_API_KEY", None)
    for name in (*STABLE, VICTIM):
        cli(env, "add", name, "--jsonl", str(jsonl(tmp / f"{name}.jsonl", rng, 30, name[0])))
    port = free_port()
    proc = start(env, port, tmp / "server.log")
    base = f"http://127.0.0.1:{port}"
    rows, ended, failure = [], time.monotonic() + a.minutes * 60, None
    print(f"server pid {proc.pid} on {base}, home {home}", flush=True)
    header = f"{'cycle':>5} {'RSS MB':>7} {'fds':>4} {'deleted':>7} {'sqlite/wal/shm/index':>20} {'threads':>7} " \
             f"{'series':>6} {'requests':>8}"
    print(header, flush=True)
    try:
        with httpx.Client(base_url=base, timeout=60) as probe:
            for cycle in range(a.cycles):
                if time.monotonic() > ended:
                    break
                driver = Driver(base, port, random.Random(rng.random()))
                newcomer, previous = f"new{cycle}", f"new{cycle - 1}"

                def change_home():  # the CLI beside the server
                    cli(env, "rm", VICTIM, "--yes")
                    cli(env, "add", VICTIM, "--jsonl", str(tmp / f"{VICTIM}.jsonl"))
                    cli(env, "add", newcomer, "--jsonl", str(tmp / f"{STABLE[0]}.jsonl"))
                    if cycle:
                        cli(env, "rm", previous, "--yes")

                names = [*STABLE, VICTIM] + ([previous] if cycle else [])
                with ThreadPoolExecutor(a.clients + 1) as pool:
                    home_job = pool.submit(change_home)
                    jobs = [pool.submit(driver.one, names) for _ in range(a.requests)]
                    for job in [home_job, *jobs]:
                        job.result()
                for name in (*STABLE, VICTIM, newcomer):  # every collection there now answers
                    driver.request("POST", f"/v1/collections/{name}/search", {"query": "lava", "k": 3})
                driver.close()
                time.sleep(QUIET if cycle % 3 == 2 else SETTLE)
                row = {"cycle": cycle, **sample(proc.pid, home), "series": series(probe),
                       "requests": sum(driver.statuses.values())}
                rows.append(row)
                print(f"{cycle:>5} {row['rss_mb']:>7.1f} {row['fds']:>4} {row['deleted']:>7} "
                      f"{row['store']:>5}/{row['wal']}/{row['shm']}/{row['index']:<8} {row['threads']:>7} "
                      f"{row['series']:>6} {row['requests']:>8}  {' '.join(row['held'])}", flush=True)
    except Exception as exc:  # a request answered wrongly, or the server died
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    leaks = verdict(rows, min(a.warmup, max(0, len(rows) - 3))) if rows else []
    if failure:
        print(f"FAILED: {failure} (server log: {tmp / 'server.log'})")
    for leak in leaks:
        print(f"LEAK: {leak}")
    if not failure and not leaks:
        print(f"no leak: {len(rows)} cycles, {sum(r['requests'] for r in rows):,} requests; figures flat after "
              f"{a.warmup} warm-up cycles")
    if a.keep or failure:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failure or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
