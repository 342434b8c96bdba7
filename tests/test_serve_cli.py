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
from contextlib import contextmanager

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


@contextmanager
def running(env, *args):
    """A server on a free port (--port 0): yields the port it printed; SIGTERM after."""
    proc = subprocess.Popen([sys.executable, "-m", "semsearch", "serve", "--port", "0", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(DEADLINE, proc.kill)  # readline() must not wait for ever
    watchdog.start()
    try:
        first = proc.stderr.readline()  # the "serving ..." line, once the socket listens
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", first)
        assert found and int(found[1]) != 0, first
        watchdog.cancel()
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # uvicorn's log must not fill the pipe
        yield int(found[1])
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)


def test_port_zero_serves_on_the_free_port_it_prints(env):
    """It printed http://127.0.0.1:0, a port no client can reach."""
    with running(env) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE).json() == {"status": "ok"}


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(DEADLINE)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


HEADERS = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 100\r\n\r\n")


@pytest.mark.parametrize("sent", [b"", b'{"model": "all-MiniLM-L6-v2", "in'], ids=["no body", "part of it"])
def test_a_body_that_stalls_gets_408_and_the_connection_is_closed(env, sent):
    """A client that sent its headers and then stalled held its connection and its request
    for ever: uvicorn has no timeout for reading a body (slowloris)."""
    with running(env, "--body-timeout", 1) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(HEADERS + sent)
        data = answer(s)  # the server closes it: recv returns b"" (else: a timeout error)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"did not arrive within 1 s" in data


def test_connections_past_the_limit_get_503(env):
    with running(env, "--max-connections", 2) as port:
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            with socket.create_connection(("127.0.0.1", port)) as third:
                third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert answer(third).startswith(b"HTTP/1.1 503 "), "a third connection was served"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE).status_code == 200  # once they left


@pytest.mark.parametrize("value", ["0", "nan", "inf", "1e9"])
def test_a_body_timeout_out_of_range_is_one_line_error(env, value):
    line = one_error_line(serve(env, "--body-timeout", value, "--port", 0), code=2)
    assert "body-timeout must be" in line


def cli(env, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "semsearch", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return done


def test_serve_follows_what_the_cli_makes_and_removes_beside_it(env):
    """Started without names, it never served a collection made after it started, and one
    `rm`ed and made anew stayed a 404 'was removed' until a restart."""
    cli(env, "add", "notes", "--text", "Volcanoes erupt lava and ash.", "--id", "old")
    with running(env) as port:
        url = f"http://127.0.0.1:{port}/v1/collections"

        def search(name):
            return httpx.post(f"{url}/{name}/search", json={"query": "what to bake", "k": 3}, timeout=DEADLINE)

        cli(env, "add", "recipes", "--text", "Knead the dough and bake bread.", "--id", "bread")
        assert [h["id"] for h in search("recipes").json()["data"]] == ["bread"]
        cli(env, "rm", "notes", "--yes")
        assert "was removed" in search("notes").json()["error"]["message"]
        cli(env, "add", "notes", "--text", "Bake the cake for an hour.", "--id", "cake")
        assert [h["id"] for h in search("notes").json()["data"]] == ["cake"]
        assert [c["name"] for c in httpx.get(url, timeout=DEADLINE).json()["data"]] == ["notes", "recipes"]
