"""Handlers wired onto the Ignite engines, one ``attach_*`` function each; every one returns what it attached.

Order matters at ``EPOCH_COMPLETED`` (Ignite fires handlers in the order they were added); ``api.py``
attaches: evaluators (with the best-model checkpoint and early stopping) -> history -> lr scheduler step ->
log line and curves -> training checkpoint, so the history records the lr the epoch used and the checkpoint
written at the end of an epoch holds everything that epoch produced. Handlers a user attaches afterwards
run after all of these.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.engine.events import RemovableEventHandle
from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping, EMAHandler, ProgressBar, TerminateOnNan
from ignite.handlers import global_step_from_engine
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from . import artifacts, plots
from .data import InMemoryLoader
from .graphed import LossReadout
from .model import plain_state_dict


class History:
    """Per-epoch train/val loss and accuracy (and the EMA weights' val metrics), learning rate and training
    time; the ``history.json`` content.

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

    def record(self, train: Mapping[str, float], val: Mapping[str, float], lr: float, epoch_time_s: float,
               val_ema: Mapping[str, float] | None = None) -> None:
        splits = [("train", train), ("val", val)] + ([("val_ema", val_ema)] if val_ema is not None else [])
        for split, metrics in splits:
            self.data.setdefault(split, {"loss": [], "accuracy": []})
            for key in ("loss", "accuracy"):
                self.data[split][key].append(float(metrics[key]))
        self.data["lr"].append(float(lr))
        self.data["epoch_time_s"].append(float(epoch_time_s))

    @property
    def epochs(self) -> int:
        return len(self.data["lr"])

    def best_epoch(self) -> int | None:
        """1-based epoch of the lowest validation loss, raw or EMA weights (the first one on ties), ``None``
        before any epoch."""
        losses = list(self.data["val"]["loss"])
        if "val_ema" in self.data:
            losses = [min(a, b) for a, b in zip(losses, self.data["val_ema"]["loss"])]
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


class SchedulerPosition:
    """The position (``event_index``) of an Ignite parameter scheduler as checkpointable state.

    The scheduler's own ``state_dict`` holds its lambda object, which ``torch.load(weights_only=True)`` refuses;
    its position is all a resume needs (the rest is rebuilt from the configuration).
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def state_dict(self) -> dict[str, int]:
        return {"event_index": int(self.scheduler.event_index)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.scheduler.event_index = int(state["event_index"])


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


def attach_epoch_seeding(trainer: Engine, loader: InMemoryLoader) -> RemovableEventHandle:
    """Before each epoch, select the loader's permutation for that epoch (deterministic, resumable)."""

    def seed_epoch(engine: Engine) -> None:
        loader.set_epoch(engine.state.epoch)

    return trainer.add_event_handler(Events.EPOCH_STARTED, seed_epoch)


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
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _stepper(scheduler))
    return scheduler


def attach_one_cycle(
    trainer: Engine, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.15
) -> OneCycleLR:
    """``OneCycleLR`` stepped after every iteration: warm-up to ``max_lr`` over ``pct_start`` of the steps,
    then cosine annealing to ``max_lr / 2.5e5`` at the last one (``--schedule onecycle``).

    Raises ``ValueError`` where torch's ``OneCycleLR`` would divide by zero when built: a warm-up of exactly one
    step (``pct_start * total_steps == 1``, e.g. ``--pct-start 0.2`` of 5 steps).
    """
    if float(pct_start * total_steps) - 1 == 0:  # OneCycleLR's first phase would end at step 0
        raise ValueError(f"--schedule onecycle: --pct-start {pct_start} of {total_steps} training steps is a "
                         f"one-step warm-up, which torch's OneCycleLR cannot schedule; change --pct-start, "
                         f"--epochs or --epoch-length")
    scheduler = OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _stepper(scheduler))
    return scheduler


def _stepper(scheduler: torch.optim.lr_scheduler.LRScheduler) -> Callable[[], None]:
    def step_lr_scheduler() -> None:
        scheduler.step()

    return step_lr_scheduler


def attach_terminate_on_nan(trainer: Engine, readout: LossReadout | None = None) -> TerminateOnNan:
    """Stop training when the loss becomes NaN or infinite (``train`` then raises ``TrainingDiverged``).

    With a ``readout`` (``graphed.attach_loss_readout``, attached before) it checks the mean loss of the steps
    since each reading, when the readout reads it, without waiting for a GPU in between; without one, the
    trainer's output after every iteration.
    """
    if readout is None:
        handler, event = TerminateOnNan(), Events.ITERATION_COMPLETED
    else:
        handler, event = TerminateOnNan(output_transform=lambda _: readout.value), readout.event
    handler.logger.setLevel(logging.ERROR)  # Ignite logs it twice; the run reports it once, as an error
    trainer.add_event_handler(event, handler)
    return handler


def attach_evaluation(trainer: Engine, evaluator: Engine, loader: InMemoryLoader) -> RemovableEventHandle:
    """Run ``evaluator`` over ``loader`` after every training epoch."""

    def evaluate() -> None:
        evaluator.run(loader)

    return trainer.add_event_handler(Events.EPOCH_COMPLETED, evaluate)


