"""``POST /v1/predict``: one image as the body, or a multipart form of ``file`` parts; the bearer-token check.

The body is read here (bounded by ``middleware.BodyLimits``) and handed to the app's ``Batcher``: decoding,
preprocessing, ONNX Runtime and the JSON encoding run on a worker thread, off the event loop, batched with the
requests that arrived meanwhile.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from ignite_lenet.serving.classify import Job
from ignite_lenet.serving.errors import InvalidParameter, ServiceError, Unauthorized, UnsupportedMediaType
from ignite_lenet.serving.schemas import PREDICT_OPENAPI, Predictions, error_responses

bearer = HTTPBearer(auto_error=False, description="the first line of the server's --token-file")


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """401 unless the request carries the server's bearer token (compared in constant time)."""
    token: bytes | None = request.app.state.token
    if token is None:
        return
    if credentials is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer TOKEN'")
    if not hmac.compare_digest(credentials.credentials.encode(), token):
        raise Unauthorized("wrong bearer token")


router = APIRouter(prefix="/v1", tags=["predict"])


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def invert_param(request: Request) -> bool | None:
    """The ``invert`` query parameter: true, false, or absent (detect). Parsed here rather than declared as a
    FastAPI ``Query``: its validation was an eighth of the event loop's time per request (documented in
    ``PREDICT_OPENAPI`` instead)."""
    if not request.scope["query_string"]:  # the usual case: no parsing at all
        return None
    value = request.query_params.get("invert")
    if value is None:
        return None
    parsed = BOOLEANS.get(value.lower())
    if parsed is None:
        raise InvalidParameter(f"query.invert: expected true or false, got {value[:40]!r}")
    return parsed


BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@router.post(
    "/predict",
    summary="Classify handwritten digits",
    description="The bytes of one image as the body (Content-Type image/png, image/jpeg, any image type Pillow "
    "reads, or application/octet-stream) give one prediction; a multipart/form-data body with one or more 'file' "
    "parts gives one entry per file, in order, each with its 'file' name and either a prediction or an 'error'. "
    "Images are normalised the way MNIST was made (polarity detected, cropped, fitted in 20x20, centred).",
    response_model=None,
    responses={200: {"model": Predictions, "description": "the predictions"},
               **error_responses(400, 401, 408, 413, 415, 422, 503)},
    openapi_extra=PREDICT_OPENAPI,
)
async def predict(request: Request) -> Response:
    state = request.app.state
    invert = invert_param(request)
    kind = media_type(request)
    if kind == "multipart/form-data":  # split on the worker thread, with the decoding
        job = Job(await request.body(), request.headers["content-type"], invert, state.settings.max_files)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        job = Job(await request.body(), None, invert)
    else:
        shown = kind[:80] or "none"
        raise UnsupportedMediaType(f"Content-Type {shown} is not accepted: send an image (image/png, image/jpeg, ..., "
                                   f"application/octet-stream) or multipart/form-data with 'file' parts")
    try:
        # a request of several images may take many slices: watch for its client hanging up meanwhile (the body is
        # read, so the next ASGI message is the disconnect); one image is one slice, not worth a watcher task
        result = await state.batcher.submit(job, None if job.single else request.receive)
    except ServiceError as e:
        if job.single:  # an image refused (a malformed multipart body is no image)
            state.metrics.image_errors.labels(str(e.status)).inc()
        raise
    state.metrics.images.inc(result.classified)
    for status in result.refused:
        state.metrics.image_errors.labels(str(status)).inc()
    return Response(result.body, media_type="application/json")
