"""The optimizer of a run: Adam or AdamW, fused (capturable where a CUDA graph replays the step; single-tensor
where the graph follows ``OneCycleLR``'s beta1), keeping its implementation when a checkpoint is loaded."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ignite_lenet.config import OPTIMIZERS


def create_optimizer(params: Iterable[Any], name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                     device: torch.device | str = "cpu", graphs: bool = False,
                     varying_betas: bool = False) -> torch.optim.Optimizer:
    """Adam (L2 ``weight_decay``) or AdamW (decoupled), fused: one kernel for all parameters, on CPU and CUDA.

    ``graphs=True`` (on CUDA) adds ``capturable=True``, which ``TrainStep`` needs to capture ``step()``;
    the math is the same. The learning rate stays a float: ``TrainStep`` hands the step its own device tensor.
    ``varying_betas=True`` with ``graphs`` on CUDA (a schedule that writes beta1 every step, ``OneCycleLR``)
    takes Adam's single-tensor capturable implementation instead: the fused kernel takes beta1 as a number,
    which a captured graph holds constant, while the single-tensor one computes with the beta1 tensor that
    ``TrainStep`` hands it (``step.reads_beta1_from_a_tensor``), so one graph follows the schedule. It launches
    a few kernels per parameter instead of one for all, inside the graph. CPU runs are fused whatever the flags.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be 0 or positive, got {weight_decay!r}")
    capturable = graphs and torch.device(device).type == "cuda"
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    if capturable and varying_betas:
        optimizer = kind(params, lr=lr, weight_decay=weight_decay, foreach=False, capturable=True)
    else:
        optimizer = kind(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=capturable)
    optimizer.register_load_state_dict_pre_hook(keep_implementation)
    return optimizer


IMPLEMENTATION = ("fused", "foreach", "capturable")  # how a process computes Adam's step, not training state


def keep_implementation(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any] | None:
    """``load_state_dict`` pre-hook: the loaded param groups keep this optimizer's ``IMPLEMENTATION`` flags.

    ``Optimizer.load_state_dict`` takes every param-group setting from the checkpoint, the implementation too, so
    a graphed one-cycle CUDA run's (single-tensor, ``capturable``) would make a CPU resume assert that
    capturable needs CUDA, and a CPU run's (fused) would make a graphed one-cycle CUDA resume hand the fused
    kernel a beta1 tensor. The flags chosen for this process stay; the state tensors are cast as they require.
    The caller's dict is not changed; groups that do not pair up are left for torch to refuse.
    """
    saved = state_dict["param_groups"]
    if len(saved) != len(optimizer.param_groups):
        return None
    groups = [{**group, **{key: own[key] for key in IMPLEMENTATION if key in own}}
              for group, own in zip(saved, optimizer.param_groups)]
    return {**state_dict, "param_groups": groups}
