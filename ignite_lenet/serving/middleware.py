"""Pure ASGI middleware (no per-request task or body copy, unlike Starlette's ``BaseHTTPMiddleware``).

``BodyLimits`` bounds a request body while it is read: a ``Content-Length`` above the limit is answered 413 before
a byte of the body is read, a chunked body is counted as it arrives, and the whole body must arrive within the
body timeout (a client that stalls gets 408). ``RecordMetrics`` counts every answered request.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ignite_lenet.serving.errors import RequestTimeout, TooLarge, error_response
from ignite_lenet.serving.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _within(receive: Receive, seconds: float) -> Message:
    """``await receive()``, or ``TimeoutError`` after ``seconds``."""
    if sys.version_info >= (3, 11):  # no extra task per message
        async with asyncio.timeout(seconds):
            return await receive()
    return await asyncio.wait_for(receive(), seconds)  # pragma: no cover - Python 3.10


class BodyLimits:
    """At most ``max_bytes`` of body per request, all of it within ``timeout`` seconds of the request's start."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

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
                break
        deadline = time.monotonic() + self.timeout
        received = 0
        done = False

        async def limited() -> Message:
            nonlocal received, done
            if done:  # the body is in: later calls wait for the disconnect, with no deadline
                return await receive()
            try:
                message = await _within(receive, deadline - time.monotonic())
            except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11 on
                raise RequestTimeout(f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise TooLarge(f"the body is over the limit of {self.max_bytes:,} bytes")
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, limited, send)


class RecordMetrics:
    """Counts each answered HTTP request by its route template (``scope["route"]``, set by the router)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), scope["method"], status,
                                 time.perf_counter() - start)
