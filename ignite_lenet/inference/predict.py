"""Predictions as records: ``prediction_record`` is the JSON-able record of one prediction, for
``python -m ignite_lenet.predict`` and the HTTP service alike; ``predict_files`` (image files, each with its own
error) and ``predict_set`` (whole arrays, with accuracy and images/s) are the command line's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ignite_lenet.mnist.digits import load_digit
from ignite_lenet.spec import CLASS_NAMES

DECIMALS = 6  # probabilities in records: float32 carries about 7 significant digits


def prediction_record(label: int, probabilities: Sequence[float], inverted: bool | None = None, *, top_k: int = 1,
                      with_probabilities: bool = True, class_names: tuple[str, ...] | None = CLASS_NAMES,
                      decimals: int | None = DECIMALS) -> dict[str, Any]:
    """One prediction as a JSON-able dict: ``{"label", "probability"[, "top_k"][, "probabilities"][, "inverted"]}``.

    Args:
        label: the predicted class index; the record names it by ``class_names`` (``"7"``), or gives the index
            itself with ``class_names=None`` (the HTTP API's ``"label": 7``).
        probabilities: the ``(num_classes,)`` probabilities of the image (an array, or Python floats).
        inverted: whether the image was inverted to white-on-black (``mnist.digits.load_digit``); left out when
            ``None`` (arrays, which are taken as they are).
        top_k: with ``top_k > 1``, ``"top_k"``: the ``[class name, probability]`` pairs of the k likeliest classes.
        with_probabilities: include ``"probabilities"``, all of them, in class order.
        decimals: probabilities rounded to this many decimals (``None``: as computed).
    """
    def shown(value: Any) -> float:
        return float(value) if decimals is None else round(float(value), decimals)

    def name(index: int) -> str | int:
        return index if class_names is None else class_names[index]

    record: dict[str, Any] = {"label": name(label), "probability": shown(probabilities[label])}
    if top_k > 1:
        order = np.argsort(-np.asarray(probabilities), kind="stable")[:top_k]
        record["top_k"] = [[name(int(i)), shown(probabilities[i])] for i in order]
    if with_probabilities:
        values = probabilities.tolist() if isinstance(probabilities, np.ndarray) else list(probabilities)
        record["probabilities"] = values if decimals is None else [round(v, decimals) for v in values]
    if inverted is not None:
        record["inverted"] = inverted
    return record


def prediction_rows(clf, labels: np.ndarray, probs: np.ndarray, top_k: int, with_probs: bool) -> list[dict[str, Any]]:
    """One ``prediction_record`` per image (without ``inverted``: arrays are taken as they are)."""
    return [prediction_record(int(label), p, top_k=top_k, with_probabilities=with_probs,
                              class_names=clf.class_names) for label, p in zip(labels, probs)]


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
        for (path, _, inverted), label, p in zip(chunk, labels, probs):
            results.append({"path": str(path), **prediction_record(int(label), p, inverted, top_k=top_k,
                                                                   with_probabilities=with_probs,
                                                                   class_names=clf.class_names)})
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
