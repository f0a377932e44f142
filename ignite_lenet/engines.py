"""Ignite engines: the supervised trainer and the evaluators (Accuracy and Loss, optionally ConfusionMatrix)."""

from __future__ import annotations

from collections.abc import Iterable

import ignite.distributed as idist
import torch
from ignite.engine import Engine, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, ConfusionMatrix, Loss
from torch import nn

from .model import NUM_CLASSES


def create_loss(label_smoothing: float = 0.0) -> nn.Module:
    """The notebook's training criterion: cross-entropy summed over the batch (not averaged)."""
    return nn.CrossEntropyLoss(reduction="sum", label_smoothing=label_smoothing)


def create_optimizer(
    parameters: Iterable[torch.nn.Parameter], name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``Adam`` (the notebook's) or ``AdamW`` (decoupled weight decay), fused: one kernel for all parameters,
    the same math as the per-tensor loop."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    raise ValueError(f"optimizer must be adam or adamw, got {name!r}")


def create_trainer(
    model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str = "cpu",
    label_smoothing: float = 0.0,
) -> Engine:
    """Ignite supervised trainer with the summed cross-entropy; its output is the batch's mean loss.

    The criterion sums over the batch (the notebook's ``reduction="sum"``), so the gradient scale is the
    notebook's; the engine's ``state.output`` is divided by the batch size so that progress bars and
    ``TerminateOnNan`` see a per-sample loss, the unit every reported loss uses (averaged over all processes
    in a distributed run).
    """
    def per_sample_loss(x: torch.Tensor, y: torch.Tensor, y_pred: torch.Tensor, loss: torch.Tensor) -> float:
        if idist.get_world_size() > 1:
            # every rank sees the same value, so TerminateOnNan stops all of them at the same iteration
            # (a rank stopping alone would leave the others waiting in DDP's next all-reduce)
            return idist.all_reduce(loss.detach().clone()).item() / (y.shape[0] * idist.get_world_size())
        return loss.item() / y.shape[0]

    return create_supervised_trainer(
        model, optimizer, create_loss(label_smoothing), device=device, non_blocking=True, output_transform=per_sample_loss
    )


def create_evaluator(model: nn.Module, device: torch.device | str = "cpu", confusion_matrix: bool = False) -> Engine:
    """Ignite supervised evaluator computing ``accuracy`` and per-sample ``loss`` (and ``confusion_matrix``).

    Ignite's ``Loss`` metric expects a mean-reduced criterion and weights it by the batch size itself, so it
    gets ``CrossEntropyLoss()`` (mean), not the training criterion: feeding it ``reduction="sum"`` would
    report losses ``batch_size`` times too large. Metrics are all-reduced across processes in distributed runs.
    """
    metrics = {"accuracy": Accuracy(device=device), "loss": Loss(nn.CrossEntropyLoss(), device=device)}
    if confusion_matrix:
        metrics["confusion_matrix"] = ConfusionMatrix(num_classes=NUM_CLASSES, device=device)
    return create_supervised_evaluator(model, metrics=metrics, device=device, non_blocking=True)
