"""TrainConfig: the one home of training defaults (the original notebook's hyper-parameters).

The command-line parser of ``python -m ignite_lenet.train`` is generated from the fields below, so a
default or a help text is written once. ``run`` stores ``cfg.to_dict()`` in ``config.json`` and in every
checkpoint, and ``TrainConfig.from_dict`` reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

DATA_DIR_ENV = "IGNITE_LENET_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEVICES = ("auto", "cpu", "cuda")
VAL_SOURCES = ("holdout", "test")
BACKENDS = ("gloo", "nccl")
SCHEDULES = ("cosine", "onecycle")


def default_data_dir() -> str:
    """``$IGNITE_LENET_DATA_DIR`` when set, else ``./data``."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def _opt(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field whose metadata carries its command-line help (and ``flag``/``choices`` overrides).

    A callable ``default`` is a default factory (read when the config is created, e.g. from the environment).
    """
    if callable(default):
        return field(default_factory=default, metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """Everything that defines a training run; defaults reproduce the original notebook."""

    # data
    data_dir: str = _opt(
        default_data_dir,
        f"directory holding MNIST in torchvision's layout (DIR/MNIST/raw/*-ubyte[.gz]); "
        f"defaults to ${DATA_DIR_ENV} when set, else ./data",
        metavar="DIR",
    )
    download: bool = _opt(
        True, "never download: fail with a message when MNIST files are missing from --data-dir", flag="--no-download"
    )
    val_source: str = _opt(
        "holdout",
        "validation set used for model selection: 'holdout' keeps --val-size seeded training images aside "
        "and evaluates the test set once, at the end; 'test' validates on the test set (the notebook's setup)",
        choices=VAL_SOURCES,
    )
    val_size: int = _opt(5000, "training images held out for validation with --val-source holdout")
    train_eval_size: int = _opt(
        5000,
        "training images (a fixed seeded sample) scored after each epoch for the train curves; "
        "0 scores the whole training split",
    )
    # optimisation: the notebook's recipe
    epochs: int = _opt(15, "number of epochs")
    batch_size: int = _opt(32, "training batch size (per process in distributed runs)")
    eval_batch_size: int = _opt(1024, "batch size of the evaluators")
    lr: float = _opt(1e-3, "Adam learning rate")
    t_max: int = _opt(2, "CosineAnnealingLR T_max, in epochs (the scheduler steps once per epoch)")
    eta_min: float = _opt(1e-5, "CosineAnnealingLR minimum learning rate")
    seed: int = _opt(0, "random seed of the initial weights and the batch order")
    # beyond the notebook (off by default)
    schedule: str = _opt(
        "cosine",
        "learning-rate schedule: 'cosine' is the notebook's CosineAnnealingLR(--t-max, --eta-min) stepped per "
        "epoch; 'onecycle' is OneCycleLR stepped per iteration, peaking at --lr after 15%% of the run",
        choices=SCHEDULES,
    )
    augment: bool = _opt(
        False, "train on randomly rotated (±10°), scaled (±10%%) and shifted (±2 px) images, a new draw each epoch"
    )
    # run control
    output_dir: str = _opt(
        "runs/lenet5", "run directory for checkpoints, history, plots and metrics", metavar="DIR"
    )
    device: str = _opt("auto", "where to train; 'auto' picks CUDA when available", choices=DEVICES)
    threads: int | None = _opt(None, "torch intra-op CPU threads (default: torch's choice, one per core)")
    sanity_check: bool = _opt(False, "one batch per epoch for training and for evaluation (a smoke test)")
    epoch_length: int | None = _opt(
        None, "iterations per epoch (Ignite's epoch_length) for short runs; default: the whole training split"
    )
    resume: bool = _opt(False, "continue from the training checkpoint in --output-dir")
    patience: int | None = _opt(
        None, "stop early after this many epochs without a lower validation loss (default: never)"
    )
    progress: bool = _opt(True, "hide the progress bar (shown on a terminal only)", flag="--no-progress")
    # distributed data parallel (ignite.distributed)
    backend: str | None = _opt(
        None, "distributed backend, to train in several processes: gloo (CPU or GPU) or nccl (GPU)",
        choices=BACKENDS,
    )
    nproc_per_node: int | None = _opt(None, "processes to spawn on this machine with --backend (not under torchrun)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "t_max": self.t_max}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{_flag(name)} must be a positive integer, got {value!r}")
        optional_positive = {"epoch_length": self.epoch_length, "patience": self.patience,
                             "threads": self.threads, "nproc_per_node": self.nproc_per_node}
        for name, value in optional_positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{_flag(name)} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.eta_min <= self.lr:
            raise ValueError(f"--eta-min must be between 0 and --lr ({self.lr}), got {self.eta_min!r}")
        if self.val_size < 1 or self.val_size >= 60000:
            raise ValueError(f"--val-size must be between 1 and 59999, got {self.val_size!r}")
        if self.train_eval_size < 0:
            raise ValueError(f"--train-eval-size must be 0 (all) or positive, got {self.train_eval_size!r}")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.val_source not in VAL_SOURCES:
            raise ValueError(f"--val-source must be one of {', '.join(VAL_SOURCES)}, got {self.val_source!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.nproc_per_node is not None and self.backend is None:
            raise ValueError("--nproc-per-node needs --backend (gloo or nccl)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what checkpoints and config.json store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from ``to_dict`` output, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> type:
    """``int | None`` -> ``int``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add one flag per dataclass field, with the field's help text and default."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        flag = meta.pop("flag", _flag(f.name))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind = _base_type(hints[f.name])
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=help_text)
            continue
        if default is not None:
            help_text += " (default: %(default)s)"
        if "choices" not in meta:
            meta.setdefault("metavar", {int: "N", float: "X"}.get(kind, "VALUE"))
        parser.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text, **meta)


def config_from_args(args: argparse.Namespace, cls: type = TrainConfig) -> Any:
    """Build the dataclass from parsed arguments (raises ``ValueError`` on invalid values)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
