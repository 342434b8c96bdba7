"""Bearer keys and the limits on a request's body: its size and the time it takes to arrive.

Keys are compared with ``hmac.compare_digest`` against every configured key (no early
exit), and never echoed: a wrong key and a missing key get the same message. A read-only
key (``KEY read`` in the key file) is refused with 403 on the routes that write (WriteRoute).
"""
from __future__ import annotations

import asyncio
import hmac

from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from .errors import ReadOnlyKey, Unauthorized


# what the API description says of the key (no check: KeyedRoute does that), so that /docs
# has an Authorize button and its "Try it out" requests carry the key
BEARER = HTTPBearer(auto_error=False, scheme_name="API key",
                    description="One of the server's API keys, when it has any (SEMSEARCH_API_KEY, --api-key-file); "
                                "a read-only one may call every route but those that add or delete (403)")


class KeyedRoute(APIRoute):
    """A route that needs the key, checked before its body is read: a FastAPI dependency
    runs after, so a client without a key had the server read and parse up to
    max-body-bytes, and a malformed body got a 400 instead of its 401. Only its two kinds
    are made: ReadRoute and WriteRoute, so every keyed route says whether it writes."""

    writes: bool | None = None

    def __init__(self, *args, **kwargs):
        if self.writes is None:
            raise TypeError("a keyed route is a ReadRoute or a WriteRoute (does it write?)")
        super().__init__(*args, **kwargs)

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def keyed(request: Request):
            require_key(request, self.writes)
            return await handler(request)
        return keyed


class ReadRoute(KeyedRoute):
    """Writes nothing a later request could see: any key may call it, a read-only one too."""
    writes = False


class WriteRoute(KeyedRoute):
    """Adds, changes or deletes something: a full key only (403 for a read-only one)."""
    writes = True


def require_key(request: Request, writes: bool) -> None:
    """Unauthorized unless the request holds one of the keys, ReadOnlyKey if ``writes`` and it
    holds a read-only one; a no-op when no key is set. Every key is compared (no early exit),
    and the matching key's scope is taken in the same loop."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip().encode()
    match = may_write = False
    for key, full in keys:
        same = hmac.compare_digest(token, key)
        match |= same
        may_write |= same & full
    if scheme.lower() != "bearer" or not match:
        raise Unauthorized("missing or invalid API key (send 'Authorization: Bearer <key>')")
    if writes and not may_write:
        raise ReadOnlyKey("this API key is read-only: it may search and read, not add or delete "
                          "(use a full key)")


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413, by its declared
    Content-Length before any of it is read, or once a chunked body passes the limit; one
    not all there ``timeout`` seconds after the request's headers gets 408 and the
    connection is closed. uvicorn has no such timeout: a client that sent headers and then
    trickled or withheld the body held a connection and a request task for ever.

    It raises from ``receive``, inside the route's body parsing, where FastAPI passes an
    HTTPException through to the error handlers unchanged."""

    def __init__(self, app, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, seen, timeout, done = self.limit, 0, self.timeout, False
        deadline = asyncio.get_running_loop().time() + timeout
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = HTTPException(413, f"the request body is larger than the limit of {limit:,} bytes")

        async def counting():
            nonlocal seen, done
            if not declared.isdigit() or int(declared) > limit:
                raise too_large
            if done:  # past the body: a wait for the client to hang up (app.hung_up) is not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on, not on 3.10
                raise HTTPException(408, f"the request body did not arrive within {timeout:g} s",
                                    headers={"Connection": "close"}) from None
            done = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            return message

        await self.app(scope, counting, send)
