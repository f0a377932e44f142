"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness) and ``GET /metrics`` (Prometheus text): open even with
a token, for load balancers and probes; with ``--token-file`` an unauthenticated ``/healthz`` says only its status."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from starlette.responses import Response

from ignite_lenet.serving.errors import error_response
from ignite_lenet.serving.schemas import Error, Health

router = APIRouter(tags=["operations"])

STATUS_ONLY = b'{"status":"ok"}'


def has_token(request: Request) -> bool:
    """Whether the request carries the server's bearer token (always true without ``--token-file``)."""
    token: bytes | None = request.app.state.token
    if token is None:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"), token)


@router.get("/healthz", summary="Liveness: 200 while the model is loaded (whatever the load)", response_model=None,
            responses={200: {"model": Health, "description": "the model is loaded and the service answers; with "
                             "--token-file, only {\"status\": \"ok\"} unless the request carries the token"},
                       503: {"model": Error, "description": "the model is not loaded (yet, or any more)"}})
async def healthz(request: Request) -> Response:
    body = getattr(request.app.state, "health", None)  # encoded once, when the lifespan loaded the model
    if body is None:
        return error_response(503, "the model is not loaded")
    return Response(body if has_token(request) else STATUS_ONLY, media_type="application/json")


@router.get("/readyz", summary="Readiness: 200 while the service takes work, 503 when saturated or shutting down",
            response_model=None,
            responses={200: {"description": "{\"status\": \"ready\"}"},
                       503: {"model": Error, "description": "not loaded, shutting down, or half of "
                             "--max-queued-images waiting: send work elsewhere for now"}})
async def readyz(request: Request) -> Response:
    batcher = getattr(request.app.state, "batcher", None)
    if getattr(request.app.state, "health", None) is None or batcher is None:
        return error_response(503, "the model is not loaded")
    if batcher.draining:
        return error_response(503, "the server is shutting down")
    if not batcher.ready:
        return error_response(503, f"saturated: {batcher.queued_images():,} images are waiting", {"Retry-After": "1"})
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_model=None,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "requests by route and status, latency, images classified"}})
async def metrics(request: Request) -> Response:
    exposition = request.app.state.metrics
    return Response(exposition.exposition(), media_type=exposition.content_type)
