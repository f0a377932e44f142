"""The HTTP service: LeNet-5 digits over HTTP with FastAPI, uvicorn and ONNX Runtime (no torch).

    python -m ignite_lenet.serve --model exports/lenet5.onnx        # http://127.0.0.1:8000/ (the page), /v1/predict

    from ignite_lenet.serving import Settings, create_app
    app = create_app(Settings(model="exports/lenet5.onnx"))

``settings`` (the typed configuration, the one home of defaults and limits), ``app`` (``create_app``: lifespan,
routers, handlers, middleware), ``api`` (/v1/predict), ``oip`` (the Open Inference Protocol v2: /v2/...) and
``tensors`` (its tensors <-> numpy), ``ops`` (/healthz, /metrics), ``page`` (/),
``classify`` (bytes to predictions, on worker threads), ``errors``, ``middleware``, ``metrics``, ``schemas``
(the OpenAPI shapes), ``server`` (uvicorn: limits, timeouts, workers, graceful shutdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Settings", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from ignite_lenet.serving.app import create_app
    from ignite_lenet.serving.settings import Settings


def __getattr__(name: str) -> Any:  # PEP 562: the command line parses (settings) before FastAPI is imported
    if name == "create_app":
        from ignite_lenet.serving.app import create_app

        return create_app
    if name == "Settings":
        from ignite_lenet.serving.settings import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
