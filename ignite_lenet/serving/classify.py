"""Image bytes -> digits -> the JSON body of a prediction: the work of requests, synchronous, for a worker thread.

The same preprocessing as ``python -m ignite_lenet.predict`` (``mnist.digits``: any Pillow mode, transparency,
polarity, MNIST-style normalisation, "no digit found"); the model is called once for a whole batch of requests
(``batcher``), each with one image or the images of a multipart request.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.mnist.digits import ImageTooLarge, NoDigitFound, normalize_digit, read_gray
from ignite_lenet.serving.errors import BadRequest, NoDigit, ServiceError, TooLarge
from ignite_lenet.serving.multipart import file_parts

MAX_NAME = 255  # characters of a client's file name echoed back


@dataclass(frozen=True)
class Result:
    """A response body, the number of images given a label, and the status of each refused one."""

    body: bytes
    classified: int
    refused: list[int]


@dataclass(frozen=True)
class Job:
    """One request's images: the bytes of one image, or a multipart body (split on the worker thread)."""

    data: bytes
    multipart: str | None = None  # a multipart body's Content-Type; None: ``data`` is one image
    invert: bool | None = None
    max_files: int = 1024

    @property
    def single(self) -> bool:
        return self.multipart is None

    def estimated_images(self) -> int:
        """How many images it holds, before it is parsed (for batch sizes and backpressure)."""
        return 1 if self.single else max(1, min(self.max_files, self.data.count(b"filename=")))


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
    rounded = probs.astype(np.float64).round(6).tolist()  # one conversion to Python floats for the whole batch
    return [{"label": label, "probability": p[label], "probabilities": p, "inverted": inv}
            for label, p, inv in zip(labels.tolist(), rounded, inverted)]


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


SINGLE = '{{"predictions":[{{"label":{},"probability":{!r},"probabilities":[{}],"inverted":{}}}]}}'


def encode_single(row: dict[str, Any]) -> bytes:
    """``encode({"predictions": [row]})`` byte for byte (``json`` writes an int with ``int.__repr__``, a finite
    float with ``float.__repr__``), by a template: ``json.dumps`` was a tenth of the worker thread's time per
    image under load."""
    return SINGLE.format(row["label"], row["probability"], ",".join(map(repr, row["probabilities"])),
                         "true" if row["inverted"] else "false").encode()


def classify_jobs(clf: Classifier, jobs: Sequence[Job], max_pixels: int) -> list[Result | ServiceError]:
    """Each job's ``Result`` (or the ``ServiceError`` that refuses the whole request: a single image that cannot be
    classified, a malformed multipart body), with one call of the model for every decoded image of every job.

    A single image gives ``{"predictions": [record]}``; a multipart job ``{"predictions": [...]}`` with one entry per
    ``file`` part, in order: ``{"file", "label", ...}`` or ``{"file", "error", "status"}`` (a bad file fails alone).
    """
    digits: list[np.ndarray] = []
    inverted: list[bool] = []
    decoded: list[list[tuple[str, int | ServiceError]] | ServiceError] = []  # per job: (name, digit index or error)
    for job in jobs:
        try:
            parts = [("image", job.data)] if job.single else file_parts(job.data, job.multipart, job.max_files)
        except ServiceError as e:
            decoded.append(e)
            continue
        items: list[tuple[str, int | ServiceError]] = []
        for name, data in parts:
            name = name[:MAX_NAME]
            try:
                if data is None:
                    raise BadRequest("a 'file' part without a filename: send it as a file")
                digit, inv = decode(data, name or "file", max_pixels, job.invert)
            except ServiceError as e:
                items.append((name, e))
                continue
            items.append((name, len(digits)))
            digits.append(digit)
            inverted.append(inv)
        decoded.append(items)
    rows = _rows(clf, digits, inverted) if digits else []
    results: list[Result | ServiceError] = []
    for job, items in zip(jobs, decoded):
        if isinstance(items, ServiceError):
            results.append(items)
        elif job.single:
            (_, outcome), = items
            results.append(outcome if isinstance(outcome, ServiceError) else
                           Result(encode_single(rows[outcome]), 1, []))
        else:
            results.append(_entries(items, rows))
    return results


def _entries(items: list[tuple[str, int | ServiceError]], rows: list[dict[str, Any]]) -> Result:
    """A multipart job's result: an entry per file, in order."""
    entries: list[dict[str, Any]] = []
    refused: list[int] = []
    for name, outcome in items:
        if isinstance(outcome, ServiceError):
            entries.append({"file": name, "error": outcome.message, "status": outcome.status})
            refused.append(outcome.status)
        else:
            entries.append({"file": name, **rows[outcome]})
    return Result(encode({"predictions": entries}), len(entries) - len(refused), refused)
