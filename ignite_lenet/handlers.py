"""Handlers wired onto the Ignite engines, one ``attach_*`` function each; every one returns what it attached.

Order matters at ``EPOCH_COMPLETED`` (Ignite fires handlers in the order they were added); ``train.py``
attaches: evaluators (with the best-model checkpoint and early stopping on the validation evaluator) ->
history -> lr scheduler step -> log line and curves -> training checkpoint, so the history records the lr
the epoch used and the checkpoint written at the end of an epoch holds everything that epoch produced.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping, ProgressBar, TerminateOnNan
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from . import artifacts, plots
from .data import InMemoryLoader


class History:
    """Per-epoch train/val loss and accuracy, learning rate and training time; the ``history.json`` content.

    It is part of the training checkpoint (``state_dict``/``load_state_dict``), so a resumed run continues
    the same curves.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {
            "train": {"loss": [], "accuracy": []},
            "val": {"loss": [], "accuracy": []},
            "lr": [],
            "epoch_time_s": [],
        }

    def record(self, train: Mapping[str, float], val: Mapping[str, float], lr: float, epoch_time_s: float) -> None:
        for split, metrics in (("train", train), ("val", val)):
            for key in ("loss", "accuracy"):
                self.data[split][key].append(float(metrics[key]))
        self.data["lr"].append(float(lr))
        self.data["epoch_time_s"].append(float(epoch_time_s))

    @property
    def epochs(self) -> int:
        return len(self.data["lr"])

    def best_epoch(self) -> int | None:
        """1-based epoch of the lowest validation loss (the first one on ties), ``None`` before any epoch."""
        losses = self.data["val"]["loss"]
        return min(range(len(losses)), key=losses.__getitem__) + 1 if losses else None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def state_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.data = copy.deepcopy(dict(state))


class Value:
    """Adapts a value read at save time to Ignite's ``state_dict`` protocol, so ``Checkpoint`` can store plain
    fields (epoch, metrics, config) beside the model: ``Checkpoint({"epoch": Value(lambda: trainer.state.epoch)})``."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def state_dict(self) -> Any:
        return self._get()

    def load_state_dict(self, state: Any) -> None:  # read-only: nothing to restore
        pass


class ReplacingDiskSaver(DiskSaver):
    """``DiskSaver`` for a fixed file name that is replaced in place.

    Ignite removes the previous file before writing the next one; with one fixed name that would leave a
    moment with no file at all. The atomic write (temporary file + rename) already replaces it, so the
    removal is skipped and a crash at any point leaves the last good file readable.
    """

    def __init__(self, dirname: str | Path, **kwargs: Any) -> None:
        super().__init__(dirname, atomic=True, require_empty=False, **kwargs)

    def remove(self, filename: str) -> None:
        pass


def attach_epoch_seeding(trainer: Engine, loader: InMemoryLoader) -> None:
    """Before each epoch, select the loader's permutation for that epoch (deterministic, resumable)."""
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: loader.set_epoch(engine.state.epoch))


def attach_lr_scheduler(
    trainer: Engine, optimizer: torch.optim.Optimizer, t_max: int, eta_min: float
) -> CosineAnnealingLR:
    """``CosineAnnealingLR(T_max, eta_min)`` stepped at the end of every epoch, as the notebook did.

    Epoch ``e`` trains at the schedule's value after ``e - 1`` steps: 1e-3, 5.05e-4, 1e-5, 5.05e-4, ... with
    the defaults. Attach it after ``attach_history`` so the history records the lr the epoch trained with.
    (Ignite's ``LRScheduler`` wrapper is not used: it emulates ``step()`` through ``get_lr()``, which with
    torch 2.14's ``CosineAnnealingLR`` gives 1.99e-3 for the first epoch.)
    """
    scheduler = CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: scheduler.step())
    return scheduler


def attach_one_cycle(
    trainer: Engine, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int
) -> OneCycleLR:
    """``OneCycleLR`` stepped after every iteration: warm-up to ``max_lr`` over 15% of the steps, then cosine
    annealing to ``max_lr / 2.5e5`` at the last one (``--schedule onecycle``)."""
    scheduler = OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=0.15)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: scheduler.step())
    return scheduler


def attach_terminate_on_nan(trainer: Engine) -> TerminateOnNan:
    """Stop training when the loss becomes NaN or infinite (``train.run`` then raises ``TrainingDiverged``)."""
    handler = TerminateOnNan()
    handler.logger.setLevel(logging.ERROR)  # Ignite logs it twice; the run reports it once, as an error
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)
    return handler


