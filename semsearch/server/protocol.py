"""uvicorn's HTTP protocol with a bound on a request head's arrival and a cap on one
client's connections.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not the time a
request head takes: a connection that opened and sent nothing, or sent half a head and
stopped, was held for ever, and ``limit_concurrency`` counts it; ~max-connections such
sockets (slowloris) made the server answer every real client 503. The header timeout
bounds each socket, not an attacker who reopens each one at once: ``limit_concurrency``
counts open sockets, so one address could still hold them all (ClientLimit).
"""
from __future__ import annotations

import ipaddress
import logging
import time

log = logging.getLogger("semsearch.server")

# sent when part of a head came and the rest did not; a connection that sent nothing
# is closed without a word: an unasked-for answer could be read as the answer to a
# request the client is just sending (the race a keep-alive close has too)
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: %d\r\nconnection: close\r\n\r\n%s")


class HeaderTimeout:
    """Mixin for uvicorn's HttpToolsProtocol or H11Protocol: the timer starts when a
    connection opens, or at the first bytes of a request after the previous response
    ended (an idle keep-alive connection is uvicorn's to close), and stops when the head
    is complete, that is when the protocol starts a new request cycle (``self.cycle``,
    read without a default: a uvicorn without it fails loudly, not silently unbounded).
    A body is bounded by BodyLimit; time between requests by ``timeout_keep_alive``."""

    header_timeout: float  # set by http_protocol(), as is closed_early(reason): the metrics'
    head_timer = None
    head_begun = False  # bytes of the awaited head arrived

    def connection_made(self, transport):
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.header_timeout, self.head_timed_out)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # these bytes begin (or continue) a head
            self.head_begun = True
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(self.header_timeout, self.head_timed_out)
        super().data_received(data)
        if self.cycle is not cycle:  # a head completed (a request after it may have begun)
            self.stop_head_timer()

    def connection_lost(self, exc):
        self.stop_head_timer()
        super().connection_lost(exc)

    def stop_head_timer(self) -> None:
        self.head_begun = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if (self.cycle is not None and not self.cycle.response_complete) or self.transport.is_closing():
            return  # a request is being served: not a head's wait
        if self.head_begun:
            why = b"the request's headers did not arrive within %g s" % self.header_timeout
            self.transport.write(REQUEST_TIMEOUT % (len(why), why))
        self.transport.close()
        self.closed_early("head_timeout")


# sent to a connection refused for its client's count before it asks anything: clients
# read it as the answer to their first request (a request already sent may get a reset:
# the close drops it unread)
TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s")
LOG_EVERY = 60.0  # seconds between two log lines about one client's refusals


def client_of(peername) -> str | None:
    """The address a connection's client is counted under: an IPv4 address, or an IPv6
    address's /64 (one host or home network gets a /64 and can pick any address in it);
    None (not counted) for a socket without an IP peer."""
    if not isinstance(peername, tuple):
        return None
    host = peername[0]
    if ":" not in host:
        return host
    address = ipaddress.IPv6Address(host)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class Clients:
    """One server's open connections per client, and when each client's refusals were
    last logged; kept on the server's uvicorn ``ServerState`` (one per uvicorn.Server), so
    servers in one process, even with one protocol class, count apart."""

    def __init__(self):
        self.open: dict[str, int] = {}
        self.logged: dict[str, float] = {}

    def refused(self, client: str, held: int) -> None:
        now = time.monotonic()
        if now - self.logged.get(client, -LOG_EVERY) < LOG_EVERY:
            return
        if len(self.logged) > 4096:  # many clients refused: forget those not logged for a minute
            self.logged = {c: t for c, t in self.logged.items() if now - t < LOG_EVERY}
        self.logged[client] = now
        log.warning("refusing new connections from %s, which holds %d (--max-client-connections); "
                    "further refusals for it go unlogged for %g s", client, held, LOG_EVERY)


class ClientLimit:
    """Mixin (before HeaderTimeout) for uvicorn's protocol: a connection whose client
    already holds ``max_client_connections`` open ones (0: no cap) is refused at once, a
    short 503 and a close, before uvicorn sees it, so it counts against no limit and
    starts no timer. A connection holds its slot until it closes: idle keep-alive
    (``timeout_keep_alive``) and a stalled head (HeaderTimeout) bound how long."""

    max_client_connections: int  # set by http_protocol()
    clients: Clients | None = None  # the server's count, when this connection is in it
    counted_as: str | None = None
    refused = False

    def connection_made(self, transport):
        client = client_of(transport.get_extra_info("peername")) if self.max_client_connections else None
        if client is not None:
            clients = self.server_state.__dict__.setdefault("semsearch_clients", Clients())
            held = clients.open.get(client, 0)
            if held >= self.max_client_connections:
                self.refused = True
                why = b"too many connections from this address"
                transport.write(TOO_MANY % (len(why), why))
                transport.close()
                clients.refused(client, held)
                self.closed_early("client_cap")
                return
            clients.open[client] = held + 1
            self.clients, self.counted_as = clients, client
        super().connection_made(transport)

    def connection_lost(self, exc):
        if self.refused:
            return  # uvicorn never saw it
        if self.clients is not None:
            left = self.clients.open.pop(self.counted_as) - 1
            if left:
                self.clients.open[self.counted_as] = left
        super().connection_lost(exc)


def http_protocol(header_timeout: float, max_client_connections: int = 0, base: type | None = None,
                  closed_early=lambda reason: None) -> type:
    """The protocol class to give ``uvicorn.Config(http=...)``: uvicorn's own choice of
    ``base`` (httptools when installed, else h11) with ClientLimit and HeaderTimeout;
    ``closed_early(reason)`` counts the connections they close."""
    if base is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:  # httptools is the serve extra's; h11 comes with uvicorn
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return type(f"Limited{base.__name__}", (ClientLimit, HeaderTimeout, base),
                {"header_timeout": header_timeout, "max_client_connections": max_client_connections,
                 "closed_early": staticmethod(closed_early)})
