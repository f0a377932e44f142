"""The Open Inference Protocol v2 over HTTP (KServe's "V2 protocol", Triton's HTTP/REST API), beside ``/v1``.

    import tritonclient.http as httpclient                       # or kserve's InferenceRESTClient, perf_analyzer
    client = httpclient.InferenceServerClient("127.0.0.1:8000")
    client.is_server_live(), client.get_model_metadata("lenet5")
    x = httpclient.InferInput("input", [4, 1, 32, 32], "FP32"); x.set_data_from_numpy(images)
    client.infer("lenet5", [x]).as_numpy("probabilities")

Open (like ``/healthz``): ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}/ready``. Behind the
server's token when it has one: ``GET /v2`` (server metadata), ``GET /v2/models/{name}[/versions/{v}]`` (model
metadata), ``POST /v2/models/{name}[/versions/{v}]/infer``. The model's name is ``--model-name``, else the
export's (``lenet5`` for ``lenet5.onnx``, ``lenet5.raw`` for ``lenet5.raw.onnx``, the model directory's name in a
Triton model repository); its one version is ``1`` (or the repository's version directory).

Outputs: the graph's own (``logits``, or ``probabilities`` for an export with ``--output probabilities``),
``probabilities`` (a softmax of the logits) and ``label`` (INT64 ``[N]``, the class index); all three unless the
request names some. Inference runs on the app's ``Batcher`` as ``InferJob``s: parsing, decoding, ONNX Runtime and
the encoding on its worker thread, the model shared with ``/v1/predict`` (and its limits, queue and metrics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ignite_lenet import __version__
from ignite_lenet.inference.classifier import softmax
from ignite_lenet.inference.onnx_runtime import OnnxClassifier
from ignite_lenet.serving.errors import BadRequest, NotFound, ServiceError, Unavailable, error_response
from ignite_lenet.serving.schemas import Error
from ignite_lenet.serving.tensors import InferRequest, TensorSpec, decode_tensor, encode_response, parse_request
from ignite_lenet.spec import SOURCE_SIZE, TRITON_CONFIG, TRITON_MODEL_FILE

SERVER_NAME = "ignite_lenet"
PLATFORM = "onnxruntime_onnx"  # Triton's name for what serves an ONNX model
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "inference-header-content-length"
LABEL, PROBABILITIES = "label", "probabilities"


@dataclass(frozen=True)
class ModelInfo:
    """What the protocol says about the served model: its name and version, its input and outputs."""

    name: str
    version: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    graph_output: str  # the ONNX graph's output name
    classifier: OnnxClassifier
    metadata_json: bytes

    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def check(self, name: str, version: str | None) -> None:
        """``NotFound`` unless ``name`` (and ``version``, when given) is this model."""
        if name != self.name:
            raise NotFound(f"unknown model {name[:100]!r}: this server serves {self.name!r}")
        if version is not None and version != self.version:
            raise NotFound(f"model {self.name!r} has no version {version[:40]!r}: its version is {self.version!r}")


def model_identity(path: Path, configured: str | None = None) -> tuple[str, str]:
    """``(name, version)`` of the model file ``path``: ``NAME/VERSION/model.onnx`` in a Triton repository gives
    those; another file its name without ``.onnx`` and version ``1``; ``configured`` (``--model-name``) wins."""
    if path.name == TRITON_MODEL_FILE and path.parent.name.isdigit() and (path.parent.parent / TRITON_CONFIG).is_file():
        name, version = path.parent.parent.name, path.parent.name
    else:
        name, version = path.name.removesuffix(".onnx"), "1"
    return configured or name, version


def build_model_info(classifier: OnnxClassifier, configured_name: str | None = None) -> ModelInfo:
    """The protocol's view of ``classifier``."""
    name, version = model_identity(classifier.path, configured_name)
    if classifier.raw_input:
        inp = TensorSpec(classifier.input_name, "UINT8", (-1, SOURCE_SIZE, SOURCE_SIZE))
    else:
        inp = TensorSpec(classifier.input_name, "FP32", (-1, 1, *classifier.input_size))
    classes = len(classifier.class_names)
    graph_output = classifier.output_name
    scores = [TensorSpec(graph_output, "FP32", (-1, classes))]
    if graph_output != PROBABILITIES:
        scores.append(TensorSpec(PROBABILITIES, "FP32", (-1, classes)))
    outputs = (*scores, TensorSpec(LABEL, "INT64", (-1,)))
    metadata = {"name": name, "versions": [version], "platform": PLATFORM, "inputs": [inp.metadata()],
                "outputs": [o.metadata() for o in outputs]}
    return ModelInfo(name, version, inp, outputs, graph_output, classifier, json.dumps(metadata).encode())


