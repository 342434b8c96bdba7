"""Every error response in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

One mapping: library errors carry their status and type (semsearch.errors), request
validation becomes 400 with one line naming the field, anything unexpected is a 500 whose
body says nothing about internals (the traceback goes to the server log, once).
"""
from __future__ import annotations

import logging
import re
import sys

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ..errors import Overloaded, SemsearchError

log = logging.getLogger("semsearch.server")
STATUS_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "invalid_request_error"}


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    response = JSONResponse(body, status_code=status, headers=headers)
    response.error_type = type_
    return response


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ClientGone(SemsearchError):
    """The client hung up before its answer was ready (nginx's 499; nobody reads it)."""

    http_status = 499
    error_type = "client_closed_request"


class Unauthorized(SemsearchError):
    """No API key, or not one of the server's (which of the two is not said)."""

    http_status = 401
    error_type = "authentication_error"


class ReadOnlyKey(SemsearchError):
    """A valid key that may not write, on a route that writes (security.WriteRoute)."""

    http_status = 403
    error_type = "permission_error"


def counted(handler):
    """Every error response is counted by its type in semsearch_errors_total."""
    def handle(request, exc):
        response = handler(request, exc)
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(response.error_type).inc()
        return response
    return handle


def library_error(request, exc: SemsearchError) -> JSONResponse:
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    code = "invalid_api_key" if isinstance(exc, Unauthorized) else snake(type(exc).__name__)
    return error_response(exc.http_status, exc.one_line(), exc.error_type, getattr(exc, "param", None),
                          code, headers)


def validation_error(request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":  # say what and where: "JSON decode error" did not
        why, where = (first.get("ctx") or {}).get("error") or first.get("msg"), first.get("loc", ())[1:]
        if where:  # some of Python's messages end in "at" themselves ("Unterminated string starting at")
            why = f"{re.sub(r' at$', '', why)} at character {where[0]}"
        return bad_json(why)
    if tuple(first.get("loc", ())) == ("body",):  # not JSON at all, or not an object
        return error_response(400, "the body must be a JSON object (Content-Type: application/json)",
                              "invalid_request_error", code=first.get("type"))
    loc = [str(p) for p in first.get("loc", ())[1:]]  # loc[0] says where: "body", "path", "query"
    # pydantic names the type tried in a union ("str", "list[str]"): not the caller's field
    loc = [p for p in loc if not re.fullmatch(r"[a-z]+\[.*\]|str|int|float|bool|function-.*", p)]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request").splitlines()[0]
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return error_response(400, f"{param}: {message}" if param else message, "invalid_request_error",
                          param=param, code=first.get("type"))


def bad_json(why: str) -> JSONResponse:
    return error_response(400, f"the body is not valid JSON: {why}", "invalid_request_error", code="json_invalid")


def http_error(request, exc: HTTPException) -> JSONResponse:
    # FastAPI answers any body it fails to read with one vague 400 ("There was an error
    # parsing the body"); the cause says which failure it was
    cause = exc.__cause__
    if isinstance(cause, ClientDisconnect):  # not the client's mistake: it left mid-body
        return library_error(request, ClientGone("the client hung up while sending the body"))
    if isinstance(cause, UnicodeDecodeError):
        return bad_json(f"it is not UTF-8 (byte 0x{cause.object[cause.start]:02x} at {cause.start})")
    if isinstance(cause, RecursionError):
        return bad_json("it is nested too deeply")
    if isinstance(cause, ValueError) and (digits := re.search(r"has (\d+) digits", str(cause))):
        return bad_json(f"a number has {int(digits[1]):,} digits; the limit is "  # sys.int_max_str_digits
                        f"{sys.get_int_max_str_digits():,}")
    return error_response(exc.status_code, str(exc.detail), STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                          headers=getattr(exc, "headers", None))


def unexpected_error(request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error (the server log has the details)", "server_error")


HANDLERS = {SemsearchError: counted(library_error), RequestValidationError: counted(validation_error),
            HTTPException: counted(http_error)}


class Unexpected:
    """ASGI middleware: any other exception becomes the 500 above, and the connection stays
    open. (Starlette's handler for Exception answers and then re-raises, and uvicorn closes
    the connection: a keep-alive client's next request on it was reset.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:  # too late for an answer: uvicorn drops the connection
                raise
            await counted(unexpected_error)(Request(scope), exc)(scope, receive, send)
