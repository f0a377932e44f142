"""``POST /v1/predict``: one image as the body, or a multipart form of ``file`` parts; the bearer-token check.

The body is read here (bounded by ``middleware.BodyLimits``) and handed to the app's ``Batcher``: decoding,
preprocessing, ONNX Runtime and the JSON encoding run on a worker thread, off the event loop, batched with the
requests that arrived meanwhile.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import QueryParams, State
from starlette.responses import Response
from starlette.types import Receive

from ignite_lenet.serving.classify import Job
from ignite_lenet.serving.errors import InvalidParameter, ServiceError, Unauthorized, UnsupportedMediaType
from ignite_lenet.serving.schemas import PREDICT_OPENAPI, Predictions, error_responses

bearer = HTTPBearer(auto_error=False, description="the first line of the server's --token-file")


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """401 unless the request carries the server's bearer token (compared in constant time)."""
    check_token(credentials, request.app.state.token)


def check_token(credentials: HTTPAuthorizationCredentials | None, token: bytes | None) -> None:
    """``Unauthorized`` unless ``credentials`` (``bearer``'s reading of the request) carry ``token`` (or there is
    none)."""
    if token is None:
        return
    if credentials is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer TOKEN'")
    if not hmac.compare_digest(credentials.credentials.encode(), token):
        raise Unauthorized("wrong bearer token")


router = APIRouter(prefix="/v1", tags=["predict"])


def media_type(content_type: str) -> str:
    """``image/png`` of ``Image/PNG; q=1``: the media type of a Content-Type, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def invert_param(query_string: bytes) -> bool | None:
    """The ``invert`` query parameter: true, false, or absent (detect). Parsed here rather than declared as a
    FastAPI ``Query``: its validation was an eighth of the event loop's time per request (documented in
    ``PREDICT_OPENAPI`` instead)."""
    if not query_string:  # the usual case: no parsing at all
        return None
    value = QueryParams(query_string).get("invert")
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
    invert = invert_param(request.scope["query_string"])
    content_type = request.headers.get("content-type", "")
    multipart = is_multipart(content_type)
    return Response(await classify(state, await request.body(), content_type if multipart else None, invert,
                                   request.receive),
                    media_type="application/json")


def is_multipart(content_type: str) -> bool:
    """Whether the body is a multipart form (else one image); ``UnsupportedMediaType`` for anything else."""
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return True
    if kind.startswith("image/") or kind == "application/octet-stream":
        return False
    shown = kind[:80] or "none"
    raise UnsupportedMediaType(f"Content-Type {shown} is not accepted: send an image (image/png, image/jpeg, ..., "
                               f"application/octet-stream) or multipart/form-data with 'file' parts")


async def classify(state: State, body: bytes, multipart: str | None, invert: bool | None, receive: Receive) -> bytes:
    """The JSON body of a prediction: ``body`` (one image, or a multipart form of Content-Type ``multipart``)
    classified by the app's ``Batcher``, the images counted in the metrics; raises the ``ServiceError`` that
    refuses the whole request. ``receive``: the request's ASGI receive, its body read (watched for a hang-up)."""
    # a multipart body is split on the worker thread, with the decoding
    job = Job(body, multipart, invert, state.settings.max_files) if multipart else Job(body, None, invert)
    try:
        # a request of several images may take many slices: watch for its client hanging up meanwhile (the body is
        # read, so the next ASGI message is the disconnect); one image is one slice, not worth a watcher task
        result = await state.batcher.submit(job, None if job.single else receive)
    except ServiceError as e:
        if job.single:  # an image refused (a malformed multipart body is no image)
            state.metrics.image_errors.labels(str(e.status)).inc()
        raise
    state.metrics.images.inc(result.classified)
    for status in result.refused:
        state.metrics.image_errors.labels(str(status)).inc()
    return result.body
