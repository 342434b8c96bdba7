"""uvicorn's HTTP protocol with a bound on a request head's arrival.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not the time a
request head takes: a connection that opened and sent nothing, or sent half a head and
stopped, was held for ever, and ``limit_concurrency`` counts it; ~max-connections such
sockets (slowloris) made the server answer every real client 503.
"""
from __future__ import annotations

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

    header_timeout: float  # set by http_protocol()
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


def http_protocol(header_timeout: float, base: type | None = None) -> type:
    """The protocol class to give ``uvicorn.Config(http=...)``: uvicorn's own choice of
    ``base`` (httptools when installed, else h11) with HeaderTimeout."""
    if base is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:  # httptools is the serve extra's; h11 comes with uvicorn
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return type(f"HeaderTimeout{base.__name__}", (HeaderTimeout, base), {"header_timeout": header_timeout})
