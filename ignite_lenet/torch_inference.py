"""The torch-side predictors: ``TorchScriptClassifier`` (``.torchscript.pt``) and ``ExportedProgramClassifier``
(``.pt2``), with ``OnnxClassifier``'s interface. Kept apart so that ``inference`` (ONNX) never imports torch.
"""

from __future__ import annotations

import json
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .inference import _Classifier

METADATA_FILE = "metadata.json"  # the extra file export.py writes into TorchScript and .pt2 archives


def _metadata(path: Path, text: str) -> dict[str, str]:
    try:
        metadata = json.loads(text or "{}")
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its {METADATA_FILE} is not JSON") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: its {METADATA_FILE} is not a JSON object")
    return {str(k): str(v) for k, v in metadata.items()}


class _TorchClassifier(_Classifier):
    module: torch.nn.Module
    device: str

    def _run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


class TorchScriptClassifier(_TorchClassifier):
    """An exported ``lenet5.torchscript.pt`` run by ``torch.jit.load`` (same interface as ``OnnxClassifier``)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        extra = {METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit's deprecation notice
            try:
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
            except Exception as e:
                raise ValueError(f"{path}: not a loadable TorchScript model ({type(e).__name__})") from None
        self.device = device
        self.path = path
        super().__init__(_metadata(path, extra[METADATA_FILE]), source=str(path))


class ExportedProgramClassifier(_TorchClassifier):
    """An exported ``lenet5.pt2`` run by ``torch.export.load(...).module()`` (same interface as ``OnnxClassifier``)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        if not zipfile.is_zipfile(path):  # torch.export.load would log a whole traceback before raising
            raise ValueError(f"{path}: not a loadable torch.export program (not a .pt2 archive)")
        extra = {METADATA_FILE: ""}
        logger = logging.getLogger("torch.export")
        level = logger.level
        logger.setLevel(logging.ERROR)  # its deserialisation warnings repeat the error raised below; restored after
        try:
            program = torch.export.load(str(path), extra_files=extra)
            if device != "cpu":  # exported modules move with a pass, not .to()
                program = torch.export.passes.move_to_device_pass(program, device)
            self.module = program.module()
        except Exception as e:
            raise ValueError(f"{path}: not a loadable torch.export program ({type(e).__name__})") from None
        finally:
            logger.setLevel(level)
        self.device = device
        self.path = path
        super().__init__(_metadata(path, extra[METADATA_FILE]), source=str(path))
