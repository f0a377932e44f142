"""``create_app(settings)``: the FastAPI application of the digit service.

    from ignite_lenet.serving import Settings, create_app
    app = create_app(Settings(model="exports/lenet5.onnx"))     # any ASGI server; TestClient(app) in tests

The model is loaded once, in the lifespan, and held on ``app.state`` with the token, the page and the
``Batcher`` that runs it off the event loop; routers per concern (``api``: /v1/predict, ``ops``: /healthz and /metrics, ``page``: /);
``errors`` answers every error as ``{"error": "one line"}``; ``middleware`` bounds bodies and counts requests.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Security

from ignite_lenet import __version__
from ignite_lenet.files import model_file_kind
from ignite_lenet.inference.loading import load_classifier
from ignite_lenet.inference.onnx_runtime import OnnxClassifier
from ignite_lenet.serving import api, oip, ops, page
from ignite_lenet.serving.batcher import Batcher
from ignite_lenet.serving.classify import Limits
from ignite_lenet.serving.errors import install_error_handlers
from ignite_lenet.serving.fast_predict import FastPredict
from ignite_lenet.serving.metrics import Metrics
from ignite_lenet.serving.middleware import AllowedHosts, BodyLimits, RecordMetrics
from ignite_lenet.serving.settings import Settings, read_token
from ignite_lenet.spec import DEFAULT_EXPORT_DIR


def load_model(settings: Settings) -> OnnxClassifier:
    """The ONNX model of ``settings`` (a ``.onnx`` file or a directory holding one), with every signature check of
    ``OnnxClassifier``; ``FileNotFoundError``/``ValueError`` in one line otherwise."""
    path = Path(settings.model)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such model file; export one with python -m "
                                f"ignite_lenet.export --format onnx (it writes {DEFAULT_EXPORT_DIR}/lenet5.onnx)")
    if not path.is_dir() and model_file_kind(path) != "onnx":
        raise ValueError(f"--model {path}: the service serves ONNX models (.onnx); export one with python -m "
                         f"ignite_lenet.export --format onnx")
    classifier = load_classifier(path, threads=settings.onnx_threads)
    assert isinstance(classifier, OnnxClassifier)  # a directory is searched for .onnx files only
    return classifier


def _health(settings: Settings, classifier: OnnxClassifier) -> bytes:
    inputs = "uint8 [batch, 28, 28]" if classifier.raw_input else "float32 [batch, 1, {}, {}]".format(
        *classifier.input_size)
    return json.dumps({"status": "ok", "model": classifier.path.name, "input": inputs,
                       "classes": list(classifier.class_names), "version": __version__, "pid": os.getpid()}).encode()


BEGIN_SHUTDOWN = "ignite_lenet.begin_shutdown"  # in the ASGI lifespan state: what the server calls on SIGTERM


def create_app(settings: Settings, classifier: OnnxClassifier | None = None) -> FastAPI:
    """The service's ASGI app. The model is loaded when the app starts (its lifespan), unless ``classifier`` is
    the model of ``settings`` loaded already (the command line loads it first to report a bad model in one line).

    The lifespan yields ``{BEGIN_SHUTDOWN: callable}`` as ASGI lifespan state: ``server.ServingServer`` calls it
    the moment a graceful shutdown starts, so that waiting work is answered 503 at once and work in progress by
    ``--graceful-timeout``, before uvicorn would cancel the requests itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        model = classifier if classifier is not None else load_model(settings)
        app.state.token = read_token(settings.token_file) if settings.token_file else None
        app.state.classifier = model
        limits = Limits(max_pixels=settings.max_image_pixels, max_request_pixels=settings.max_request_pixels)
        app.state.batcher = Batcher(model, limits, threads=settings.inference_threads,
                                    max_queued=settings.max_queued_images, abandoned=app.state.metrics.abandoned)
        app.state.batcher.start()
        app.state.health = _health(settings, model)

        def begin_shutdown() -> None:
            app.state.batcher.begin_shutdown(settings.graceful_timeout)

        try:
            yield {BEGIN_SHUTDOWN: begin_shutdown}
        finally:
            app.state.health = None  # shutting down: not ready any more
            await app.state.batcher.stop()

    app = FastAPI(
        title="ignite_lenet digits",
        version=__version__,
        summary="LeNet-5 trained on MNIST, served with ONNX Runtime: handwritten digit images in, digits out.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the API is /openapi.json
        redoc_url=None,
        # the service's metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would look up the global
        # providers on every request (7% of a /healthz's time) to find none configured
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.page = page.page_html()
    app.state.token = None
    app.state.health = None
    app.include_router(ops.router)
    app.include_router(api.router, dependencies=[Security(api.require_token)] if settings.token_file else [])
    app.include_router(page.router)
    oip.include(app, guard=[Security(api.require_token)] if settings.token_file else [])
    install_error_handlers(app)
    app.add_middleware(FastPredict, state=app.state, route=api.router.routes[0])  # innermost: POST /v1/predict
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes)
    if settings.allowed_hosts() is not None:
        app.add_middleware(AllowedHosts, names=settings.allowed_hosts())
    paths = frozenset(route.path for router in (ops.router, api.router, page.router, oip.health_router, oip.router)
                      for route in router.routes)
    app.add_middleware(RecordMetrics, metrics=app.state.metrics, paths=paths)  # outermost: counts the 413s too
    return app


def app_from_environment() -> FastAPI:
    """The app of a ``--workers N`` worker process: its settings come from the parent (``Settings.to_environment``)."""
    app = create_app(Settings.from_environment())
    freeze_startup_objects()  # the worker's own interpreter
    return app


def freeze_startup_objects() -> None:
    """Exclude everything that exists by now (imports, the app, the model) from the cyclic garbage collector.

    A full collection walks every tracked object: the ~200,000 of FastAPI, pydantic and onnxruntime took a
    collection tens of milliseconds, often enough under load to set the p99 latency (35 -> 13 ms at 32
    connections). What requests allocate afterwards is still collected. Server processes only: they own
    their interpreter (``create_app`` alone leaves the collector as it is).
    """
    gc.collect()
    gc.freeze()
