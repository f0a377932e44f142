"""What travels inside every exported file (ONNX ``metadata_props``, TorchScript and torch.export extra files)."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ignite_lenet.spec import CLASS_NAMES, INPUT_NAME, INPUT_SHAPE, PREPROCESSING


def checkpoint_summary(path: Path, checkpoint: dict[str, Any]) -> tuple[int, float]:
    """``(epoch, val_accuracy)`` of a best-model checkpoint, as plain numbers (``ValueError`` if they are not)."""
    values = []
    for key, kind in (("epoch", int), ("val_accuracy", float)):
        value = checkpoint.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{path}: its {key!r} is {type(value).__name__} {str(value)[:40]}, not a number")
        values.append(kind(value))
    return values[0], values[1]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_metadata(checkpoint_path: Path, checkpoint: dict[str, Any], output: str,
                   test_accuracy: float | None) -> dict[str, str]:
    """String key/values that travel inside every exported file (ONNX ``metadata_props``, extra files)."""
    import ignite
    import onnx

    epoch, val_accuracy = checkpoint_summary(checkpoint_path, checkpoint)
    return {
        "model": "LeNet-5 (ignite_lenet)",
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(["batch", *INPUT_SHAPE]),
        "output": output,
        "preprocessing": json.dumps(PREPROCESSING),
        "class_names": json.dumps(list(CLASS_NAMES)),
        "source_checkpoint": checkpoint_path.name,
        "source_checkpoint_sha256": sha256_file(checkpoint_path),
        "best_epoch": str(epoch),
        "val_accuracy": f"{val_accuracy:.6f}",
        "test_accuracy": "not checked (MNIST not found)" if test_accuracy is None else f"{test_accuracy:.6f}",
        "torch_version": torch.__version__,
        "ignite_version": ignite.__version__,
        "onnx_version": onnx.__version__,
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
