"""Image bytes -> digits -> the JSON body of a prediction: the work of requests, synchronous, for a worker thread.

The same preprocessing as ``python -m ignite_lenet.predict`` (``mnist.digits``: any Pillow mode, transparency,
polarity, MNIST-style normalisation, "no digit found"). A request is a ``Work``: its images are first *opened* (the
multipart body split, every image's header read, its pixels counted against the per-image and per-request limits,
nothing decoded), then decoded and classified a *slice* at a time (``Limits``), so that the ``batcher`` can
interleave the slices of concurrent requests and one request's thousand images never hold up another's one. The
model is called once per batch, for every image of every slice in it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.inference.predict import DECIMALS, prediction_record
from ignite_lenet.mnist.digits import ImageTooLarge, NoDigitFound, decode_gray, normalize_digit, open_image
from ignite_lenet.serving.errors import BadRequest, NoDigit, ServiceError, TooLarge
from ignite_lenet.serving.multipart import file_parts

MAX_NAME = 255  # characters of a client's file name echoed back


@dataclass(frozen=True)
class Limits:
    """How much one request may ask for, and how much of it one slice decodes.

    ``max_pixels`` per image and ``max_request_pixels`` per request are read from the images' headers before any
    is decoded (413 beyond). A slice holds at most ``slice_images`` images and, past its first image,
    ``slice_pixels`` pixels: the unit of work after which another request's slice gets its turn.
    """

    max_pixels: int = 4_000_000
    max_request_pixels: int = 16_000_000
    slice_images: int = 64
    slice_pixels: int = 1_000_000


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


@dataclass
class Item:
    """One image of a request: its name, its opened (undecoded) image or why it has none, then its outcome."""

    name: str
    image: Any = None  # a PIL image from ``open_image``, closed once decoded
    pixels: int = 0
    outcome: dict[str, Any] | ServiceError | None = None


@dataclass(eq=False)
class Work:
    """A request's images on their way through the model, a slice at a time.

    The event loop creates it, may set ``cancelled`` (the client hung up, or shutdown cut it off) and reads
    ``outcome`` once set; a worker thread opens it and runs its slices (never two threads at once: ``busy``).
    """

    job: Job
    future: Any = field(default=None, repr=False)  # the asyncio future its request awaits
    items: list[Item] | None = None  # None until opened
    cursor: int = 0  # items before it have been decoded (or refused)
    busy: bool = False
    cancelled: bool = False
    outcome: Result | BaseException | None = None  # set when the work is done

    @property
    def started(self) -> bool:
        return self.busy or self.items is not None

    def remaining(self) -> int:
        """Images not decoded yet (estimated until the work is opened)."""
        if self.outcome is not None:
            return 0
        return self.job.estimated_images() if self.items is None else len(self.items) - self.cursor

    def open(self, limits: Limits) -> None:
        """Split the body and read every image's header; refuses the whole request (``outcome``) when it cannot be
        split or holds more than ``limits.max_request_pixels``."""
        job = self.job
        try:
            parts = [("image", job.data)] if job.single else file_parts(job.data, job.multipart, job.max_files)
        except ServiceError as e:
            self.outcome = e
            return
        items = [_opened(name[:MAX_NAME], data, limits.max_pixels) for name, data in parts]
        total = sum(item.pixels for item in items)
        if total > limits.max_request_pixels:
            close(items)
            self.outcome = TooLarge(f"the request's images hold {total:,} pixels, above the limit of "
                                    f"{limits.max_request_pixels:,} per request (--max-request-pixels): send fewer or "
                                    f"smaller images")
            return
        self.items = items
        if job.single and isinstance(items[0].outcome, ServiceError):
            self.outcome = items[0].outcome

    def next_slice(self, limits: Limits) -> list[Item]:
        """The next images to decode: at most ``slice_images``, and ``slice_pixels`` past the first."""
        assert self.items is not None
        start = stop = self.cursor
        pixels = 0
        while stop < len(self.items) and stop - start < limits.slice_images:
            pixels += self.items[stop].pixels
            if stop > start and pixels > limits.slice_pixels:
                break
            stop += 1
        self.cursor = stop
        return self.items[start:stop]

    def finish(self) -> None:
        """Set ``outcome`` from the items, once every one has its own."""
        assert self.items is not None
        if self.job.single:
            row = self.items[0].outcome
            self.outcome = row if isinstance(row, ServiceError) else Result(encode_single(row), 1, [])
            return
        entries: list[dict[str, Any]] = []
        refused: list[int] = []
        for item in self.items:
            if isinstance(item.outcome, ServiceError):
                entries.append({"file": item.name, "error": item.outcome.message, "status": item.outcome.status})
                refused.append(item.outcome.status)
            else:
                entries.append({"file": item.name, **item.outcome})
        self.outcome = Result(encode({"predictions": entries}), len(entries) - len(refused), refused)


def _opened(name: str, data: bytes | None, max_pixels: int) -> Item:
    label = name or "file"
    if data is None:
        return Item(name, outcome=BadRequest("a 'file' part without a filename: send it as a file"))
    if not data:
        return Item(name, outcome=BadRequest(f"{label}: empty: send the bytes of an image"))
    try:
        image = open_image(io.BytesIO(data), max_pixels=max_pixels, name=label)
    except ImageTooLarge as e:
        return Item(name, outcome=TooLarge(str(e)))
    except ValueError as e:
        return Item(name, outcome=BadRequest(str(e)))
    width, height = image.size
    return Item(name, image, width * height)


def close(items: Sequence[Item]) -> None:
    """Close the images not decoded (their file objects)."""
    for item in items:
        if item.image is not None:
            item.image.close()
            item.image = None


def decode(item: Item, invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """An MNIST-like ``(28, 28)`` uint8 digit of an opened item and whether it was inverted, or the
    ``ServiceError`` that says why not."""
    name = item.name or "file"
    image, item.image = item.image, None
    try:
        return normalize_digit(decode_gray(image, name), invert)
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
    rounded = probs.astype(np.float64).round(DECIMALS).tolist()  # one conversion to Python floats for the batch
    return [prediction_record(label, p, inv, class_names=None, decimals=None)
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


def run_batch(clf: Classifier, works: Sequence[Work], limits: Limits) -> None:
    """One slice of each work (opening it first if need be), with one call of the model for every image decoded;
    a work whose last slice this was gets its ``outcome``. A cancelled work stops at its next image.

    A work of another kind of job (``oip.InferJob``: tensors, decoded already) is one slice: its type's
    ``run_batch(classifier, jobs)`` answers every job of that type in the batch, in order, with one model call."""
    _run_others([work for work in works if not isinstance(work.job, Job)], clf)
    digits: list[np.ndarray] = []
    inverted: list[bool] = []
    decoded: list[Item] = []
    for work in works:
        if not isinstance(work.job, Job):
            continue
        if work.items is None:
            work.open(limits)
        if work.outcome is not None:
            continue
        for item in work.next_slice(limits):
            if work.cancelled:
                close(work.items)
                break
            if item.outcome is not None:  # refused when opened
                continue
            try:
                digit, inv = decode(item, work.job.invert)
            except ServiceError as e:
                item.outcome = e
                continue
            digits.append(digit)
            inverted.append(inv)
            decoded.append(item)
    for item, row in zip(decoded, _rows(clf, digits, inverted) if digits else []):
        item.outcome = row
    for work in works:
        if work.outcome is None and not work.cancelled and work.remaining() == 0:
            work.finish()


def _run_others(works: Sequence[Work], clf: Classifier) -> None:
    kinds: dict[type, list[Work]] = {}
    for work in works:
        kinds.setdefault(type(work.job), []).append(work)
    for kind, same in kinds.items():
        for work, outcome in zip(same, kind.run_batch(clf, [work.job for work in same])):
            work.outcome = outcome
