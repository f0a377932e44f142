"""The Ignite engines of a run: the trainer (its step in ``step``, its loss readout attached) and the evaluators
(Accuracy, Loss, ConfusionMatrix). The product and the training benchmark both build them here.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from ignite.engine import Engine, create_supervised_evaluator
from ignite.handlers import EMAHandler
from ignite.metrics import Accuracy, ConfusionMatrix, Loss
from torch import nn

from ignite_lenet.files import WriteError
from ignite_lenet.spec import NUM_CLASSES
from ignite_lenet.training.handlers import LossReadout, attach_loss_readout
from ignite_lenet.training.step import TrainStep


GPU_READOUT_EVERY = 50


@dataclass
class Engines:
    """The Ignite engines of a run (``create_engines``): the trainer with its loss readout, the evaluators of the
    train curves and of validation, and with an EMA its handler and evaluator."""

    trainer: Engine
    readout: LossReadout
    train_evaluator: Engine
    val_evaluator: Engine
    ema: EMAHandler | None = None
    ema_evaluator: Engine | None = None


def create_trainer(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, batch_size: int, label_smoothing: float = 0.0,
    cuda_graphs: bool = False, readout_every: int | None = None,
) -> tuple[Engine, LossReadout]:
    """The Ignite trainer of a run and its loss readout: the product and the training benchmark both build it here.

    Its process function is ``TrainStep``: summed cross-entropy (the notebook's ``reduction="sum"``), backward,
    optimizer step, replayed from a CUDA graph with ``cuda_graphs``. ``state.output`` is the batch's per-sample
    loss as a 0-d tensor on the model's device; ``readout.value`` is the mean loss since the last reading, read
    every ``readout_every`` iterations and at each epoch's end (one host sync each; by default every iteration
    on CPU, every ``GPU_READOUT_EVERY`` on a GPU, where reading the loss waits for the GPU).
    """
    step = TrainStep(model, optimizer, batch_size, label_smoothing=label_smoothing, use_graph=cuda_graphs)
    if readout_every is None:
        readout_every = 1 if step.device.type == "cpu" else GPU_READOUT_EVERY
    trainer = Engine(step)
    return trainer, attach_loss_readout(trainer, step, readout_every)


def create_ema(model: nn.Module, decay: float, warmup_iters: int) -> EMAHandler:
    """Ignite's ``EMAHandler`` (not yet attached): ``ema = decay * ema + (1 - decay) * weights`` per iteration.

    The momentum (``1 - decay``) warms up linearly from 0.1 over ``warmup_iters`` iterations, so the average
    forgets the random initial weights quickly. It is computed from the iteration count, so a resumed run
    (with ``ema.ema_model`` restored) continues exactly. ``handlers.attach_ema`` attaches it.
    """
    momentum = 1.0 - decay
    return EMAHandler(model, momentum=momentum, momentum_warmup=max(momentum, 0.1), warmup_iters=max(1, warmup_iters))


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


# Ignite logs these (at ERROR, through its engines' loggers) before re-raising an exception out of ``Engine.run``
IGNITE_TERMINATING = ("Engine run is terminating due to exception", "Current run is terminating due to exception")


class _ReportedElsewhere(logging.Filter):
    """Drops Ignite's "... is terminating due to exception: ..." record while the exception being handled is one
    the command line reports in its own line: Ctrl-C (Ignite's message would be empty) or a file that cannot be
    written (the same message twice). Ignite logs it inside its ``except`` block, so ``sys.exc_info()`` is that
    exception. Every other exception keeps Ignite's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(IGNITE_TERMINATING):
            return True
        return not isinstance(sys.exc_info()[1], (KeyboardInterrupt, WriteError))


@contextmanager
def quiet_reported_errors(engines: Iterable[Engine | None]) -> Iterator[None]:
    """While the block runs, ``engines`` (and any other ``Engine``, such as the final test's evaluator) leave out
    Ignite's "terminating due to exception" line for Ctrl-C and write errors (``_ReportedElsewhere``); the
    loggers are as they were afterwards."""
    loggers = {logging.getLogger(f"{Engine.__module__}.{Engine.__name__}")}
    loggers.update(engine.logger for engine in engines if engine is not None)
    quiet = _ReportedElsewhere()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
