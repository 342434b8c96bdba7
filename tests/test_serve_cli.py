"""`semsearch serve` as a user starts it: where it may listen, said in one line before the
model loads; the port it prints is the one it serves on. Real processes, loopback only."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest

DEADLINE = 120  # seconds any wait in this module may take


@pytest.fixture
def env(tmp_path, model_folder):
    env = dict(os.environ, SEMSEARCH_HOME=str(tmp_path / "indexes"))  # SEMSEARCH_CACHE: conftest's model
    env.pop("SEMSEARCH_API_KEY", None)
    return env


@pytest.fixture
def taken_port():
    """A port something else already listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def serve(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "semsearch", "serve", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE)


def one_error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: ") and proc.stdout == "", proc.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_error(env, taken_port):
    """It loaded the model, printed uvicorn's log and exited 3 (the not-found code)."""
    line = one_error_line(serve(env, "--port", taken_port), code=75)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in line and "--port" in line


def test_a_port_in_use_is_found_before_the_model_loads(env, taken_port, tmp_path):
    """A missing model would be the first error if the model were loaded first."""
    line = one_error_line(serve(env, "--port", taken_port, "--model", tmp_path / "no-model"), code=75)
    assert "already in use" in line


def test_an_address_not_on_this_machine_is_one_line_error(env):
    line = one_error_line(serve(env, "--host", "192.0.2.1", "--insecure", "--port", 0), code=2)  # TEST-NET-1
    assert "192.0.2.1" in line and "not an address of this machine" in line


@pytest.mark.parametrize("wait", ["inf", "nan", "-1", "1e12"])
def test_a_max_wait_that_no_thread_can_wait_is_one_line_error(env, wait):
    """inf (or 1e12) started a server whose batcher threads died at their first wait for
    company: every embedding request from then on hung, never answered; nan meant 0."""
    line = one_error_line(serve(env, "--max-wait-ms", wait, "--port", 0), code=2)
    assert "max-wait-ms must be from 0 to 10,000" in line


def test_port_zero_serves_on_the_free_port_it_prints(env):
    """It printed http://127.0.0.1:0, a port no client can reach."""
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--port", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(DEADLINE, proc.kill)  # readline() must not wait for ever
    watchdog.start()
    try:
        first = proc.stderr.readline()  # the "serving ..." line, once the socket listens
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", first)
        assert found and int(found[1]) != 0, first
        assert httpx.get(f"http://127.0.0.1:{found[1]}/healthz", timeout=DEADLINE).json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
        watchdog.cancel()
