"""A connection whose request head stalls is closed (`serve --header-timeout`); uvicorn
held it for ever, and max-connections of them made every real client's request a 503
(slowloris). One client address holds at most --max-client-connections: an attacker who
reopens each closed socket at once no longer holds them all. Real `semsearch serve`
processes and raw sockets on loopback (all of 127.0.0.0/8: a second client binds
127.0.0.2); every wait is bounded, and what is asserted is the close, not its timing."""
from __future__ import annotations

import os
import re
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


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))


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


def closed_early(port: int, reason: str) -> float:
    """The server's count of connections it closed before a request, for ``reason`` (/metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=WAIT).text
    found = re.search(rf'^semsearch_connections_closed_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def test_a_connection_that_sends_nothing_is_closed_while_others_are_served(port):
    """Closed without an answer: it asked nothing."""
    with connect(port) as stalled:
        assert served(port)
        assert until_closed(stalled) == b""


@pytest.mark.parametrize("sent", [HALF, b"GE"], ids=["half a head", "two bytes"])
def test_a_head_that_stalls_gets_408_and_is_closed_while_others_are_served(port, sent):
    before = closed_early(port, "head_timeout")
    with connect(port) as stalled:
        stalled.sendall(sent)
        assert served(port)
        data = until_closed(stalled)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"did not arrive within 2 s" in data and b"connection: close" in data
    assert closed_early(port, "head_timeout") == before + 1  # an operator sees them in /metrics


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
    server = uvicorn.Server(uvicorn.Config(hello, http=http_protocol(1, base=base), ws="none", lifespan="off",
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


CAP = 3  # the capped server's --max-client-connections


@pytest.fixture(scope="module")
def capped(env):
    with running(env, "--header-timeout", HEADER_TIMEOUT, "--max-client-connections", CAP) as port:
        yield port


def answered(sock: socket.socket) -> bool:
    """Whether a GET on ``sock`` gets 200; the connection is kept alive."""
    sock.sendall(GET)
    return response(sock.makefile("rb"))[0].startswith(b"HTTP/1.1 200 ")


def refused(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` with the 503 for too many connections (asked nothing)."""
    data = until_closed(sock)
    assert data.startswith(b"HTTP/1.1 503 ") and b"connection: close" in data, data[:200]
    return data.endswith(b"too many connections from this address")


def answered_soon(port: int, source: str) -> bool:
    """Whether a new connection from ``source`` is answered within WAIT s: a slot freed by a
    close comes back when the server has seen the close, a moment after the client."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with connect(port, source) as sock:
            if answered(sock):
                return True
        time.sleep(0.1)
    return False


def test_connections_past_a_clients_cap_are_refused_while_another_address_is_served(capped):
    held = [connect(capped, "127.0.0.2") for _ in range(CAP)]
    try:
        assert all(answered(sock) for sock in held)  # open and counted
        before = closed_early(capped, "client_cap")
        for _ in range(2):
            with connect(capped, "127.0.0.2") as extra:
                assert refused(extra)
        assert closed_early(capped, "client_cap") == before + 2
        with connect(capped, "127.0.0.3") as other:
            assert answered(other)
        assert all(answered(sock) for sock in held)  # the held ones are still served
    finally:
        for sock in held:
            sock.close()


def test_a_client_gets_a_slot_back_when_one_of_its_keep_alive_connections_closes(capped):
    held = [connect(capped, "127.0.0.4") for _ in range(CAP)]
    try:
        assert all(answered(sock) for sock in held)
        with connect(capped, "127.0.0.4") as extra:
            assert refused(extra)
        held.pop().close()
        assert answered_soon(capped, "127.0.0.4")
    finally:
        for sock in held:
            sock.close()


def test_stalled_heads_hold_their_clients_slots_until_the_header_timeout_closes_them(capped):
    stalled = [connect(capped, "127.0.0.5") for _ in range(CAP)]
    try:
        for sock in stalled:
            sock.sendall(HALF)
        with connect(capped, "127.0.0.5") as extra:
            assert refused(extra)  # and it started no head timer: closed at once, without a 408
        assert all(until_closed(sock).startswith(b"HTTP/1.1 408 ") for sock in stalled)
        assert answered_soon(capped, "127.0.0.5")
    finally:
        for sock in stalled:
            sock.close()


def test_max_client_connections_0_caps_no_client(env):
    """For a server behind a proxy, where every client has the proxy's address: one
    address holds more than the default cap (128)."""
    with running(env, "--max-client-connections", 0) as port:
        held = []
        try:
            for _ in range(130):
                held.append(connect(port))
                assert answered(held[-1]), len(held)
        finally:
            for sock in held:
                sock.close()


def test_a_negative_max_client_connections_is_one_line_error(env):
    done = subprocess.run([sys.executable, "-m", "semsearch", "serve", "--max-client-connections", "-1",
                           "--port", "0"], env=env, capture_output=True, text=True, timeout=DEADLINE)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == "error: max-client-connections must be at least 0 (0: no cap)", lines


@pytest.mark.parametrize("base", base_protocols(), ids=lambda base: base.__name__)
def test_two_servers_with_one_protocol_class_count_each_clients_connections_apart(base):
    """The counts live on each uvicorn.Server's state, not on the class (tests, and anyone
    embedding the server, may start several in one process)."""
    import uvicorn

    from semsearch.server.protocol import http_protocol

    protocol = http_protocol(30, max_client_connections=1, base=base)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    servers = [uvicorn.Server(uvicorn.Config(hello, http=protocol, ws="none", lifespan="off", log_level="warning"))
               for _ in listeners]
    threads = [threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
               for server, listener in zip(servers, listeners)]
    for thread in threads:
        thread.start()
    a, b = (listener.getsockname()[1] for listener in listeners)
    try:
        with connect(a) as first, connect(b) as second, connect(a) as extra:
            assert refused(extra)
            assert answered(first) and answered(second)
    finally:
        for server in servers:
            server.should_exit = True
        for thread, listener in zip(threads, listeners):
            thread.join(DEADLINE)
            listener.close()
