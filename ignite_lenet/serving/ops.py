"""``GET /healthz`` (open even with a token: load balancers probe it) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ignite_lenet.serving.errors import error_response
from ignite_lenet.serving.schemas import Error, Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and readiness: 200 once the model is loaded", response_model=None,
            responses={200: {"model": Health, "description": "the model is loaded and the service answers"},
                       503: {"model": Error, "description": "the model is not loaded (yet)"}})
async def healthz(request: Request) -> Response:
    body = getattr(request.app.state, "health", None)  # encoded once, when the lifespan loaded the model
    if body is None:
        return error_response(503, "the model is not loaded")
    return Response(body, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_model=None,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "requests by route and status, latency, images classified"}})
async def metrics(request: Request) -> Response:
    exposition = request.app.state.metrics
    return Response(exposition.exposition(), media_type=exposition.content_type)
