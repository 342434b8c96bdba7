"""Bearer keys and the body-size limit.

Keys are compared with ``hmac.compare_digest`` against every configured key (no early
exit), and never echoed: a wrong key and a missing key get the same message.
"""
from __future__ import annotations

import hmac

from fastapi import Request
from starlette.exceptions import HTTPException

from .errors import Unauthorized


async def require_key(request: Request) -> None:
    """A FastAPI dependency on every protected route; a no-op when no key is set. Async
    though it never awaits: FastAPI runs a plain ``def`` dependency in its threadpool, a
    thread hop on every request."""
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
    Content-Length before any of it is read, or once a chunked body passes the limit.

    It raises from ``receive``, inside the route's body parsing, where FastAPI passes an
    HTTPException through to the error handlers unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, seen = self.limit, 0
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = HTTPException(413, f"the request body is larger than the limit of {limit:,} bytes")

        async def counting():
            nonlocal seen
            if not declared.isdigit() or int(declared) > limit:
                raise too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            return message

        await self.app(scope, counting, send)
