"""State a run keeps and checkpoints beside the engines: the history, which weights are the best candidate,
and the adapters that put plain values and scheduler positions into Ignite's ``Checkpoint``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver

from ignite_lenet.checkpoints import save_checkpoint
from ignite_lenet.model import plain_state_dict


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
    """``DiskSaver`` for a fixed file name that is replaced in place, written by ``checkpoints.save_checkpoint``.

    Ignite removes the previous file before writing the next one; with one fixed name that would leave a
    moment with no file at all. The atomic write (temporary file, fsync, rename) already replaces it, so the
    removal is skipped and a crash, a kill or a full disk at any point leaves the last good file readable.
    The checkpoint is serialised in memory first, so a failed write is a one-line ``WriteError`` naming the
    file. Ignite's ``require_empty`` check is off: ``training.rundir`` decides what may be written where.
    """

    def __init__(self, dirname: str | Path, **kwargs: Any) -> None:
        super().__init__(dirname, atomic=True, require_empty=False, **kwargs)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() == self.save_on_rank:  # as DiskSaver: one process of a data-parallel job writes
            save_checkpoint(checkpoint, self.dirname / filename)

    def remove(self, filename: str) -> None:
        pass


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
        """The chosen weights as a plain ``LeNet5`` state_dict (unwrapped, standardisation folded in), on the CPU:
        a ``best_model.pt`` trained on a GPU loads with a bare ``torch.load(path, weights_only=True)`` on a machine
        without one (a no-op for CPU runs)."""
        chosen = plain_state_dict(self.ema_model if self.use_ema() else self.model)
        return {name: tensor.detach().cpu() for name, tensor in chosen.items()}

    def score(self, engine: Engine | None = None) -> float:
        return -float(self.metrics()["loss"])
