"""Stalled connections (slowloris) against `semsearch serve`: is a real client answered?

Opens ``--stalled`` connections (more than the server's --max-connections, 512) that send
nothing or half a request head and then nothing, then has a real client ask GET /healthz
on a new connection every ``--every`` seconds for ``--seconds``; prints how many answers
were 200, 503 or errors, when the first 200 came (seconds after the stalls opened) and the
200s' latency. ``--reconnect``: the attacker reopens each connection the server closes
(or refuses: --max-client-connections) at once. The attacker connects from 127.0.0.1; the
real client from ``--client-source`` (127.0.0.2: another client, as the server sees it;
all of 127.0.0.0/8 is loopback). ``--baseline DIR``: run the server from an earlier
semsearch/ (git archive) instead.

    python benchmarks/stall.py --mode half                       # this checkout, --header-timeout 10
    python benchmarks/stall.py --mode half --baseline /tmp/before
    python benchmarks/stall.py --mode half --reconnect --client-source 127.0.0.2
"""
from __future__ import annotations

import argparse
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"nothing": b"", "half": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"}


def start(args, home: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "semsearch", "serve", "--port", "0", "--home", str(home)]
    if args.baseline is None:
        cmd += ["--header-timeout", str(args.header_timeout)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(args.baseline or ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            cwd=args.baseline or ROOT)  # `python -m` imports from cwd first
    first = proc.stderr.readline()  # "serving ... on http://127.0.0.1:PORT ..."
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # the log must not fill the pipe
    try:
        return proc, int(first.split("http://127.0.0.1:")[1].split()[0])
    except (IndexError, ValueError):
        proc.kill()
        raise SystemExit(f"the server did not start: {first}")


class Attacker(threading.Thread):
    """``n`` connections from 127.0.0.1 that send ``payload`` and then nothing; with
    ``reconnect``, one the server closes is opened again at once."""

    def __init__(self, port: int, n: int, payload: bytes, reconnect: bool):
        super().__init__(daemon=True)
        self.port, self.payload, self.reconnect = port, payload, reconnect
        self.selector = selectors.DefaultSelector()
        self.closed_by_server = self.refused = self.to_open = 0
        self.stop = threading.Event()
        for _ in range(n):
            self.open()

    def open(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port))
        try:
            sock.sendall(self.payload)
        except OSError:  # refused before the payload went out
            self.closed(sock)
        else:
            self.selector.register(sock, selectors.EVENT_READ)

    def closed(self, sock: socket.socket) -> None:
        sock.close()
        self.closed_by_server += 1
        self.to_open += self.reconnect

    def run(self) -> None:
        while not self.stop.is_set():
            for _ in range(self.to_open):
                self.to_open -= 1
                self.open()
            for key, _ in self.selector.select(0 if self.to_open else 0.1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.refused += data.startswith(b"HTTP/1.1 503 ")
                    continue  # a 408 or 503 before the close
                self.selector.unregister(key.fileobj)
                self.closed(key.fileobj)

    def close(self) -> None:
        self.stop.set()
        self.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stalled", type=int, default=600)
    ap.add_argument("--mode", choices=sorted(PAYLOAD), default="half")
    ap.add_argument("--reconnect", action="store_true")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=0.25)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--client-source", default="127.0.0.1", help="the real client's source address")
    ap.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the server inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.stalled + 1024)), hard))

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "semsearch-stall-home"
    home.mkdir(exist_ok=True)
    proc, port = start(args, home)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        attacker = Attacker(port, args.stalled, PAYLOAD[args.mode], args.reconnect)
        began = time.monotonic()
        attacker.start()
        answers: list[tuple[float, str, float]] = []  # (since the stalls, status, latency)
        client = httpx.Client(transport=httpx.HTTPTransport(local_address=args.client_source),
                              limits=httpx.Limits(max_keepalive_connections=0), timeout=5)  # a new connection each
        while (now := time.monotonic()) - began < args.seconds:
            try:
                status = str(client.get(f"http://127.0.0.1:{port}/healthz").status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            answers.append((now - began, status, time.monotonic() - now))
            time.sleep(max(0.0, args.every - (time.monotonic() - now)))
        attacker.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    counts = {s: sum(a[1] == s for a in answers) for s in dict.fromkeys(a[1] for a in answers)}
    ok = [a for a in answers if a[1] == "200"]
    latency = sorted(a[2] * 1e3 for a in ok)
    server = f"baseline {args.baseline}" if args.baseline else f"this checkout, --header-timeout {args.header_timeout:g}"
    print(f"{server}: {args.stalled} stalled ({args.mode}{', reconnecting' if args.reconnect else ''}), "
          f"real client from {args.client_source}: {len(answers)} requests in {args.seconds:g} s: {counts}; "
          f"closed by the server: {attacker.closed_by_server} ({attacker.refused} with 503); "
          f"first 200 at {f'{ok[0][0]:.1f} s' if ok else 'never'}; "
          + (f"200s' latency p50 {statistics.median(latency):.1f} ms, max {latency[-1]:.1f} ms" if ok else ""))


if __name__ == "__main__":
    main()