def attach_evaluation(trainer: Engine, evaluator: Engine, loader: InMemoryLoader) -> None:
    """Run ``evaluator`` over ``loader`` after every training epoch."""
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(loader))


def attach_history(
    trainer: Engine,
    train_evaluator: Engine,
    val_evaluator: Engine,
    optimizer: torch.optim.Optimizer,
    path: str | Path | None,
) -> History:
    """Record the evaluators' metrics, the epoch's lr and training time; rewrite ``history.json`` each epoch.

    The time is Ignite's ``state.times["EPOCH_COMPLETED"]`` as seen by handlers: the training loop alone,
    without evaluation. ``path=None`` records without writing (processes other than rank 0).
    """
    history = History()

    def record(engine: Engine) -> None:
        history.record(
            train_evaluator.state.metrics,
            val_evaluator.state.metrics,
            lr=optimizer.param_groups[0]["lr"],
            epoch_time_s=engine.state.times[Events.EPOCH_COMPLETED.name],
        )
        if path is not None:
            artifacts.write_json(path, history.to_dict())

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)
    return history


def attach_best_checkpoint(
    val_evaluator: Engine, trainer: Engine, model: torch.nn.Module, config: Mapping[str, Any], output_dir: str | Path
) -> Checkpoint:
    """Keep ``best_model.pt``: the weights of the epoch with the lowest validation loss, with its metadata.

    The file is ``{"model", "config", "epoch", "val_loss", "val_accuracy"}``, loadable with
    ``torch.load(path, weights_only=True)``, replaced atomically when a later epoch does better.
    """
    to_save = {
        "model": model,
        "config": Value(lambda: dict(config)),
        "epoch": Value(lambda: trainer.state.epoch),
        "val_loss": Value(lambda: float(val_evaluator.state.metrics["loss"])),
        "val_accuracy": Value(lambda: float(val_evaluator.state.metrics["accuracy"])),
    }
    handler = Checkpoint(
        to_save,
        ReplacingDiskSaver(output_dir),
        filename_pattern=artifacts.BEST_MODEL,
        score_function=lambda engine: -engine.state.metrics["loss"],
        score_name="neg_val_loss",
        n_saved=1,
    )
    val_evaluator.add_event_handler(Events.COMPLETED, handler)
    return handler


def attach_early_stopping(val_evaluator: Engine, trainer: Engine, patience: int) -> EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation loss."""
    handler = EarlyStopping(patience=patience, score_function=lambda engine: -engine.state.metrics["loss"], trainer=trainer)
    val_evaluator.add_event_handler(Events.COMPLETED, handler)
    return handler


def attach_training_checkpoint(trainer: Engine, to_save: Mapping[str, Any], output_dir: str | Path) -> Checkpoint:
    """Write ``training_checkpoint.pt`` (trainer, model, optimizer, scheduler, ...) at the end of every epoch.

    Attach it last, so the file holds the whole epoch; ``--resume`` restores it with ``Checkpoint.load_objects``.
    """
    handler = Checkpoint(
        dict(to_save), ReplacingDiskSaver(output_dir), filename_pattern=artifacts.TRAINING_CHECKPOINT, n_saved=1
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    return handler


def attach_curves(trainer: Engine, history: History, path: str | Path) -> None:
    """Redraw ``curves.png`` after every epoch, so a long run can be watched."""
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda: plots.plot_curves(history.to_dict(), path, history.best_epoch())
    )


def attach_epoch_log(trainer: Engine, history: History, logger: logging.Logger) -> None:
    """One line per epoch: epoch, lr, train/val loss and accuracy, time, and "new best" when val loss improved."""

    def log(engine: Engine) -> None:
        h = history.data
        epoch = history.epochs
        best = " new best" if history.best_epoch() == epoch else ""
        logger.info(
            f"epoch {engine.state.epoch:>3}/{engine.state.max_epochs}  lr {h['lr'][-1]:.2e}  "
            f"train loss {h['train']['loss'][-1]:.4f} acc {100 * h['train']['accuracy'][-1]:6.2f}%  "
            f"val loss {h['val']['loss'][-1]:.4f} acc {100 * h['val']['accuracy'][-1]:6.2f}%  "
            f"{h['epoch_time_s'][-1]:5.1f}s{best}"
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, log)


def attach_progress_bar(trainer: Engine) -> ProgressBar | None:
    """Ignite's tqdm ``ProgressBar`` with the running per-sample loss, on a terminal only."""
    if not sys.stderr.isatty():
        return None
    bar = ProgressBar(persist=False)
    bar.attach(trainer, output_transform=lambda loss: {"loss": loss})
    return bar
