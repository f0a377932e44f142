"""``POST /v1/predict``: one image as the body, or a multipart form of ``file`` parts; the bearer-token check.

The body is read here (bounded by ``middleware.BodyLimits``), then decoding, preprocessing, ONNX Runtime and the
JSON encoding run on a worker thread (``anyio.to_thread`` with the app's limiter), off the event loop.
"""

from __future__ import annotations

import functools
import hmac

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ignite_lenet.serving.classify import Upload, classify_image, classify_uploads
from ignite_lenet.serving.errors import BadRequest, ServiceError, Unauthorized, UnsupportedMediaType
from ignite_lenet.serving.schemas import PREDICT_BODY, Predictions, error_responses

MAX_FIELDS = 64  # non-file parts of a multipart body (ignored, but parsed): a bound on the parser's work

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


async def read_uploads(request: Request, max_files: int, max_bytes: int) -> list[Upload]:
    """The ``file`` parts of a multipart body, in order."""
    uploads: list[Upload] = []
    try:
        async with request.form(max_files=max_files, max_fields=MAX_FIELDS, max_part_size=max_bytes) as form:
            for key, value in form.multi_items():
                if key != "file":
                    continue
                if isinstance(value, str):
                    uploads.append(Upload("", b"", "a 'file' part without a filename: send it as a file"))
                else:
                    uploads.append(Upload(value.filename or "", await value.read()))
    except (HTTPException, ServiceError):  # Starlette's 400 for malformed multipart; our 408 / 413
        raise
    except Exception as e:  # the multipart parser on hostile input: whatever it raises, the body is malformed
        raise BadRequest(f"unreadable multipart body ({type(e).__name__})") from None
    if not uploads:
        raise BadRequest("no 'file' parts in the multipart body: send each image as a part named 'file'")
    return uploads


@router.post(
    "/predict",
    summary="Classify handwritten digits",
    description="The bytes of one image as the body (Content-Type image/png, image/jpeg, any image type Pillow "
    "reads, or application/octet-stream) give one prediction; a multipart/form-data body with one or more 'file' "
    "parts gives one entry per file, in order, each with its 'file' name and either a prediction or an 'error'. "
    "Images are normalised the way MNIST was made (polarity detected, cropped, fitted in 20x20, centred).",
    response_model=None,
    responses={200: {"model": Predictions, "description": "the predictions"},
               **error_responses(400, 401, 408, 413, 415, 422)},
    openapi_extra=PREDICT_BODY,
)
async def predict(
    request: Request,
    invert: bool | None = Query(None, description="true: the images are dark digits on a light background; "
                                "false: never invert; default: detect from the border"),
) -> Response:
    state = request.app.state
    settings = state.settings
    kind = media_type(request)
    if kind == "multipart/form-data":
        uploads = await read_uploads(request, settings.max_files, settings.max_body_bytes)
        work = functools.partial(classify_uploads, state.classifier, uploads, settings.max_image_pixels, invert)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        work = functools.partial(classify_image, state.classifier, await request.body(), settings.max_image_pixels,
                                 invert)
    else:
        shown = kind[:80] or "none"
        raise UnsupportedMediaType(f"Content-Type {shown} is not accepted: send an image (image/png, image/jpeg, ..., "
                                   f"application/octet-stream) or multipart/form-data with 'file' parts")
    try:
        result = await anyio.to_thread.run_sync(work, limiter=state.limiter)
    except ServiceError as e:
        state.metrics.image_errors.labels(str(e.status)).inc()
        raise
    state.metrics.images.inc(result.classified)
    for status in result.refused:
        state.metrics.image_errors.labels(str(status)).inc()
    return Response(result.body, media_type="application/json")