def attach_ema(trainer: Engine, model: torch.nn.Module, decay: float, warmup_iters: int) -> EMAHandler:
    """Ignite's ``EMAHandler``: after every iteration, ``ema = decay * ema + (1 - decay) * weights``.

    The momentum (``1 - decay``) warms up linearly from 0.1 over ``warmup_iters`` iterations, so the average
    forgets the random initial weights quickly. It is computed from the iteration count, so a resumed run
    (with ``ema.ema_model`` restored) continues exactly.
    """
    momentum = 1.0 - decay
    ema = EMAHandler(model, momentum=momentum, momentum_warmup=max(momentum, 0.1), warmup_iters=max(1, warmup_iters))
    ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    return ema


class Selection:
    """Which weights of the epoch are the candidate for the best checkpoint: the raw model's or the EMA's.

    Its ``score`` (negated validation loss of the better of the two) drives the best-model ``Checkpoint`` and
    early stopping when the run keeps an EMA; without one, Ignite's default score function on the validation
    evaluator does the same.
    """

    def __init__(self, model: torch.nn.Module, val_evaluator: Engine,
                 ema_model: torch.nn.Module | None = None, ema_evaluator: Engine | None = None) -> None:
        self.model, self.val_evaluator = model, val_evaluator
        self.ema_model, self.ema_evaluator = ema_model, ema_evaluator

    def use_ema(self) -> bool:
        if self.ema_evaluator is None:
            return False
        return self.ema_evaluator.state.metrics["loss"] < self.val_evaluator.state.metrics["loss"]

    def weights(self) -> str:
        return "ema" if self.use_ema() else "raw"

    def metrics(self) -> Mapping[str, float]:
        return (self.ema_evaluator if self.use_ema() else self.val_evaluator).state.metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The chosen weights as a plain ``LeNet5`` state_dict (unwrapped, standardisation folded in)."""
        return plain_state_dict(self.ema_model if self.use_ema() else self.model)

    def score(self, engine: Engine | None = None) -> float:
        return -float(self.metrics()["loss"])


def attach_best_checkpoint(
    trainer: Engine, selection: Selection, config: Mapping[str, Any], output_dir: str | Path
) -> Checkpoint:
    """Keep ``best_model.pt``: the weights of the epoch with the lowest validation loss, with its metadata.

    The file is ``{"model", "config", "epoch", "val_loss", "val_accuracy"}`` (plus ``"weights": "raw" | "ema"``
    when the run keeps an EMA), loadable with ``torch.load(path, weights_only=True)``, replaced atomically when
    a later epoch does better. ``"model"`` is always a plain ``LeNet5`` state_dict.
    """
    to_save: dict[str, Any] = {
        "model": Value(selection.state_dict),
        "config": Value(lambda: dict(config)),
        "epoch": Value(lambda: trainer.state.epoch),
        "val_loss": Value(lambda: float(selection.metrics()["loss"])),
        "val_accuracy": Value(lambda: float(selection.metrics()["accuracy"])),
    }
    if selection.ema_evaluator is None:
        score_function, engine = Checkpoint.get_default_score_fn("loss", -1.0), selection.val_evaluator
        event = Events.COMPLETED
    else:  # two evaluators compete: score once both have run, at the trainer's epoch end
        to_save["weights"] = Value(selection.weights)
        score_function, engine, event = selection.score, trainer, Events.EPOCH_COMPLETED
    handler = Checkpoint(to_save, ReplacingDiskSaver(output_dir), filename_pattern=artifacts.BEST_MODEL,
                         score_function=score_function, score_name="neg_val_loss", n_saved=1)
    engine.add_event_handler(event, handler)
    return handler


def attach_early_stopping(trainer: Engine, selection: Selection, patience: int) -> EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation loss (raw or EMA weights)."""
    if selection.ema_evaluator is None:
        handler = EarlyStopping(patience=patience, score_function=Checkpoint.get_default_score_fn("loss", -1.0),
                                trainer=trainer)
        selection.val_evaluator.add_event_handler(Events.COMPLETED, handler)
    else:
        handler = EarlyStopping(patience=patience, score_function=selection.score, trainer=trainer)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    return handler


def attach_history(
    trainer: Engine,
    train_evaluator: Engine,
    val_evaluator: Engine,
    optimizer: torch.optim.Optimizer,
    path: str | Path | None,
    ema_evaluator: Engine | None = None,
) -> History:
    """Record the evaluators' metrics, the epoch's lr and training time; rewrite ``history.json`` each epoch.

    The time is Ignite's ``state.times["EPOCH_COMPLETED"]`` as seen by handlers: the training loop alone,
    without evaluation. ``path=None`` records without writing (processes other than rank 0).
    """
    history = History()

    def record_history(engine: Engine) -> None:
        history.record(
            train_evaluator.state.metrics,
            val_evaluator.state.metrics,
            lr=float(optimizer.param_groups[0]["lr"]),
            epoch_time_s=engine.state.times[Events.EPOCH_COMPLETED.name],
            val_ema=ema_evaluator.state.metrics if ema_evaluator is not None else None,
        )
        if path is not None:
            artifacts.write_json(path, history.to_dict())

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record_history)
    return history


