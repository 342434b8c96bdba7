"""What a long-running `semsearch serve` holds: the files of collections removed under it
(SQLite connections of ended threads: tests/test_threads.py). A real server process, its
open files read from /proc/PID/fd. benchmarks/server_soak.py is the long version."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

DEADLINE = 120  # seconds any wait for the server may take
LET_GO = 20  # seconds a removed collection's files may stay open (the server checks every 2 s)

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/PID/fd")


@pytest.fixture
def env(tmp_path, model_folder):
    env = dict(os.environ, SEMSEARCH_HOME=str(tmp_path / "indexes"))  # SEMSEARCH_CACHE: conftest's model
    env.pop("SEMSEARCH_API_KEY", None)
    return env


def cli(env, *args) -> None:
    subprocess.run([sys.executable, "-m", "semsearch", *args], env=env, check=True, capture_output=True,
                   timeout=DEADLINE)


@contextmanager
def server(env):
    """(process, base URL) of `semsearch serve` over the home, on a free port; SIGTERM after."""
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--port", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(DEADLINE, proc.kill)
    watchdog.start()
    try:
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert found, "no 'serving ...' line"
        yield proc, f"http://127.0.0.1:{found[1]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
        watchdog.cancel()


def open_files(pid: int, folder: Path) -> list[str]:
    """What the process's open descriptors point to inside ``folder``."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            targets.append(target)
    return targets


def search(base: str, name: str, mode: str = "hybrid") -> httpx.Response:
    return httpx.post(f"{base}/v1/collections/{name}/search", json={"query": "lava", "mode": mode},
                      timeout=DEADLINE)


def test_a_removed_collection_is_let_go_though_no_request_asks_for_it_again(env, tmp_path):
    """`semsearch rm doomed` under the server: its store, -wal and -shm stayed open (deleted
    files: their disk space in use) until a request asked for `doomed` again, that is for
    good for a name never used again; a cron job's daily collections piled up."""
    home = tmp_path / "indexes"
    cli(env, "add", "keep", "--text", "a note about lava", "--id", "k")
    cli(env, "add", "doomed", "--text", "magma and lava", "--id", "d")
    with server(env) as (proc, base):
        assert search(base, "doomed").status_code == 200
        assert open_files(proc.pid, home / "doomed"), "the search opened nothing?"
        cli(env, "rm", "doomed", "--yes")
        held, waited = None, time.monotonic() + LET_GO
        while held != [] and time.monotonic() < waited:
            assert search(base, "keep").status_code == 200  # the server is in use, just not for doomed
            held = open_files(proc.pid, home / "doomed")
            time.sleep(0.5)
        assert held == [], f"still open {LET_GO} s after the rm: {held}"
        gone = search(base, "doomed")
        assert gone.status_code == 404 and "was removed while it was open" in gone.json()["error"]["message"]
        cli(env, "add", "doomed", "--text", "bread and flour", "--id", "n")  # made anew: served anew
        assert [h["id"] for h in search(base, "doomed").json()["data"]] == ["n"]
