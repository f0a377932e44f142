"""Check an export against the eager model: the images it is checked on (MNIST's test set or fixed synthetic
ones), output parity, predicted classes, non-finite values, test accuracy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ignite_lenet.mnist.idx import has_mnist, raw_dir, read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.spec import DATA_DIR_ENV, DEFAULT_DATA_DIR, SOURCE_SIZE


class ExportMismatch(ValueError):
    """A reloaded export does not reproduce the eager model."""


SYNTHETIC_IMAGES = 256  # fixed inputs for the verification when MNIST is not available


PARITY_ATOL = 1e-4


@dataclass
class VerificationSet:
    """The images every export is checked on: MNIST's test set, or fixed synthetic images without it."""

    raw: np.ndarray  # (N, 28, 28) uint8
    images: np.ndarray  # (N, 1, 32, 32) float32, training's preprocessing of ``raw``
    labels: np.ndarray | None  # None for synthetic images: no accuracy
    source: str


def synthetic_images(n: int = SYNTHETIC_IMAGES, seed: int = 0) -> np.ndarray:
    """Fixed uint8 ``(n, 28, 28)`` images for parity checks without MNIST: blank, noise and random strokes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SOURCE_SIZE, SOURCE_SIZE), np.uint8)
    images[1] = 255
    images[2 : n // 4] = rng.integers(0, 256, (max(0, n // 4 - 2), SOURCE_SIZE, SOURCE_SIZE), dtype=np.uint8)
    for image in images[n // 4 :]:  # a few thick random strokes in the 20x20 centre, like a digit's
        for _ in range(int(rng.integers(1, 4))):
            (y0, x0), (y1, x1) = rng.integers(4, 24, (2, 2))
            for t in np.linspace(0, 1, 40):
                y, x = round(y0 + t * (y1 - y0)), round(x0 + t * (x1 - x0))
                image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = 255
    return images


def resolve_data_dir(checkpoint: dict[str, Any], explicit: str | Path | None) -> tuple[Path | None, list[Path]]:
    """Where to find MNIST for the verification: ``explicit``, else the first of the checkpoint's recorded
    ``data_dir``, ``$IGNITE_LENET_DATA_DIR`` and ``./data`` that holds the test split; and the places tried."""
    if explicit is not None:
        return Path(explicit), [Path(explicit)]
    config = checkpoint.get("config")
    recorded = config.get("data_dir") if isinstance(config, dict) else None
    candidates = [c for c in (recorded, os.environ.get(DATA_DIR_ENV), DEFAULT_DATA_DIR) if isinstance(c, str) and c]
    tried = list(dict.fromkeys(Path(c) for c in candidates))
    return next((d for d in tried if has_mnist(d, ("test",))), None), tried


def predict_all(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes of the whole array; ``ExportMismatch`` on any non-finite output."""
    predictions = []
    for i in range(0, len(images), batch_size):
        outputs = np.asarray(run(np.ascontiguousarray(images[i : i + batch_size])))
        if not np.isfinite(outputs).all():
            raise ExportMismatch(f"non-finite outputs (NaN or infinity) on verification images "
                                 f"{i}-{i + len(outputs) - 1}")
        predictions.append(outputs.argmax(1))
    return np.concatenate(predictions)


def verify(
    name: str, run: Callable[[np.ndarray], np.ndarray], eager: nn.Module, images: np.ndarray, labels: np.ndarray | None,
    eager_predictions: np.ndarray, inputs: np.ndarray | None = None,
) -> tuple[float, float | None]:
    """Compare an export with the eager model: outputs at batch 1 and 7, classes on the whole set.

    ``inputs`` are what the export takes when it is not ``images`` (the raw-input model's uint8 images).
    Returns ``(max |difference|, accuracy or None without labels)``; raises ``ExportMismatch`` when they
    disagree by more than ``PARITY_ATOL``, on any predicted class, or on any non-finite output.
    """
    inputs = images if inputs is None else inputs
    worst = 0.0
    for batch in (slice(0, 1), slice(1, 8)):  # batch 1 and an odd batch
        with torch.inference_mode():
            expected = eager(torch.from_numpy(images[batch])).numpy()
        got = np.asarray(run(np.ascontiguousarray(inputs[batch])))
        if got.shape != expected.shape:
            raise ExportMismatch(f"{name}: output shape {got.shape} != eager {expected.shape} at batch "
                                 f"{len(expected)}")
        if not np.isfinite(got).all() or not np.isfinite(expected).all():
            raise ExportMismatch(f"{name}: non-finite outputs (NaN or infinity) at batch {len(expected)}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= PARITY_ATOL:  # written so that a NaN fails too
        raise ExportMismatch(f"{name}: max |output - eager| = {worst:.2e} > {PARITY_ATOL:.0e}")
    predictions = predict_all(run, inputs)
    differ = int((predictions != eager_predictions).sum())
    if differ:
        raise ExportMismatch(f"{name}: {differ} of {len(images)} verification images get another class than the "
                             f"eager model")
    return worst, None if labels is None else float((predictions == labels).mean())


def batch1_latency_us(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, repeats: int = 2000) -> float:
    """Median single-image latency in microseconds (after a warm-up)."""
    for _ in range(100):
        run(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def load_verification_set(
    checkpoint: dict[str, Any], data_dir: str | Path | None, download: bool, log: Callable[[str], None]
) -> VerificationSet:
    """MNIST's test split from ``resolve_data_dir`` (downloaded only into an explicit ``data_dir``), else fixed
    synthetic images with one line saying that the test accuracy is not checked."""
    found, tried = resolve_data_dir(checkpoint, data_dir)
    reason = f"no MNIST test files in {', '.join(str(raw_dir(d)) for d in tried)}"
    if found is not None:
        try:
            raw, labels = read_mnist(found, "test", download=download and data_dir is not None)
            return VerificationSet(raw, to_model_input(raw), labels, f"the {len(raw):,} MNIST test images")
        except FileNotFoundError as e:  # an explicit --data-dir without the files, the download failed or refused
            reason = " ".join(str(e).split())
    raw = synthetic_images()
    log(f"note: test accuracy not checked ({reason}); the exports are verified on {len(raw)} fixed synthetic "
        f"images (pass --data-dir DIR to check it)")
    return VerificationSet(raw, to_model_input(raw), None, f"{len(raw)} synthetic images")
