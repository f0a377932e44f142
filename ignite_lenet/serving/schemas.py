"""The shapes of the service's JSON, for ``/openapi.json`` (responses are encoded directly, not through these)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ignite_lenet.spec import NUM_CLASSES

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp",
               "application/octet-stream")  # documented; any image/* type Pillow reads is accepted


class Prediction(BaseModel):
    label: int = Field(description="the predicted digit (class index)", ge=0, examples=[7])
    probability: float = Field(description="its probability", ge=0, le=1)
    probabilities: list[float] = Field(description="the probability of each class, 0 to 9", min_length=NUM_CLASSES,
                                       max_length=NUM_CLASSES)
    inverted: bool = Field(description="whether the image was a dark digit on a light background (inverted first)")


class FileResult(BaseModel):
    """One file of a multipart request: its prediction, or why it has none."""

    file: str = Field(description="the part's file name (at most 255 characters)")
    label: int | None = Field(None, ge=0)
    probability: float | None = Field(None, ge=0, le=1)
    probabilities: list[float] | None = Field(None, min_length=NUM_CLASSES, max_length=NUM_CLASSES)
    inverted: bool | None = None
    error: str | None = Field(None, description="why this file has no prediction (one line)")
    status: int | None = Field(None, description="the status the error would have alone: 400, 413 or 422")


class Predictions(BaseModel):
    predictions: list[Prediction | FileResult] = Field(
        description="one entry for a single image; one per file, in order, for a multipart request")


class Error(BaseModel):
    error: str = Field(description="what went wrong, in one line")


class Health(BaseModel):
    """With ``--token-file``, a request without the token gets ``status`` alone."""

    status: str = Field(examples=["ok"])
    model: str | None = Field(None, description="the model file's name")
    input: str | None = Field(None, description="what the model takes")
    classes: list[str] | None = None
    version: str | None = None
    pid: int | None = Field(None, description="the worker process that answered")


ERRORS = {
    400: "unreadable image, empty body, or a multipart body without 'file' parts",
    401: "missing or wrong bearer token (only when the server has --token-file)",
    408: "the body did not arrive within --body-timeout",
    413: "body above --max-body-bytes, an image above --max-image-pixels, or a request's images above "
         "--max-request-pixels",
    415: "the Content-Type is not an image, application/octet-stream or multipart/form-data",
    422: "no digit found in the image, or an invalid query parameter",
    503: "too many images waiting already (Retry-After: 1), or shutting down",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {status: {"model": Error, "description": ERRORS[status]} for status in statuses}


PREDICT_OPENAPI = {
    "parameters": [{
        "name": "invert", "in": "query", "required": False, "schema": {"type": "boolean"},
        "description": "true: the images are dark digits on a light background; false: never invert; default: "
                       "detect from the border",
    }],
    "requestBody": {
        "required": True,
        "description": "The bytes of one image (PNG, JPEG, any type Pillow reads), or a multipart form with one or "
                       "more 'file' parts.",
        "content": {
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }},
        },
    }
}