@dataclass(frozen=True)
class InferResult:
    """An inference response body, its JSON header's length when it carries binary tensors, the images in it."""

    body: bytes
    header_length: int | None
    images: int


@dataclass(frozen=True)
class InferJob:
    """One ``/v2/.../infer`` request for the ``Batcher``: the body as received, parsed on the worker thread.

    The batcher's hook: ``estimated_images()`` (for batch sizes and backpressure) and ``run_batch(classifier,
    jobs)``, which it calls on its worker thread with every ``InferJob`` of a batch and which returns, in order,
    an ``InferResult`` or the ``ServiceError`` that refuses each (one ONNX Runtime call for all of them).
    """

    body: bytes
    header_length: int | None
    model: ModelInfo

    def estimated_images(self) -> int:
        """Images in the body, before it is parsed: exact for binary data; for JSON, four bytes a number."""
        values = math.prod(self.model.input.shape[1:])
        if self.header_length is not None:  # binary: the bytes after the header are the tensor
            itemsize = 1 if self.model.input.datatype == "UINT8" else 4
            return max(1, (len(self.body) - self.header_length) // (values * itemsize))
        return max(1, len(self.body) // (values * 4))

    def decode(self) -> tuple[InferRequest, np.ndarray, list[tuple[str, bool]]]:
        """The parsed request, its input batch and the outputs to answer (name, binary?); or ``BadRequest``."""
        model = self.model
        request = parse_request(self.body, self.header_length)
        if len(request.inputs) != 1:
            raise BadRequest(f"the model takes one input, {model.input.name!r}; got {len(request.inputs)}")
        (tensor,) = request.inputs
        if tensor.name != model.input.name:
            raise BadRequest(f"unknown input {tensor.name[:100]!r}: the model's input is {model.input.name!r} "
                             f"({model.input.datatype} {list(model.input.shape)})")
        known = model.output_names()
        if request.outputs:
            unknown = [o.name for o in request.outputs if o.name not in known]
            if unknown:
                raise BadRequest(f"unknown output {unknown[0][:100]!r}: the model's outputs are {', '.join(known)}")
            wanted = [(o.name, request.binary_output if o.binary is None else o.binary) for o in request.outputs]
        else:
            wanted = [(name, request.binary_output) for name in known]
        return request, decode_tensor(tensor, self.body, model.input), wanted

    @staticmethod
    def run_batch(classifier: OnnxClassifier, jobs: Sequence[InferJob]) -> list[InferResult | ServiceError]:
        """Each job's ``InferResult`` or ``ServiceError``, with one model call for the inputs of all of them."""
        decoded: list[tuple[InferRequest, np.ndarray, list[tuple[str, bool]]] | ServiceError] = []
        for job in jobs:
            try:
                decoded.append(job.decode())
            except ServiceError as e:
                decoded.append(e)
        arrays = [d[1] for d in decoded if not isinstance(d, ServiceError)]
        if not arrays:
            return list(decoded)  # type: ignore[arg-type]  # every one refused
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)  # one request: no copy
        scores = np.asarray(classifier.run_model(batch), dtype=np.float32)  # (N, classes)
        results: list[InferResult | ServiceError] = []
        start = 0
        for job, item in zip(jobs, decoded):
            if isinstance(item, ServiceError):
                results.append(item)
                continue
            request, array, wanted = item
            part = scores[start : start + len(array)]
            start += len(array)
            try:
                results.append(job.respond(request, part, wanted))
            except ServiceError as e:
                results.append(e)
        return results

    def respond(self, request: InferRequest, scores: np.ndarray, wanted: list[tuple[str, bool]]) -> InferResult:
        model = self.model
        outputs: dict[str, np.ndarray] = {model.graph_output: scores}
        probabilities = scores if model.graph_output == PROBABILITIES else None

        def tensor(name: str) -> np.ndarray:
            nonlocal probabilities
            if name in outputs:
                return outputs[name]
            if probabilities is None:
                probabilities = softmax(scores).astype(np.float32, copy=False)
            if name == PROBABILITIES:
                return probabilities
            return scores.argmax(axis=1).astype(np.int64)  # LABEL: the same class as the probabilities'

        header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if request.id is not None:
            header["id"] = request.id
        if not np.isfinite(scores).all():  # a model fed finite values should not; JSON could not carry it
            raise BadRequest("the model returned non-finite scores for this input")
        body, header_length = encode_response(header, [(name, tensor(name), binary) for name, binary in wanted])
        return InferResult(body, header_length, len(scores))


def model_info(request: Request) -> ModelInfo:
    """The served model's ``ModelInfo`` (built once per loaded model); 503 before the model is loaded."""
    state = request.app.state
    classifier = getattr(state, "classifier", None)
    if classifier is None or getattr(state, "health", None) is None:
        raise Unavailable("the model is not loaded")
    info: ModelInfo | None = getattr(state, "oip_model", None)
    if info is None or info.classifier is not classifier:
        info = state.oip_model = build_model_info(classifier, getattr(state.settings, "model_name", None))
    return info


# --- OpenAPI shapes (responses are encoded directly, not through these) ------------------------------------------

class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str = Field(examples=[SERVER_NAME])
    version: str
    extensions: list[str] = Field(description="the protocol extensions supported", examples=[list(EXTENSIONS)])


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1 for the batch", examples=[[-1, 1, 32, 32]])


class ModelMetadata(BaseModel):
    name: str = Field(examples=["lenet5"])
    versions: list[str]
    platform: str = Field(examples=[PLATFORM])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="flat, row-major; absent for a binary output")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: its bytes after the header")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OutputTensor]


