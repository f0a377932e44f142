"""What every classifier shares: the input checks and preprocessing, the class names and output kind from the
model's metadata, softmax; a subclass only runs the model (``_run``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.spec import CLASS_NAMES, SOURCE_SIZE


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_array(images: Any) -> np.ndarray:
    if hasattr(images, "detach") and hasattr(images, "cpu"):  # a torch tensor, without importing torch
        images = images.detach().cpu().numpy()
    return np.asarray(images)


class Classifier:
    """Shared preprocessing and post-processing; subclasses implement ``_run(x) -> outputs``.

    ``input_size`` is the model's (H, W); ``raw_input`` models take uint8 ``(N, 28, 28)`` and do the resize and
    scaling inside the graph.
    """

    metadata: dict[str, str]
    raw_input: bool = False

    def __init__(self, metadata: dict[str, str], input_size: tuple[int, int] | None = None, source: str = "") -> None:
        self.metadata = metadata
        self.source = source
        self.output_kind = metadata.get("output", "logits")
        if self.output_kind not in ("logits", "probabilities"):
            raise ValueError(f"{source}: metadata 'output' is {self.output_kind!r}, not logits or probabilities")
        self.class_names = CLASS_NAMES
        if "class_names" in metadata:
            try:
                names = json.loads(metadata["class_names"])
            except json.JSONDecodeError:
                names = None
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{source}: metadata 'class_names' is not a JSON list of strings")
            self.class_names = tuple(names)
        if input_size is None:
            try:
                shape = json.loads(metadata.get("input_shape", '["batch", 1, 32, 32]'))
                input_size = (int(shape[-2]), int(shape[-1]))
            except (json.JSONDecodeError, TypeError, ValueError, IndexError, KeyError):
                raise ValueError(f"{source}: metadata 'input_shape' is not a shape like "
                                 f"[\"batch\", 1, 32, 32]") from None
        self.input_size = input_size

    def accepted_shapes(self) -> str:
        """The image batch shapes ``predict`` takes, in words."""
        if self.raw_input:
            return "(N, 28, 28) or (N, 1, 28, 28) (a raw-input model: MNIST's 28x28 images)"
        h, w = self.input_size
        return f"(N, 1, {h}, {w}), (N, {h}, {w}), (N, 28, 28) or (N, 1, 28, 28)"

    def prepare(self, images: Any) -> np.ndarray:
        """The model's input batch; raises ``ValueError`` for other shapes, dtypes or non-finite values."""
        array = _as_array(images)
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {array.dtype}")
        shape = array.shape
        spatial = tuple(shape[-2:]) if array.ndim in (3, 4) else None
        if (array.ndim == 4 and shape[1] != 1) or spatial not in (self.input_size, (SOURCE_SIZE, SOURCE_SIZE)):
            raise ValueError(f"images must have shape {self.accepted_shapes()}, got {shape}")
        if array.dtype != np.uint8 and array.size:
            if not np.isfinite(array).all():
                raise ValueError("images contain non-finite values (NaN or infinity)")
            if array.min() < 0 or array.max() > 1:
                raise ValueError(f"float images must be scaled to [0, 1] (got values in [{array.min():.3g}, "
                                 f"{array.max():.3g}]); pass uint8 arrays for 0-255 pixels")
        if array.ndim == 4:
            array = array[:, 0]
        if self.raw_input:
            if array.dtype != np.uint8:
                array = np.rint(array * 255).astype(np.uint8)
            return np.ascontiguousarray(array)
        return np.ascontiguousarray(to_model_input(array, self.input_size))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities ``(N, classes)`` float32; an empty batch gives ``(0, classes)``."""
        x = self.prepare(images)
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        outputs = np.asarray(self._run(x))
        if outputs.ndim != 2 or outputs.shape != (len(x), len(self.class_names)):
            raise ValueError(f"{self.source}: the model returned shape {outputs.shape} for {len(x)} images; "
                             f"expected ({len(x)}, {len(self.class_names)}) scores for its classes")
        if not np.isfinite(outputs).all():
            raise ValueError(f"{self.source}: the model returned non-finite scores (NaN or infinity)")
        probs = outputs if self.output_kind == "probabilities" else softmax(outputs)
        return probs.astype(np.float32, copy=False)

    def predict(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (N,) int64, probabilities (N, classes) float32)`` for a batch of images."""
        probs = self.predict_proba(images)
        return probs.argmax(axis=1).astype(np.int64), probs
