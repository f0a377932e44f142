"""TrainConfig: the one home of training defaults, and the recipes (named sets of defaults).

The command-line parser of ``python -m ignite_lenet.train`` is generated from the fields below, so a
default or a help text is written once. ``run`` stores ``cfg.to_dict()`` in ``config.json`` and in every
checkpoint, and ``TrainConfig.from_dict`` / ``--config FILE`` read it back.

Fields marked "recipe" default to ``None``, which means "the recipe's value": ``TrainConfig(recipe="best",
epochs=60)`` is the best recipe with 60 epochs. After construction every field holds a concrete value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ignite_lenet.spec import DATA_DIR_ENV, DEFAULT_RUN_DIR, default_data_dir

DEVICES = ("auto", "cpu", "cuda")


VAL_SOURCES = ("holdout", "test")


BACKENDS = ("gloo", "nccl")


SCHEDULES = ("cosine", "onecycle")


OPTIMIZERS = ("adam", "adamw")


MAX_SEED = 2**63 - 1  # torch.manual_seed's range


MAX_BATCH = 60000  # MNIST's training split: a larger batch is only a memory hazard


MAX_COUNT = 2**31 - 1  # bound for every count (epochs, batch sizes, threads, ...): beyond it torch overflows


MAX_THREADS = 4096


MAX_PROCESSES = 1024  # --nproc-per-node: a fuse against spawning millions of processes by a typo


# Recipes: the values of the recipe-controlled fields. "notebook" is the original notebook's recipe.
RECIPES: dict[str, dict[str, Any]] = {
    "notebook": {
        "epochs": 15, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
        "schedule": "cosine", "t_max": 2, "eta_min": 1e-5, "pct_start": 0.15, "augment": False, "elastic": False,
        "label_smoothing": 0.0, "ema_decay": 0.0, "normalize": False, "train_eval_size": 5000,
        "fast_tanh": False,
    },
    # shortest wall time to >= 99.0% test accuracy on a 2-core CPU
    "fast": {
        "epochs": 4, "batch_size": 256, "optimizer": "adam", "lr": 6e-3, "weight_decay": 0.0,
        "schedule": "onecycle", "t_max": 2, "eta_min": 1e-5, "pct_start": 0.2, "augment": True, "elastic": False,
        "label_smoothing": 0.0, "ema_decay": 0.0, "normalize": True, "train_eval_size": 1000,
        "fast_tanh": True,
    },
    # the highest accuracy of the exact LeNet-5 (>= 99.4% mean of seeds 0-2)
    "best": {
        "epochs": 40, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05,
        "schedule": "onecycle", "t_max": 2, "eta_min": 1e-5, "pct_start": 0.15, "augment": True, "elastic": False,
        "label_smoothing": 0.0, "ema_decay": 0.999, "normalize": True, "train_eval_size": 5000,
        "fast_tanh": False,
    },
}


def flag_name(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _finite(value: float) -> bool:
    """``math.isfinite`` that says False for an integer too large for a float (instead of raising)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def describe_recipes() -> str:
    """One line per recipe with the values it sets (for --help and the README)."""
    lines = []
    for name, values in RECIPES.items():
        changed = {k: v for k, v in values.items() if name == "notebook" or RECIPES["notebook"][k] != v}
        lines.append(f"{name}: " + ", ".join(f"{flag_name(k)} {v}" for k, v in changed.items()))
    return "; ".join(lines)


def _opt(default: Any, help: str, stored: bool = True, **cli: Any) -> Any:
    """A dataclass field whose metadata carries its command-line help (and ``flag``/``choices`` overrides).

    A callable ``default`` is a default factory (read when the config is created, e.g. from the environment).
    ``stored=False`` marks what one command does with its run directory (``--resume``, ``--overwrite``) rather
    than what the run is: ``to_dict`` leaves it out of ``config.json`` and the checkpoints, so ``--config
    old/config.json`` reproduces the run without continuing or deleting anything.
    """
    metadata = {"help": help, "stored": stored, **cli}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