ERRORS = {
    400: "malformed request: a tensor whose datatype, shape or data the model cannot take, an unknown output, "
         "binary data past the body, NaN",
    401: "missing or wrong bearer token (only when the server has --token-file)",
    404: "unknown model or version",
    408: "the body did not arrive within --body-timeout",
    413: "body above --max-body-bytes",
    503: "the model is not loaded, too much work waiting already (Retry-After: 1), or shutting down",
}


def responses(model: type[BaseModel], *statuses: int, binary: bool = False) -> dict[int | str, dict]:
    ok: dict[str, Any] = {"model": model, "description": "OK"}
    if binary:
        ok["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {200: ok, **{s: {"model": Error, "description": ERRORS[s]} for s in statuses}}


TENSOR_SCHEMA = {
    "type": "object", "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "description": "the model's input name (see the model metadata)"},
        "datatype": {"type": "string", "enum": ["FP32", "UINT8"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "flat, or nested to the shape"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    },
}
INFER_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "An inference request (JSON), or with the binary tensor data extension a JSON header of "
                       "Inference-Header-Content-Length bytes followed by the tensors' bytes.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object",
                                   "properties": {"binary_data_output": {"type": "boolean"}}},
                    "inputs": {"type": "array", "items": TENSOR_SCHEMA, "minItems": 1},
                    "outputs": {"type": "array", "items": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string", "enum": ["logits", PROBABILITIES, LABEL]},
                                       "parameters": {"type": "object",
                                                      "properties": {"binary_data": {"type": "boolean"}}}}}},
                },
            }},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


# --- the routes --------------------------------------------------------------------------------------------------

