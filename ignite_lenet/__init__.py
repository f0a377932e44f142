"""ignite_lenet: LeNet-5 on MNIST with pytorch-ignite, exported to TorchScript / ONNX / torch.export,
served with ONNX Runtime, benchmarked on CPU and GPU.

    from ignite_lenet import TrainConfig, train, load_model
    result = train(epochs=3, data_dir="../shared/datasets")     # a TrainResult: .model, .history, .metrics, .plot()

The names below are imported on first use (PEP 562), so ``import ignite_lenet.inference`` (the ONNX serving
path) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrainConfig": "config",
    "RECIPES": "config",
    "train": "training.run",
    "build_training": "training.run",
    "Training": "training.run",
    "TrainResult": "training.run",
    "load_model": "checkpoints",
    "LeNet5": "model",
}
# spelled out (not ``[*_EXPORTS]``) so linters see the TYPE_CHECKING imports below as the public names they are
__all__ = ["__version__", "TrainConfig", "RECIPES", "train", "build_training", "Training", "TrainResult", "load_model",
           "LeNet5"]

if TYPE_CHECKING:  # pragma: no cover
    from ignite_lenet.training.run import Training, TrainResult, build_training, train
    from ignite_lenet.checkpoints import load_model
    from ignite_lenet.config import RECIPES, TrainConfig
    from ignite_lenet.model import LeNet5


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
