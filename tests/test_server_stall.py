"""A connection whose request head stalls is closed (`serve --header-timeout`); uvicorn
held it for ever, and max-connections of them made every real client's request a 503
(slowloris). Real `semsearch serve` processes and raw sockets on loopback; every wait is
bounded, and what is asserted is the close, not its timing."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from test_serve_cli import DEADLINE, running  # a real server on a free port

HEADER_TIMEOUT = 2  # the servers' --header-timeout
WAIT = 30  # seconds a stalled connection may stay open: a bound, far past HEADER_TIMEOUT
HALF = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # a head without its blank line
GET = HALF + b"\r\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory, model_folder):
    env = dict(os.environ, SEMSEARCH_HOME=str(tmp_path_factory.mktemp("indexes")))
    env.pop("SEMSEARCH_API_KEY", None)
    return env


@pytest.fixture(scope="module")
def port(env):
    with running(env, "--header-timeout", HEADER_TIMEOUT) as port:
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """What the server sends before it closes ``sock``; fails if it is still open after WAIT s."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the connection is still open after {WAIT} s (sent back: {data[:200]!r})")
    return data


def response(reader) -> tuple[bytes, bytes]:
    """(status line, body) of the next response read from ``sock.makefile('rb')``."""
    status = reader.readline()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def served(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=WAIT).status_code == 200


def test_a_connection_that_sends_nothing_is_closed_while_others_are_served(port):
    """Closed without an answer: it asked nothing."""
    with connect(port) as stalled:
        assert served(port)
        assert until_closed(stalled) == b""


@pytest.mark.parametrize("sent", [HALF, b"GE"], ids=["half a head", "two bytes"])
def test_a_head_that_stalls_gets_408_and_is_closed_while_others_are_served(port, sent):
    with connect(port) as stalled:
        stalled.sendall(sent)
        assert served(port)
        data = until_closed(stalled)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"did not arrive within 2 s" in data and b"connection: close" in data


def test_a_keep_alive_connection_stalling_in_its_second_head_gets_408(port):
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(GET)
        assert response(reader)[0].startswith(b"HTTP/1.1 200 ")
        sock.sendall(HALF)
        data = reader.read()  # to the close (the socket's timeout bounds it)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]


def test_a_keep_alive_connection_idle_past_the_header_timeout_is_still_served(port):
    """Time between requests is keep-alive's (30 s), not the head's: the timer starts at
    the next request's first byte."""
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(GET)
        assert response(reader)[0].startswith(b"HTTP/1.1 200 ")
        time.sleep(HEADER_TIMEOUT + 1)
        sock.sendall(GET)
        assert response(reader)[0].startswith(b"HTTP/1.1 200 ")


def test_pipelined_requests_are_all_answered(port):
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(GET * 3 + GET.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        statuses = [response(reader)[0] for _ in range(4)]
        assert until_closed(sock) == b""  # the fourth asked to close
    assert all(s.startswith(b"HTTP/1.1 200 ") for s in statuses), statuses


def test_a_head_trickled_in_within_the_timeout_is_answered(port):
    with connect(port) as sock, sock.makefile("rb") as reader:
        for part in (b"GET /heal", b"thz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(HEADER_TIMEOUT / 10)
        assert response(reader)[0].startswith(b"HTTP/1.1 200 ")


def test_a_large_head_in_pieces_is_answered(port):
    head = HALF + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 150) for i in range(80)) + b"\r\n"  # ~14 kB
    with connect(port) as sock, sock.makefile("rb") as reader:
        for start in range(0, len(head), 4096):
            sock.sendall(head[start:start + 4096])
            time.sleep(0.05)
        assert response(reader)[0].startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("value", ["0", "nan", "inf", "1e9"])
def test_a_header_timeout_out_of_range_is_one_line_error(env, value):
    done = subprocess.run([sys.executable, "-m", "semsearch", "serve", "--header-timeout", value, "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=DEADLINE)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: header-timeout must be"), lines


async def hello(scope, receive, send):
    """The smallest ASGI app: the protocol under test is uvicorn's, with HeaderTimeout."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def base_protocols():
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return [HttpToolsProtocol, H11Protocol]


@pytest.mark.parametrize("base", base_protocols(), ids=lambda base: base.__name__)
def test_either_uvicorn_protocol_closes_stalled_heads_and_keeps_keep_alive(base):
    """httptools is the serve extra's; without it uvicorn speaks h11: both are bounded.
    A keep-alive of 1 s here shows the idle close is still uvicorn's."""
    import uvicorn

    from semsearch.server.protocol import http_protocol

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(hello, http=http_protocol(1, base), ws="none", lifespan="off",
                                           timeout_keep_alive=1, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        with connect(port) as nothing, connect(port) as half, connect(port) as idle, idle.makefile("rb") as reader:
            half.sendall(HALF)
            idle.sendall(GET)
            assert response(reader) == (b"HTTP/1.1 200 OK\r\n", b"ok")
            assert until_closed(nothing) == b""
            assert until_closed(half).startswith(b"HTTP/1.1 408 ")
            assert reader.read() == b""  # keep-alive's close
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        listener.close()
