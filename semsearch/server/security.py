"""Bearer keys and the limits on a request's body: its size and the time it takes to arrive.

Keys are compared with ``hmac.compare_digest`` against every configured key (no early
exit), and never echoed: a wrong key and a missing key get the same message.
"""
from __future__ import annotations

import asyncio
import hmac

from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from .errors import Unauthorized


# what the API description says of the key (no check: KeyedRoute does that), so that /docs
# has an Authorize button and its "Try it out" requests carry the key
BEARER = HTTPBearer(auto_error=False, scheme_name="API key",
                    description="One of the server's API keys, when it has any (SEMSEARCH_API_KEY, --api-key-file)")


class KeyedRoute(APIRoute):
    """A route that needs the key, checked before its body is read: a FastAPI dependency
    runs after, so a client without a key had the server read and parse up to
    max-body-bytes, and a malformed body got a 400 instead of its 401."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def keyed(request: Request):
            require_key(request)
            return await handler(request)
        return keyed


def require_key(request: Request) -> None:
    """Unauthorized unless the request holds one of the keys; a no-op when no key is set."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip().encode()
    match = False
    for key in keys:
        match |= hmac.compare_digest(token, key)
    if scheme.lower() != "bearer" or not match:
        raise Unauthorized("missing or invalid API key (send 'Authorization: Bearer <key>')")


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
