"""Image bytes -> digits -> the JSON body of a prediction: the work of a request, synchronous, for a worker thread.

The same preprocessing as ``python -m ignite_lenet.predict`` (``mnist.digits``: any Pillow mode, transparency,
polarity, MNIST-style normalisation, "no digit found"); the model is called once per request, for one image or
for every image of a multipart request.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.mnist.digits import ImageTooLarge, NoDigitFound, normalize_digit, read_gray
from ignite_lenet.serving.errors import BadRequest, NoDigit, ServiceError, TooLarge, one_line

MAX_NAME = 255  # characters of a client's file name echoed back


@dataclass(frozen=True)
class Result:
    """A response body, the number of images given a label, and the status of each refused one."""

    body: bytes
    classified: int
    refused: list[int]


@dataclass(frozen=True)
class Upload:
    """One image of a request: its name (the multipart file name) and bytes, or why it is not an image."""

    name: str
    data: bytes
    problem: str | None = None


def decode(data: bytes, name: str, max_pixels: int, invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """An MNIST-like ``(28, 28)`` uint8 digit and whether it was inverted, or the ``ServiceError`` that says why not."""
    if not data:
        raise BadRequest(f"{name}: empty: send the bytes of an image")
    try:
        gray = read_gray(io.BytesIO(data), max_pixels=max_pixels, name=name)
        return normalize_digit(gray, invert)
    except ImageTooLarge as e:
        raise TooLarge(str(e)) from None
    except NoDigitFound as e:
        raise NoDigit(str(e) if str(e).startswith(name) else f"{name}: {e}") from None
    except MemoryError:
        raise TooLarge(f"{name}: too large to decode in the memory available") from None
    except ValueError as e:
        raise BadRequest(str(e) if str(e).startswith(name) else f"{name}: {e}") from None


def _rows(clf: Classifier, digits: list[np.ndarray], inverted: list[bool]) -> list[dict[str, Any]]:
    """One record per digit, from one call of the model: the class, its probability, all ten, the polarity."""
    labels, probs = clf.predict(np.stack(digits))
    rounded = probs.astype(np.float64).round(6)
    return [{"label": int(label), "probability": float(p[label]), "probabilities": p.tolist(), "inverted": inv}
            for label, p, inv in zip(labels.tolist(), rounded, inverted)]


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def classify_image(clf: Classifier, data: bytes, max_pixels: int, invert: bool | None = None) -> Result:
    """``{"predictions": [record]}`` for the bytes of one image; raises the ``ServiceError`` of a bad one."""
    digit, inverted = decode(data, "image", max_pixels, invert)
    return Result(encode({"predictions": _rows(clf, [digit], [inverted])}), 1, [])


def classify_uploads(clf: Classifier, uploads: list[Upload], max_pixels: int, invert: bool | None = None) -> Result:
    """``{"predictions": [...]}``, one entry per upload in order: ``{"file", "label", ...}`` or ``{"file", "error",
    "status"}``; a bad image does not fail the others, and the good ones go through the model in one call."""
    entries: list[dict[str, Any]] = []
    digits, inverted, slots, refused = [], [], [], []
    for upload in uploads:
        name = upload.name[:MAX_NAME]
        try:
            if upload.problem is not None:
                raise BadRequest(upload.problem)
            digit, inv = decode(upload.data, name or "file", max_pixels, invert)
        except ServiceError as e:
            entries.append({"file": name, "error": one_line(e.message), "status": e.status})
            refused.append(e.status)
            continue
        slots.append(len(entries))
        entries.append({"file": name})
        digits.append(digit)
        inverted.append(inv)
    if digits:
        for slot, row in zip(slots, _rows(clf, digits, inverted)):
            entries[slot].update(row)
    return Result(encode({"predictions": entries}), len(digits), refused)
