"""``POST /v1/predict`` answered by a pure ASGI handler, in front of FastAPI's router; the FastAPI route stays for
``/openapi.json`` and answers nothing else.

Under load a prediction's event-loop time was ~1.5 ``/healthz`` before a byte of it was classified: FastAPI's
router (every route tried in turn, the effective-route bookkeeping), its exception and exit-stack middleware, the
dependency solver, a ``Request``, a ``Response`` and the ``send`` wrappers of each layer. This handler does what the
route does with none of that: the token (``api.bearer`` and ``api.check_token``, exactly as the route's security
dependency), ``?invert`` (``api.invert_param``), the Content-Type (``api.is_multipart``), the body (read through
``middleware.BodyLimits``, which sits outside it), ``api.classify`` (the ``Batcher`` and the image metrics), and
the same ``{"error": ...}`` answers (``errors.error_response``). It is the innermost middleware, so every
middleware of the app (``RecordMetrics``, ``BodyLimits``, anything added later) still wraps it; what it does not
handle (another path or method, a websocket) goes on to FastAPI unchanged, and an unexpected exception goes on up
to Starlette's ``ServerErrorMiddleware`` as from the route (a logged 500).
"""

from __future__ import annotations

from starlette.datastructures import State
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ignite_lenet.serving import api
from ignite_lenet.serving.errors import ClientGone, ServiceError, error_response
from ignite_lenet.serving.middleware import ASGIApp, Receive, Scope, Send

PATH = "/v1/predict"
JSON_HEADERS = b"content-type", b"application/json"


class FastPredict:
    """Answers ``POST /v1/predict`` as ``api.predict`` does, without FastAPI's request machinery.

    Args:
        app: the rest of the app (FastAPI's exception middleware and router).
        state: the app's ``state`` (settings, token, batcher, metrics; filled in by the lifespan).
        route: the FastAPI route of the path, put in ``scope["route"]`` as the router would (``RecordMetrics``
            labels requests by its template).
    """

    def __init__(self, app: ASGIApp, state: State, route: BaseRoute) -> None:
        self.app, self.state, self.route = app, state, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            body = await self._predict(scope, receive)
        except ServiceError as e:
            await error_response(e.status, e.message, e.headers)(scope, receive, send)
            return
        except (ClientDisconnect, ClientGone):  # as errors._client_gone: nobody reads it, the metrics count it
            await Response(status_code=499)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), JSON_HEADERS]})
        await send({"type": "http.response.body", "body": body})

    async def _predict(self, scope: Scope, receive: Receive) -> bytes:
        state = self.state
        if state.token is not None:  # what the route's Security(api.require_token) does, in its order: first
            api.check_token(await api.bearer(Request(scope)), state.token)
        invert = api.invert_param(scope["query_string"])
        content_type = ""
        for name, value in scope["headers"]:  # Starlette's Headers.get: the first one
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        multipart = api.is_multipart(content_type)
        return await api.classify(state, await read_body(receive), content_type if multipart else None, invert,
                                  receive)


async def read_body(receive: Receive) -> bytes:
    """The whole request body, as Starlette's ``Request.body()`` reads it; ``ClientDisconnect`` if the client went."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
