"""ignite_lenet: LeNet-5 on MNIST with pytorch-ignite, exported to TorchScript / ONNX / torch.export,
served with ONNX Runtime, benchmarked on CPU and GPU.

    from ignite_lenet import TrainConfig, train, load_model
    result = train(epochs=3, data_dir="../shared/datasets")     # a TrainResult: .model, .history, .metrics, .plot()

The names below are imported on first use (PEP 562), so ``import ignite_lenet.inference`` (the ONNX serving
path) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# cuBLAS's documented setting for reproducible results (CUDA >= 10.2), which ``--deterministic`` needs.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"

# Set here, before anything of ours can run a matrix product: PyTorch reads the variable once per process (the
# workspace size when it creates its first cuBLAS handle; the deterministic check at the first GEMM, whose answer
# it keeps), so a ``train(deterministic=True)`` after any CUDA work in the same process (a notebook's second run,
# a test after other CUDA tests) would raise if ``configure_determinism`` set it only then. Its cost is nothing
# for other runs: it only sizes the workspace PyTorch hands cuBLAS, 8 x 4 MiB = 32 MiB per handle, which is
# PyTorch's own default on Hopper GPUs such as the H200 (elsewhere the default is ``:4096:2:16:8``, about 8 MiB,
# so 24 MiB more there); it selects no deterministic kernels (``torch.use_deterministic_algorithms`` does that).
# Newer torch no longer checks the variable (PyTorch #161749: cuBLAS's per-stream workspaces are deterministic
# without it), older ones do; it is set either way. A value the user set wins. No torch import: the ONNX serving
# path stays torch-free.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)

_EXPORTS = {
    "TrainConfig": "config",
    "RECIPES": "config",
    "train": "training.job",
    "build_training": "training.job",
    "Training": "training.job",
    "TrainResult": "training.job",
    "load_model": "checkpoints",
    "LeNet5": "model",
}
# spelled out (not ``[*_EXPORTS]``) so linters see the TYPE_CHECKING imports below as the public names they are
__all__ = ["__version__", "TrainConfig", "RECIPES", "train", "build_training", "Training", "TrainResult", "load_model",
           "LeNet5"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers; __getattr__ imports them (ruff cannot see __all__'s)
    from ignite_lenet.checkpoints import load_model  # noqa: F401
    from ignite_lenet.config import RECIPES, TrainConfig  # noqa: F401
    from ignite_lenet.model import LeNet5  # noqa: F401
    from ignite_lenet.training.job import Training, TrainResult, build_training, train  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
