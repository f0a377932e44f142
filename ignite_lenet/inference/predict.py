"""Predictions as records, for ``python -m ignite_lenet.predict`` and the HTTP service alike: image files (each
with its own error), whole arrays (with accuracy and images/s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ignite_lenet.mnist.digits import load_digit


def prediction_rows(clf, labels: np.ndarray, probs: np.ndarray, top_k: int, with_probs: bool) -> list[dict[str, Any]]:
    """One record per image: predicted class, its probability, the top-k, and all probabilities if asked."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    rows = []
    for label, p, top in zip(labels, probs, order):
        row: dict[str, Any] = {"label": clf.class_names[label], "probability": round(float(p[label]), 6)}
        if top_k > 1:
            row["top_k"] = [[clf.class_names[i], round(float(p[i]), 6)] for i in top]
        if with_probs:
            row["probabilities"] = [round(float(v), 6) for v in p]
        rows.append(row)
    return rows


def predict_files(clf, paths: list[Path], invert: bool | None, batch_size: int, top_k: int = 1,
                  with_probs: bool = True) -> tuple[list[dict], list[dict]]:
    """Predictions for the files that hold a digit and ``{"path", "error"}`` for the others."""
    loaded, errors = [], []
    for path in paths:
        try:
            digit, inverted = load_digit(path, invert)
            loaded.append((path, digit, inverted))
        except (OSError, ValueError, MemoryError) as e:
            message = " ".join(str(e).split()) or type(e).__name__
            errors.append({"path": str(path), "error": message if str(path) in message else f"{path}: {message}"})
    results = []
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        labels, probs = clf.predict(np.stack([digit for _, digit, _ in chunk]))
        for (path, _, inverted), row in zip(chunk, prediction_rows(clf, labels, probs, top_k, with_probs)):
            results.append({"path": str(path), **row, "inverted": inverted})
    return results, errors


def predict_set(clf, images: np.ndarray, labels: np.ndarray | None, batch_size: int) -> dict[str, Any]:
    """Predict a whole array in batches: labels, probabilities, images/s, and accuracy when labels are given."""
    if len(images):
        clf.predict(images[:1])  # warm-up, not timed
    start = time.perf_counter()
    parts = [clf.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    elapsed = time.perf_counter() - start
    predictions = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    probs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(clf.class_names)), np.float32)
    summary: dict[str, Any] = {"images": int(len(images)), "images_per_s": len(images) / elapsed if elapsed else 0.0,
                               "predictions": predictions.tolist(), "probs": probs}
    if labels is not None and len(images):
        summary["accuracy"] = float((predictions == labels).mean())
    return summary
