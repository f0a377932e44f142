"""The torch-side predictors: ``TorchScriptClassifier`` (``.torchscript.pt``) and ``ExportedProgramClassifier``
(``.pt2``), with ``OnnxClassifier``'s interface. Kept apart so that ``inference`` (ONNX) never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ignite_lenet.checkpoints import load_exported_program, load_torchscript
from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.spec import METADATA_FILE


def _metadata(path: Path, text: str) -> dict[str, str]:
    try:
        metadata = json.loads(text or "{}")
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its {METADATA_FILE} is not JSON") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: its {METADATA_FILE} is not a JSON object")
    return {str(k): str(v) for k, v in metadata.items()}


class _TorchClassifier(Classifier):
    """Opens a torch-exported file with its format's loader (which fills the metadata the export stored beside the
    program) and runs it under ``inference_mode``."""

    @staticmethod
    def _load(path: Path, device: str, extra_files: dict[str, str]) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def from_file(cls, path: str | Path, provider: str = "cpu", threads: int | None = None) -> _TorchClassifier:
        """What ``inference.load_classifier`` calls for every kind of model file: ``provider`` picks the device
        (``threads`` is ONNX Runtime's)."""
        return cls(path, device="cuda" if provider == "cuda" else "cpu")

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        extra = {METADATA_FILE: ""}
        self.module = self._load(path, device, extra)
        self.device = device
        self.path = path
        super().__init__(_metadata(path, extra[METADATA_FILE]), source=str(path))

    def _run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


class TorchScriptClassifier(_TorchClassifier):
    """An exported ``lenet5.torchscript.pt`` run by ``torch.jit.load`` (same interface as ``OnnxClassifier``)."""

    _load = staticmethod(load_torchscript)


class ExportedProgramClassifier(_TorchClassifier):
    """An exported ``lenet5.pt2`` run by ``torch.export.load(...).module()`` (same interface as ``OnnxClassifier``)."""

    _load = staticmethod(load_exported_program)