option = _opt  # public: other settings dataclasses (serving.Settings) declare their flags the same way


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
    train_eval_size: int | None = _opt(
        None,
        "recipe: training images (a fixed seeded sample) scored after each epoch for the train curves; "
        "0 scores the whole training split",
    )
    # the recipe: a named set of defaults for the fields marked "recipe"; explicit values override it
    recipe: str = _opt(
        "notebook",
        "named set of defaults for the options marked 'recipe' (flags given explicitly override it): "
        + describe_recipes().replace("%", "%%"),
        choices=tuple(RECIPES),
    )
    # optimisation (the notebook recipe: Adam 1e-3, summed cross-entropy, per-epoch cosine, batch 32, 15 epochs)
    epochs: int | None = _opt(None, "recipe: number of epochs")
    batch_size: int | None = _opt(None, "recipe: training batch size (per process in distributed runs)")
    eval_batch_size: int = _opt(1024, "batch size of the evaluators")
    optimizer: str | None = _opt(None, "recipe: adam, or adamw (decoupled --weight-decay)", choices=OPTIMIZERS)
    lr: float | None = _opt(None, "recipe: learning rate (the peak of --schedule onecycle)")
    weight_decay: float | None = _opt(None, "recipe: weight decay (decoupled with --optimizer adamw)")
    schedule: str | None = _opt(
        None,
        "recipe: learning-rate schedule: 'cosine' is the notebook's CosineAnnealingLR(--t-max, --eta-min) stepped "
        "per epoch; 'onecycle' is OneCycleLR stepped per iteration, peaking at --lr after --pct-start of the run",
        choices=SCHEDULES,
    )
    t_max: int | None = _opt(None, "recipe: CosineAnnealingLR T_max, in epochs (the scheduler steps once per epoch)")
    eta_min: float | None = _opt(None, "recipe: CosineAnnealingLR minimum learning rate")
    pct_start: float | None = _opt(None, "recipe: fraction of a one-cycle run spent warming up to --lr")
    label_smoothing: float | None = _opt(None, "recipe: label smoothing of the training cross-entropy (0: none)")
    augment: bool | None = _opt(
        None, "recipe: train on randomly rotated (±10°), scaled (±10%%), sheared and shifted (±2 px) images, "
        "a new draw each epoch", flag="--augment/--no-augment",
    )
    elastic: bool | None = _opt(
        None, "recipe: add elastic distortions (smoothed random displacement fields, Simard et al. 2003) to "
        "--augment", flag="--elastic/--no-elastic",
    )
    ema_decay: float | None = _opt(
        None, "recipe: keep an exponential moving average of the weights with this decay (Ignite's EMAHandler; "
        "0: off); it is evaluated every epoch and the best checkpoint may come from it",
    )
    normalize: bool | None = _opt(
        None, "recipe: train on inputs standardised with the training split's mean and std; the saved model has "
        "the standardisation folded into conv1, so it still takes images in [0, 1]", flag="--normalize/--no-normalize",
    )
    fast_tanh: bool | None = _opt(
        None, "recipe: while training on CPU, compute tanh as 2*sigmoid(2x)-1 (within 2.4e-7 absolute of torch.tanh; torch's "
        "CPU tanh is several times slower than its sigmoid); checkpoints, exports and CUDA use torch.tanh",
        flag="--fast-tanh/--no-fast-tanh",
    )
    seed: int = _opt(0, "random seed of the initial weights, the batch order and the augmentation")
    # run control
    output_dir: str = _opt(
        DEFAULT_RUN_DIR, "run directory for checkpoints, history, plots and metrics", metavar="DIR"
    )
    device: str = _opt("auto", "where to train; 'auto' picks CUDA when available", choices=DEVICES)
    threads: int | None = _opt(None, "torch intra-op CPU threads (default: torch's choice, one per core)")
    sanity_check: bool = _opt(False, "one batch per epoch for training and for evaluation (a smoke test)")
    epoch_length: int | None = _opt(
        None, "iterations per epoch (Ignite's epoch_length) for short runs; default: the whole training split"
    )
    resume: bool = _opt(False, "continue from the training checkpoint in --output-dir", stored=False)
    overwrite: bool = _opt(
        False, "start over in an --output-dir that holds an earlier run: its files (checkpoints, history, plots, "
        "metrics, config.json, tensorboard/) are removed first; without it such a directory is refused",
        stored=False,
    )
    init_from: str | None = _opt(
        None, "start from the weights of a best_model.pt or run directory (fine-tuning) instead of random ones",
        metavar="PATH",
    )
    patience: int | None = _opt(
        None, "stop early after this many epochs without a lower validation loss (default: never)"
    )
    progress: bool = _opt(True, "hide the progress bar (shown on a terminal or in Jupyter)", flag="--no-progress")
    tensorboard: bool = _opt(
        False, "log training loss, learning rate and per-epoch metrics to OUTPUT_DIR/tensorboard "
        "(Ignite's TensorboardLogger; needs the tensorboard package)",
    )
    deterministic: bool = _opt(
        False, "bit-reproducible runs on any device: deterministic algorithms only, no cuDNN autotuning "
        "(CUDA runs are otherwise allowed to differ in the last digits)",
    )
    cuda_graphs: bool | None = _opt(
        None, "on CUDA, replay the whole training step as a captured CUDA graph (default: on for CUDA, "
        "where the configuration allows it); ignored on CPU", flag="--cuda-graphs/--no-cuda-graphs",
    )
    # distributed data parallel (ignite.distributed)
    backend: str | None = _opt(
        None, "distributed backend, to train in several processes: gloo (CPU or GPU) or nccl (GPU)",
        choices=BACKENDS,
    )
    nproc_per_node: int | None = _opt(None, "processes to spawn on this machine with --backend (not under torchrun)")

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, str) or self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        for name, kind in (("epochs", int), ("batch_size", int), ("t_max", int), ("train_eval_size", int),
                           ("lr", float), ("weight_decay", float), ("eta_min", float), ("pct_start", float),
                           ("label_smoothing", float), ("ema_decay", float), ("val_size", int), ("seed", int),
                           ("eval_batch_size", int)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ValueError(f"{flag_name(name)} must be {'a number' if kind is float else 'an integer'}, "
                                 f"got {value!r}")
        for name in ("augment", "elastic", "normalize", "fast_tanh", "download", "sanity_check", "resume",
                     "overwrite", "progress", "tensorboard", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                flag = self.__dataclass_fields__[name].metadata.get("flag", flag_name(name))
                shown = name if flag.startswith("--no-") else flag_name(name)  # no --download flag: name the key
                raise ValueError(f"{shown} must be true or false, got {getattr(self, name)!r}")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"--cuda-graphs must be true, false or null (auto), got {self.cuda_graphs!r}")
        positive = {"epochs": (self.epochs, MAX_COUNT), "batch_size": (self.batch_size, MAX_BATCH),
                    "eval_batch_size": (self.eval_batch_size, MAX_BATCH), "t_max": (self.t_max, MAX_COUNT)}
        for name, (value, limit) in positive.items():
            if not 1 <= value <= limit:
                raise ValueError(f"{flag_name(name)} must be a positive integer (at most {limit}), got {value!r}")
        optional_positive = {"epoch_length": (self.epoch_length, MAX_COUNT), "patience": (self.patience, MAX_COUNT),
                             "threads": (self.threads, MAX_THREADS),
                             "nproc_per_node": (self.nproc_per_node, MAX_PROCESSES)}
        for name, (value, most) in optional_positive.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most):
                raise ValueError(f"{flag_name(name)} must be a positive integer (at most {most}), got {value!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed!r}")
        if not (_finite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.eta_min <= self.lr:
            raise ValueError(f"--eta-min must be between 0 and --lr ({self.lr}), got {self.eta_min!r}")
        if not (_finite(self.weight_decay) and 0 <= self.weight_decay < 1):
            raise ValueError(f"--weight-decay must be in [0, 1), got {self.weight_decay!r}")
        if not 0 < self.pct_start < 1:
            raise ValueError(f"--pct-start must be between 0 and 1 (exclusive), got {self.pct_start!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must be in [0, 1) (0: no EMA), got {self.ema_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.elastic and not self.augment:
            raise ValueError("--elastic adds to --augment: pass --augment too")
        if self.val_size < 1 or self.val_size >= 60000:
            raise ValueError(f"--val-size must be between 1 and 59999, got {self.val_size!r}")
        if not 0 <= self.train_eval_size <= 60000:
            raise ValueError(f"--train-eval-size must be 0 (all) or positive, got {self.train_eval_size!r}")
        if self.overwrite and self.resume:
            raise ValueError("--overwrite starts over; --resume continues the earlier run: pick one")
        if self.init_from is not None and self.resume:
            raise ValueError("--init-from starts a new run from given weights; --resume continues one: pick one")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"--init-from must be a path, got {self.init_from!r}")
        for name in ("data_dir", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{flag_name(name)} must be a non-empty path, got {getattr(self, name)!r}")
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
        """Plain JSON-able dict (what checkpoints and config.json store): every setting of the run, without what
        one command does with its directory (``--resume``, ``--overwrite``; see ``_opt``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("stored", True)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = False) -> TrainConfig:
        """Rebuild a config from ``to_dict`` output; keys this version does not know are ignored, or with
        ``strict`` a ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if strict and unknown:
            guesses = [f"{k!r} -> {close[0]!r}" for k in unknown if (close := difflib.get_close_matches(k, names, 1))]
            hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
            raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}{hint}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """Read a JSON config (e.g. an earlier run's ``config.json``); ``overrides`` win over the file.

        Raises ``FileNotFoundError`` or ``ValueError`` naming the file, or (when the overrides alone are invalid)
        the setting at fault.
        """
        return _from_file_values(cls, path, read_config_file(path), overrides)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again). A new ``recipe`` brings its own values for the
        recipe fields that still hold the old recipe's values and are not in ``changes``."""
        if changes.get("recipe", self.recipe) != self.recipe:
            old = RECIPES[self.recipe]
            for name, value in old.items():
                if name not in changes and getattr(self, name) == value:
                    changes[name] = None
        return dataclasses.replace(self, **changes)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of a JSON config file; one-line errors for a missing, unreadable or non-object file."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--config {path}: is a directory, not a JSON file") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer beyond Python's digit limit
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ValueError(f"--config {path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings, got {type(values).__name__}")
    return values


def _from_file_values(cls: type, path: str | os.PathLike[str], values: dict[str, Any],
                      overrides: dict[str, Any]) -> Any:
    """``cls.from_dict({**values, **overrides})``; an error the file causes names the file."""
    try:
        return cls.from_dict({**values, **overrides}, strict=True)
    except ValueError as e:
        try:
            cls.from_dict(overrides, strict=True)
        except ValueError:
            raise e from None  # the overrides (flags given on the command line) are at fault by themselves
        raise ValueError(f"--config {path}: {e}") from None
