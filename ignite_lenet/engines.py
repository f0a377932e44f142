"""Ignite engines: the trainer (its step in ``graphed``) and the evaluators (Accuracy, Loss, ConfusionMatrix)."""

from __future__ import annotations

import torch
from ignite.engine import Engine, create_supervised_evaluator
from ignite.metrics import Accuracy, ConfusionMatrix, Loss
from torch import nn

from .graphed import GraphedTrainStep, create_optimizer  # noqa: F401 - re-exported
from .model import NUM_CLASSES


def create_loss(label_smoothing: float = 0.0) -> nn.Module:
    """The notebook's training criterion: cross-entropy summed over the batch (not averaged)."""
    return nn.CrossEntropyLoss(reduction="sum", label_smoothing=label_smoothing)


def create_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, label_smoothing: float = 0.0,
    cuda_graphs: bool = False,
) -> GraphedTrainStep:
    """The training step: summed cross-entropy (the notebook's ``reduction="sum"``), backward, optimizer step;
    replayed from a CUDA graph with ``cuda_graphs`` (see ``graphed``), eager otherwise, the same arithmetic."""
    return GraphedTrainStep(model, optimizer, batch_size, label_smoothing=label_smoothing, use_graph=cuda_graphs)


def create_trainer(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, batch_size: int, label_smoothing: float = 0.0,
    cuda_graphs: bool = False,
) -> Engine:
    """Ignite trainer running ``create_train_step``; its ``state.output`` is the batch's per-sample loss as a
    0-d tensor on the model's device (read it every N steps with ``graphed.attach_loss_readout``)."""
    return Engine(create_train_step(model, optimizer, batch_size, label_smoothing, cuda_graphs))


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
