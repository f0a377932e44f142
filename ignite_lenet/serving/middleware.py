"""Pure ASGI middleware (no per-request task or body copy, unlike Starlette's ``BaseHTTPMiddleware``).

``BodyLimits`` bounds a request body while it is read: a ``Content-Length`` above the limit is answered 413 before
a byte of the body is read, and a chunked body is counted as it arrives. (How long a body may take is bounded per
connection, by the server's protocol: ``server.TimedHttpToolsProtocol``.) ``AllowedHosts`` refuses a Host header
that is not the server's own (DNS rebinding). ``RecordMetrics``, the outermost, counts every answered request and
answers a request cancelled before its response started (uvicorn cancels what is still running at the end of a
graceful shutdown) with a JSON 503 rather than uvicorn's plain-text 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ignite_lenet.serving.errors import BadRequest, TooLarge, Unavailable, error_response
from ignite_lenet.serving.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimits:
    """At most ``max_bytes`` of body per request: refused by its ``Content-Length``, or counted while read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1  # the HTTP parser refuses these before us; this is defence in depth
                if declared > self.max_bytes or declared < 0:
                    error = TooLarge(f"the body is {value.decode('latin-1')[:20]} bytes; the limit is "
                                     f"{self.max_bytes:,} bytes" if declared > 0 else "invalid Content-Length")
                    await error_response(error.status, error.message, error.headers)(scope, receive, send)
                    return
                await self.app(scope, receive, send)  # the parser delivers no more than it declared
                return
        received = 0

        async def counted() -> Message:  # chunked: no length declared
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise TooLarge(f"the body is over the limit of {self.max_bytes:,} bytes")
            return message

        await self.app(scope, counted, send)


class AllowedHosts:
    """Only requests whose ``Host`` (its port aside) is one of ``names``; 400 otherwise, before routing.

    A web page can make a browser on the server's machine send requests to a loopback address under a DNS name of
    its own (DNS rebinding) and read the answers; the Host header still carries that name.
    """

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = b""
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value
                    break
            name = host_name(host.decode("latin-1"))
            if name not in self.names:
                shown = host.decode("latin-1")[:100] or "(none)"
                error = BadRequest(f"Host {shown!r} is not one this server answers to (--allowed-host)")
                await error_response(error.status, error.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """``'[::1]:8000'`` -> ``'::1'``, ``'LocalHost.:80'`` -> ``'localhost'``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


class RecordMetrics:
    """Counts each answered HTTP request by its route template (``scope["route"]``, set by the router; for a request
    answered before routing, such as a 413 on its Content-Length, the path when it is one of ``paths``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: frozenset[str] = frozenset()) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, started = 500, False  # unless a response starts

        async def send_recording(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        except asyncio.CancelledError:
            if not started:  # no response started: say so in JSON (uvicorn would send a plain-text 500)
                status = Unavailable.status
                error = Unavailable("the server is shutting down: the request was cancelled at --graceful-timeout")
                with contextlib.suppress(Exception):
                    await error_response(error.status, error.message, error.headers)(scope, receive, send)
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope["path"] if scope["path"] in self.paths else "unmatched"
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)
