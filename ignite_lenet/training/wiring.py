"""The built-in handlers of a run as one ordered table, ``HANDLERS``: ``attach_handlers`` walks it, and what was
attached (``Attached``), what the training checkpoint holds (``to_save``) and what ``--resume`` requires of a
checkpoint (``RESUME_KEYS``) are read from it.

A new handler is its ``attach_*`` function (``handlers.py``), its row here and its ``TrainConfig`` field.

The order is the order Ignite fires the handlers of an event (the order they were added). At ``EPOCH_COMPLETED``:
  1. the EMA update (per iteration, before the evaluations: each epoch's EMA includes its last step);
  2. the evaluations and the best-model checkpoint (which reads them);
  3. the history (it records the lr the epoch trained with, so before the scheduler's step);
  4. the lr scheduler's step, then early stopping;
  5. the log line, the curves, the progress bar and TensorBoard (rank 0);
  6. the training checkpoint, last: the file written at an epoch's end holds everything the epoch produced.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, get_type_hints

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.engine.events import RemovableEventHandle
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from ignite_lenet.config import TrainConfig
from ignite_lenet.spec import CURVES, HISTORY, TENSORBOARD_DIR
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import Engines
from ignite_lenet.training.handlers import (
    attach_best_checkpoint,
    attach_curves,
    attach_early_stopping,
    attach_ema,
    attach_epoch_log,
    attach_epoch_seeding,
    attach_evaluation,
    attach_history,
    attach_lr_scheduler,
    attach_one_cycle,
    attach_progress_bar,
    attach_tensorboard,
    attach_terminate_on_nan,
    attach_training_checkpoint,
)
from ignite_lenet.training.state import SchedulerPosition, Selection, Value


@dataclass
class Wiring:
    """What the handlers are attached with: the run's pieces, and the handlers attached so far, by row name."""

    cfg: TrainConfig
    engines: Engines
    loaders: dict[str, InMemoryLoader]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    output_dir: Path
    logger: logging.Logger
    rank: int
    attached: dict[str, Any] = field(default_factory=dict)
    to_save: dict[str, Any] = field(default_factory=dict)

    @property
    def trainer(self) -> Engine:
        return self.engines.trainer

    @cached_property
    def selection(self) -> Selection:
        """Which weights are best (raw or EMA), read by the best-model checkpoint and early stopping."""
        ema_model = self.engines.ema.ema_model if self.engines.ema is not None else None
        return Selection(self.model, self.engines.val_evaluator, ema_model, self.engines.ema_evaluator)


def _always(cfg: TrainConfig) -> bool:
    return True


@dataclass(frozen=True)
class Handler:
    """One row of ``HANDLERS``: ``attach(*arguments(wiring))`` attaches it when ``enabled(cfg)`` (and, with
    ``rank0_only``, on rank 0 only). ``state`` is its key in ``training_checkpoint.pt`` (what ``--resume``
    restores), or a function of what ``attach`` returned giving several keys; ``None``: nothing to save."""

    name: str
    attach: Callable[..., Any]
    arguments: Callable[[Wiring], tuple[Any, ...]]
    enabled: Callable[[TrainConfig], bool] = _always
    state: str | Callable[[Any], dict[str, Any]] | None = None
    rank0_only: bool = False

    def saved(self, attached: Any) -> dict[str, Any]:
        """The entries this handler adds to the training checkpoint."""
        if self.state is None:
            return {}
        return {self.state: attached} if isinstance(self.state, str) else self.state(attached)


def attach_evaluations(trainer: Engine, engines: Engines, loaders: dict[str, InMemoryLoader]
                       ) -> list[RemovableEventHandle]:
    """The evaluations after each epoch: the train curves' sample, validation, and the EMA's validation."""
    evaluations = [attach_evaluation(trainer, engines.train_evaluator, loaders["train_eval"]),
                   attach_evaluation(trainer, engines.val_evaluator, loaders["val"])]
    if engines.ema_evaluator is not None:
        evaluations.append(attach_evaluation(trainer, engines.ema_evaluator, loaders["val"]))
    return evaluations


def attach_schedule(trainer: Engine, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
                    ) -> CosineAnnealingLR | OneCycleLR:
    """``--schedule``'s lr scheduler: one-cycle stepped per iteration, or the notebook's per-epoch cosine."""
    if cfg.schedule == "onecycle":
        return attach_one_cycle(trainer, optimizer, cfg.lr, cfg.epochs * steps_per_epoch, cfg.pct_start)
    return attach_lr_scheduler(trainer, optimizer, cfg.t_max, cfg.eta_min)


