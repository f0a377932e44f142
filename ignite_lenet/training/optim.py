"""The optimizer of a run: Adam or AdamW, fused (or capturable) where a CUDA graph replays the step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ignite_lenet.config import OPTIMIZERS


def create_optimizer(params: Iterable[Any], name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                     device: torch.device | str = "cpu", graphs: bool = False) -> torch.optim.Optimizer:
    """Adam (L2 ``weight_decay``) or AdamW (decoupled), fused: one kernel for all parameters, on CPU and CUDA.

    ``graphs=True`` (on CUDA) adds ``capturable=True``, which ``TrainStep`` needs to capture ``step()``;
    the math is the same. The learning rate stays a float: the graph reads it from its own device tensor.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be 0 or positive, got {weight_decay!r}")
    capturable = graphs and torch.device(device).type == "cuda"
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=capturable)