health_router = APIRouter(prefix="/v2", tags=["open inference protocol"])
router = APIRouter(prefix="/v2", tags=["open inference protocol"])


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@health_router.get("/health/live", summary="Liveness: 200 while the server answers", response_model=None,
                   responses={200: {"model": Live, "description": "the server answers"}})
async def live() -> Response:
    return _json(b'{"live":true}')


def _ready(request: Request) -> bool:
    state = request.app.state
    batcher = getattr(state, "batcher", None)
    return getattr(state, "health", None) is not None and batcher is not None and batcher.ready  # as /readyz


@health_router.get("/health/ready", summary="Readiness: 200 while the model is loaded and work can be queued",
                   response_model=None, responses=responses(Ready, 503))
async def ready(request: Request) -> Response:
    if not _ready(request):
        return error_response(503, "not ready: the model is not loaded, the queue is full, or shutting down",
                              {"Retry-After": "1"})
    return _json(b'{"ready":true}')


@health_router.get("/models/{model_name}/ready", summary="Whether the model is ready", response_model=None,
                   responses=responses(ModelReady, 404, 503))
@health_router.get("/models/{model_name}/versions/{model_version}/ready", summary="Whether this version is ready",
                   response_model=None, responses=responses(ModelReady, 404, 503))
async def model_ready(request: Request, model_name: str, model_version: str | None = None) -> Response:
    info = model_info(request)
    info.check(model_name, model_version)
    if not _ready(request):
        return error_response(503, "not ready: the queue is full, or shutting down", {"Retry-After": "1"})
    return _json(b'{"name":%s,"ready":true}' % _quote(info.name))


def _quote(value: Any) -> bytes:
    return json.dumps(value).encode()


@router.get("", summary="Server metadata: name, version, protocol extensions", response_model=None,
            responses=responses(ServerMetadata, 401))
async def server_metadata() -> Response:
    return _json(b'{"name":"%s","version":"%s","extensions":%s}' % (
        SERVER_NAME.encode(), __version__.encode(), _quote(list(EXTENSIONS))))



@router.get("/models/{model_name}", summary="Model metadata: versions, platform, inputs and outputs",
            response_model=None, responses=responses(ModelMetadata, 401, 404, 503))
@router.get("/models/{model_name}/versions/{model_version}", summary="Model metadata of a version",
            response_model=None, responses=responses(ModelMetadata, 401, 404, 503))
async def model_metadata(request: Request, model_name: str, model_version: str | None = None) -> Response:
    info = model_info(request)
    info.check(model_name, model_version)
    return _json(info.metadata_json)


@router.post("/models/{model_name}/infer", summary="Inference: tensors in, the outputs asked for out",
             description="The Open Inference Protocol v2 inference request, with Triton's binary tensor data "
             "extension (binary_data_size, binary_data, binary_data_output, Inference-Header-Content-Length).",
             response_model=None, responses=responses(InferenceResponse, 400, 401, 404, 408, 413, 503, binary=True),
             openapi_extra=INFER_OPENAPI)
@router.post("/models/{model_name}/versions/{model_version}/infer", summary="Inference on a version",
             response_model=None, responses=responses(InferenceResponse, 400, 401, 404, 408, 413, 503, binary=True),
             openapi_extra=INFER_OPENAPI)
async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
    info = model_info(request)
    info.check(model_name, model_version)
    header_length = _header_length(request)
    job = InferJob(await request.body(), header_length, info)
    state = request.app.state
    result: InferResult = await state.batcher.submit(job)
    state.metrics.images.inc(result.images)
    if result.header_length is None:
        return _json(result.body)
    return Response(result.body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(result.header_length)})


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"Inference-Header-Content-Length must be a byte count, got {value[:40]!r}")
    return int(value)


def include(app: FastAPI, guard: list[Any]) -> None:
    """Add the protocol's routes to ``app``; ``guard``: the dependencies of the guarded ones (the token check)."""
    app.include_router(health_router)
    app.include_router(router, dependencies=guard)
