"""What goes wrong in a request, as exceptions with their HTTP status, and the handlers that answer every error
(ours, Starlette's 404/405, FastAPI's validation, anything unexpected) as ``{"error": "one line"}``.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

logger = logging.getLogger("ignite_lenet.serving")

MAX_MESSAGE = 500  # characters of an error message (it may quote a client's file name)


class ServiceError(Exception):
    """A request the service refuses: ``status`` and a one-line ``message`` for ``{"error": message}``."""

    status = 400
    headers: dict[str, str] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = one_line(message)


class BadRequest(ServiceError):
    """Malformed: an unreadable image, an empty body, a multipart body without files."""

    status = 400


class Unauthorized(ServiceError):
    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="ignite_lenet"'}


class TooLarge(ServiceError):
    """A body or image above the limits; the connection is closed (after draining a body left unread, so the
    client reads the answer: ``server.TimedHttpToolsProtocol``)."""

    status = 413
    headers = {"Connection": "close"}


class RequestTimeout(ServiceError):
    """A body that did not arrive in time (a slow or stalled client); the connection is closed."""

    status = 408
    headers = {"Connection": "close"}


class UnsupportedMediaType(ServiceError):
    status = 415


class Unavailable(ServiceError):
    """Too much work queued already (or shutting down): retry shortly."""

    status = 503
    headers = {"Retry-After": "1"}


class InvalidParameter(ServiceError):
    """A query parameter with a value it cannot have (as FastAPI's own validation errors, 422)."""

    status = 422


class NoDigit(ServiceError):
    """A readable image without a digit in it (blank, uniform, specks)."""

    status = 422


class ClientGone(Exception):
    """The client of a request hung up before its work was done (the work is dropped, nobody reads the answer)."""


def one_line(text: str) -> str:
    """``text`` on one line, at most ``MAX_MESSAGE`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    body = json.dumps({"error": one_line(message)}).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _service_error(request: Request, exc: ServiceError) -> Response:
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = str(exc.detail)
    if exc.status_code in (404, 405):  # say what was asked (the path quoted, truncated by one_line)
        message = f"{exc.detail}: {request.method} {request.url.path[:200]} (the API is described at /openapi.json)"
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(422, "; ".join(problems) or "invalid request")


async def _client_gone(request: Request, exc: ClientDisconnect | ClientGone) -> Response:
    return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the metrics count it


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error answering %s %s", request.method, request.url.path[:200])
    return error_response(500, "internal server error (logged by the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"error": "one line"}`` with its status."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _unexpected)


class NotFound(ServiceError):
    """An unknown model or model version (the Open Inference Protocol's /v2/models/NAME routes)."""

    status = 404