def _ema_state(ema: Any) -> dict[str, Any]:
    """The average and its momentum schedule's position, for an exact resume."""
    return {"ema_model": ema.ema_model, "ema_momentum": SchedulerPosition(ema.momentum_scheduler)}


def _evaluators(w: Wiring) -> dict[str, Engine]:
    """TensorBoard's tags and the evaluators it logs."""
    evaluators = {"train": w.engines.train_evaluator, "val": w.engines.val_evaluator}
    if w.engines.ema_evaluator is not None:
        evaluators["val_ema"] = w.engines.ema_evaluator
    return evaluators


HANDLERS: tuple[Handler, ...] = (
    Handler("epoch_seeding", attach_epoch_seeding, lambda w: (w.trainer, w.loaders["train"])),
    Handler("terminate_on_nan", attach_terminate_on_nan, lambda w: (w.trainer, w.engines.readout)),
    Handler("ema", attach_ema, lambda w: (w.trainer, w.engines.ema), enabled=lambda cfg: cfg.ema_decay > 0,
            state=_ema_state),
    Handler("evaluations", attach_evaluations, lambda w: (w.trainer, w.engines, w.loaders)),
    Handler("best_checkpoint", attach_best_checkpoint,
            lambda w: (w.trainer, w.selection, w.cfg.to_dict(), w.output_dir), state="best_checkpoint"),
    Handler("history", attach_history,
            lambda w: (w.trainer, w.engines.train_evaluator, w.engines.val_evaluator, w.optimizer,
                       w.output_dir / HISTORY if w.rank == 0 else None, w.engines.ema_evaluator), state="history"),
    Handler("lr_scheduler", attach_schedule, lambda w: (w.trainer, w.optimizer, w.cfg, len(w.loaders["train"])),
            state="lr_scheduler"),
    Handler("early_stopping", attach_early_stopping, lambda w: (w.trainer, w.selection, w.cfg.patience),
            enabled=lambda cfg: cfg.patience is not None, state="early_stopping"),
    Handler("epoch_log", attach_epoch_log, lambda w: (w.trainer, w.attached["history"], w.logger), rank0_only=True),
    Handler("curves", attach_curves, lambda w: (w.trainer, w.attached["history"], w.output_dir / CURVES),
            rank0_only=True),
    Handler("progress_bar", attach_progress_bar, lambda w: (w.trainer, w.engines.readout),
            enabled=lambda cfg: cfg.progress, rank0_only=True),
    Handler("tensorboard", attach_tensorboard,
            lambda w: (w.trainer, w.optimizer, _evaluators(w), w.output_dir / TENSORBOARD_DIR, w.engines.readout),
            enabled=lambda cfg: cfg.tensorboard, rank0_only=True),
    Handler("training_checkpoint", attach_training_checkpoint,
            lambda w: (w.trainer, {**w.to_save, "config": Value(w.cfg.to_dict)}, w.output_dir)),
)

# What every training checkpoint holds besides the handlers' state: what the run is and where it stands.
RUN_STATE = ("trainer", "model", "optimizer")
RESUME_KEYS = ("config", *RUN_STATE, *(h.state for h in HANDLERS if h.enabled is _always and isinstance(h.state, str)))


def _returns(handler: Handler) -> Any:
    """The type ``handler.attach`` returns (or ``None`` when the row is not attached)."""
    return get_type_hints(handler.attach)["return"] | None


Attached = dataclasses.make_dataclass(
    "Attached",
    [(h.name, _returns(h), field(default=None)) for h in HANDLERS]
    + [("to_save", dict[str, Any], field(default_factory=dict))],
)
Attached.__module__ = __name__
Attached.__doc__ = ("What ``attach_handlers`` attached: one field per row of ``HANDLERS``, holding what its "
                    "``attach_*`` returned (inspect or remove it), ``None`` where the row was not attached; "
                    "``to_save``: what training_checkpoint.pt holds and --resume restores.")


def attach_handlers(cfg: TrainConfig, engines: Engines, loaders: dict[str, InMemoryLoader], model: nn.Module,
                    optimizer: torch.optim.Optimizer, output_dir: Path, logger: logging.Logger) -> Any:
    """Every built-in handler, in ``HANDLERS``' order (the order Ignite fires them); returns ``Attached``."""
    w = Wiring(cfg, engines, loaders, model, optimizer, output_dir, logger, rank=idist.get_rank())
    w.to_save.update(trainer=engines.trainer, model=model, optimizer=optimizer)
    for handler in HANDLERS:
        if not handler.enabled(cfg) or (handler.rank0_only and w.rank != 0):
            continue
        w.attached[handler.name] = handler.attach(*handler.arguments(w))
        w.to_save.update(handler.saved(w.attached[handler.name]))
    return Attached(**w.attached, to_save=w.to_save)
