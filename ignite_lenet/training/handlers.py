"""Handlers wired onto the Ignite engines, one ``attach_*`` function each; every one returns what it attached.

The order they must be attached in is written once, in ``wiring.HANDLERS``: Ignite fires the handlers of
an event in the order they were added. Handlers a user attaches afterwards run after all of these.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.engine.events import RemovableEventHandle
from ignite.handlers import (
    Checkpoint,
    EarlyStopping,
    EMAHandler,
    ProgressBar,
    TerminateOnNan,
    global_step_from_engine,
)
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from ignite_lenet.files import write_json
from ignite_lenet.plots import plot_curves
from ignite_lenet.spec import BEST_MODEL, TRAINING_CHECKPOINT
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.state import History, ReplacingDiskSaver, Selection, Value
from ignite_lenet.training.step import TrainStep


class LossReadout:
    """The mean per-sample training loss of the steps since the last readout; ``value`` is ``None`` before the first.

    One host sync per call; in a data-parallel run it is the mean over all processes (so ``TerminateOnNan``
    reading it stops every process at the same iteration). A NaN or infinite loss in any step of the window
    makes ``value`` NaN or infinite.
    """

    def __init__(self, step: TrainStep, every: int = 1) -> None:
        self.step = step
        self.event = readout_event(every)  # when it is read: handlers showing ``value`` attach to the same event
        self.value: float | None = None

    def __call__(self, engine: Engine | None = None) -> None:
        total, samples = self.step.take_loss_window()
        both = torch.stack([total.double(), torch.tensor(float(samples), dtype=torch.float64, device=total.device)])
        if idist.get_world_size() > 1:
            both = idist.all_reduce(both)
        total_value, samples_value = both.tolist()
        if samples_value:
            self.value = total_value / samples_value


def attach_loss_readout(trainer: Engine, step: TrainStep, every: int = 100) -> LossReadout:
    """Read the running training loss every ``every`` iterations and at each epoch's last one (one sync each).

    Attach ``TerminateOnNan(output_transform=lambda _: readout.value)`` and the progress bar after it, on the
    same event (``readout.event``): a NaN found at an epoch's last iteration then stops the run before
    ``EPOCH_COMPLETED`` (no evaluation or checkpoint of the diverged weights), as a per-iteration check did.
    """
    readout = LossReadout(step, every)
    trainer.add_event_handler(readout.event, readout)
    return readout


def readout_event(every: int) -> Any:
    """``ITERATION_COMPLETED`` every ``every`` iterations and at the last iteration of each epoch."""
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")

    def due(engine: Engine, iteration: int) -> bool:
        length = engine.state.epoch_length
        return iteration % every == 0 or bool(length and iteration % length == 0)

    return Events.ITERATION_COMPLETED(event_filter=due)


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

    With a ``readout`` (``attach_loss_readout``, attached before) it checks the mean loss of the steps
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


def attach_ema(trainer: Engine, ema: EMAHandler) -> EMAHandler:
    """Update ``ema`` (``engines.create_ema``) after every iteration; its momentum shows as ``state.ema_momentum``."""
    ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    return ema


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
    handler = Checkpoint(to_save, ReplacingDiskSaver(output_dir), filename_pattern=BEST_MODEL,
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
            write_json(path, history.to_dict())

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record_history)
    return history


def attach_training_checkpoint(trainer: Engine, to_save: Mapping[str, Any], output_dir: str | Path) -> Checkpoint:
    """Write ``training_checkpoint.pt`` (trainer, model, optimizer, scheduler, ...) at the end of every epoch.

    Attach it last, so the file holds the whole epoch; ``--resume`` restores it with ``Checkpoint.load_objects``.
    """
    handler = Checkpoint(
        dict(to_save), ReplacingDiskSaver(output_dir), filename_pattern=TRAINING_CHECKPOINT, n_saved=1
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    return handler


def attach_curves(
    trainer: Engine, history: History, path: str | Path, min_interval_s: float = 30.0
) -> RemovableEventHandle:
    """Redraw ``curves.png`` after an epoch when ``min_interval_s`` seconds have passed since the last drawing or,
    for the first one, since the run started, and when training ends: a long run can be watched, and drawing
    costs a small, bounded share of a run."""
    drawn = {"epoch": 0, "at": -math.inf}

    def start_clock(engine: Engine) -> None:
        drawn["at"] = time.perf_counter()

    trainer.add_event_handler(Events.STARTED, start_clock)

    def draw_curves(engine: Engine) -> None:
        now = time.perf_counter()
        if history.epochs == drawn["epoch"]:
            return
        if engine.should_terminate or now - drawn["at"] >= min_interval_s or history.epochs == engine.state.max_epochs:
            plot_curves(history.to_dict(), path, history.best_epoch())
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
    with warnings.catch_warnings():  # tqdm warns that it picked its notebook widget: that is the intent here
        from tqdm import TqdmExperimentalWarning

        warnings.simplefilter("ignore", TqdmExperimentalWarning)
        import tqdm.autonotebook  # noqa: F401 - imported once, here, so Ignite's import of it stays quiet
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