def attach_training_checkpoint(trainer: Engine, to_save: Mapping[str, Any], output_dir: str | Path) -> Checkpoint:
    """Write ``training_checkpoint.pt`` (trainer, model, optimizer, scheduler, ...) at the end of every epoch.

    Attach it last, so the file holds the whole epoch; ``--resume`` restores it with ``Checkpoint.load_objects``.
    """
    handler = Checkpoint(
        dict(to_save), ReplacingDiskSaver(output_dir), filename_pattern=artifacts.TRAINING_CHECKPOINT, n_saved=1
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    return handler


def attach_curves(
    trainer: Engine, history: History, path: str | Path, min_interval_s: float = 30.0
) -> RemovableEventHandle:
    """Redraw ``curves.png`` after an epoch when ``min_interval_s`` seconds have passed since the last drawing or,
    for the first one, since the run started, and when training ends: a long run can be watched, and drawing
    (~0.3 s a figure on 2 cores) costs at most about 1% of a run."""
    drawn = {"epoch": 0, "at": -math.inf}

    def start_clock(engine: Engine) -> None:
        drawn["at"] = time.perf_counter()

    trainer.add_event_handler(Events.STARTED, start_clock)

    def draw_curves(engine: Engine) -> None:
        now = time.perf_counter()
        if history.epochs == drawn["epoch"]:
            return
        if engine.should_terminate or now - drawn["at"] >= min_interval_s or history.epochs == engine.state.max_epochs:
            plots.plot_curves(history.to_dict(), path, history.best_epoch())
            drawn.update(epoch=history.epochs, at=now)

    trainer.add_event_handler(Events.COMPLETED, draw_curves)
    return trainer.add_event_handler(Events.EPOCH_COMPLETED, draw_curves)


def attach_epoch_log(trainer: Engine, history: History, logger: logging.Logger) -> RemovableEventHandle:
    """One line per epoch: epoch, lr, train/val loss and accuracy, time, and "new best" when val loss improved."""

    def log_epoch(engine: Engine) -> None:
        h = history.data
        epoch = history.epochs
        best = " new best" if history.best_epoch() == epoch else ""
        ema = ""
        if "val_ema" in h:
            ema = f"  ema loss {h['val_ema']['loss'][-1]:.4f} acc {100 * h['val_ema']['accuracy'][-1]:6.2f}%"
        logger.info(
            f"epoch {engine.state.epoch:>3}/{engine.state.max_epochs}  lr {h['lr'][-1]:.2e}  "
            f"train loss {h['train']['loss'][-1]:.4f} acc {100 * h['train']['accuracy'][-1]:6.2f}%  "
            f"val loss {h['val']['loss'][-1]:.4f} acc {100 * h['val']['accuracy'][-1]:6.2f}%{ema}  "
            f"{h['epoch_time_s'][-1]:5.1f}s{best}"
        )

    return trainer.add_event_handler(Events.EPOCH_COMPLETED, log_epoch)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is no terminal but a progress widget can be shown)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def attach_progress_bar(trainer: Engine, readout: LossReadout) -> ProgressBar | None:
    """Ignite's ``ProgressBar`` (tqdm's notebook widget in Jupyter, the text bar on a terminal) with the
    running per-sample loss of ``readout``, updated when it is read; nothing when output goes to a file or pipe."""
    if not (sys.stderr.isatty() or in_notebook()):
        return None
    bar = ProgressBar(persist=False)
    bar.attach(trainer, output_transform=lambda _: {"loss": _finite_or_nan(readout.value)},
               event_name=readout.event)
    return bar


def _finite_or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def attach_tensorboard(
    trainer: Engine, optimizer: torch.optim.Optimizer, evaluators: Mapping[str, Engine], log_dir: str | Path,
    readout: LossReadout,
) -> Any:
    """Ignite's ``TensorboardLogger`` in ``log_dir``: ``training/loss`` (the ``readout``'s, when it is read),
    ``lr/group_0`` and, per epoch, ``<name>/loss`` and ``<name>/accuracy`` of each evaluator (``train``,
    ``val``, ``val_ema``), with the trainer's epoch as step. Closed when training completes."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it; fail with one line, not deep inside
        from ignite.handlers import TensorboardLogger
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    logger = TensorboardLogger(log_dir=str(log_dir))
    event = readout.event
    logger.attach_output_handler(trainer, event_name=event, tag="training",
                                 output_transform=lambda _: {"loss": _finite_or_nan(readout.value)})
    logger.attach_opt_params_handler(trainer, event_name=event, optimizer=optimizer, param_name="lr")
    for name, evaluator in evaluators.items():
        logger.attach_output_handler(evaluator, event_name=Events.COMPLETED, tag=name,
                                     metric_names=["loss", "accuracy"],
                                     global_step_transform=global_step_from_engine(trainer, Events.EPOCH_COMPLETED))

    def close_tensorboard() -> None:
        logger.close()

    trainer.add_event_handler(Events.COMPLETED, close_tensorboard)
    return logger
