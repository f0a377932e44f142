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
from dataclasses import dataclass
from typing import Any

from ignite_lenet.cmdline import Interval, check_fields, flag_name, option
from ignite_lenet.mnist.idx import MNIST_COUNTS
from ignite_lenet.spec import DATA_DIR_ENV, DEFAULT_RUN_DIR, default_data_dir

DEVICES = ("auto", "cpu", "cuda")


VAL_SOURCES = ("holdout", "test")


BACKENDS = ("gloo", "nccl")


SCHEDULES = ("cosine", "onecycle")


OPTIMIZERS = ("adam", "adamw")


MAX_SEED = 2**63 - 1  # torch.manual_seed's range


TRAIN_IMAGES = MNIST_COUNTS["train"]


MAX_BATCH = TRAIN_IMAGES  # MNIST's training split: a larger batch is only a memory hazard


MAX_COUNT = 2**31 - 1  # bound for every count (epochs, batch sizes, threads, ...): beyond it torch overflows


MAX_THREADS = 4096


MAX_PROCESSES = 1024  # --nproc-per-node: a fuse against spawning millions of processes by a typo


# Recipes: the values of the recipe-controlled fields (the fields below that default to None, "the recipe's").
# "notebook" is the original notebook's recipe, the default one.
DEFAULT_RECIPE = "notebook"
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


# The default recipe in words, for the --help of the commands that train
DEFAULT_RECIPE_TEXT = ("Adam lr 1e-3, summed cross-entropy, CosineAnnealingLR(T_max=2, eta_min=1e-5) stepped per "
                       "epoch, batch 32, 15 epochs")


def describe_recipes() -> str:
    """One line per recipe with the values it sets (for --help and the README)."""
    lines = []
    for name, values in RECIPES.items():
        changed = {k: v for k, v in values.items() if name == DEFAULT_RECIPE or RECIPES[DEFAULT_RECIPE][k] != v}
        lines.append(f"{name}: " + ", ".join(f"{flag_name(k)} {v}" for k, v in changed.items()))
    return "; ".join(lines)


def recipe_default_text(name: str) -> str | None:
    """What ``--help`` says a recipe field defaults to (``None`` for the other fields)."""
    if name not in RECIPES[DEFAULT_RECIPE]:
        return None
    return f"from --recipe; {DEFAULT_RECIPE}: {RECIPES[DEFAULT_RECIPE][name]}"


POSITIVE = (1, MAX_COUNT)
FRACTION = Interval(0, 1, "[)")
_opt = option  # the fields below: ``trajectory=True`` marks a setting a resumed run must keep (resume.py)


@dataclass
class TrainConfig:
    """Everything that defines a training run; defaults reproduce the original notebook.

    Each field says what it is: its type (the annotation), its range, its ``--help`` section (``section`` starts
    one) and whether it shapes the trajectory (``trajectory``: a resumed run must keep it). ``validate`` checks
    all of that from the fields, then the few rules that tie two settings together.
    """

    data_dir: str = _opt(
        default_data_dir,
        f"directory holding MNIST in torchvision's layout (DIR/MNIST/raw/*-ubyte[.gz]); "
        f"defaults to ${DATA_DIR_ENV} when set, else ./data",
        metavar="DIR", section="data",
    )
    download: bool = _opt(
        True, "never download: fail with a message when MNIST files are missing from --data-dir", flag="--no-download"
    )
    val_source: str = _opt(
        "holdout",
        "validation set used for model selection: 'holdout' keeps --val-size seeded training images aside "
        "and evaluates the test set once, at the end; 'test' validates on the test set (the notebook's setup)",
        choices=VAL_SOURCES, trajectory=True,
    )
    val_size: int = _opt(5000, "training images held out for validation with --val-source holdout",
                         range=(1, TRAIN_IMAGES - 1), trajectory=True)
    train_eval_size: int | None = _opt(
        None,
        "training images (a fixed seeded sample) scored after each epoch for the train curves; "
        "0 scores the whole training split", range=(0, TRAIN_IMAGES),
    )
    recipe: str = _opt(
        DEFAULT_RECIPE,
        "named set of defaults for the options marked 'recipe' (flags given explicitly override it): "
        + describe_recipes().replace("%", "%%"),
        choices=tuple(RECIPES), section="recipe",
    )
    epochs: int | None = _opt(None, "number of epochs", range=POSITIVE, section="optimisation")
    batch_size: int | None = _opt(None, "training batch size (per process in distributed runs)", range=(1, MAX_BATCH),
                                  trajectory=True)
    eval_batch_size: int = _opt(1024, "batch size of the evaluators", range=(1, MAX_BATCH))
    optimizer: str | None = _opt(None, "adam, or adamw (decoupled --weight-decay)", choices=OPTIMIZERS, trajectory=True)
    lr: float | None = _opt(None, "learning rate (the peak of --schedule onecycle)",
                            range=Interval(0, math.inf, "()"), trajectory=True)
    weight_decay: float | None = _opt(None, "weight decay (decoupled with --optimizer adamw)", range=FRACTION,
                                      trajectory=True)
    schedule: str | None = _opt(
        None,
        "learning-rate schedule: 'cosine' is the notebook's CosineAnnealingLR(--t-max, --eta-min) stepped "
        "per epoch; 'onecycle' is OneCycleLR stepped per iteration, peaking at --lr after --pct-start of the run",
        choices=SCHEDULES, trajectory=True,
    )
    t_max: int | None = _opt(None, "CosineAnnealingLR T_max, in epochs (the scheduler steps once per epoch)",
                             range=POSITIVE, trajectory=True)
    eta_min: float | None = _opt(None, "CosineAnnealingLR minimum learning rate", trajectory=True)
    pct_start: float | None = _opt(None, "fraction of a one-cycle run spent warming up to --lr",
                                   range=Interval(0, 1, "()"), trajectory=True)
    label_smoothing: float | None = _opt(None, "label smoothing of the training cross-entropy (0: none)",
                                         range=FRACTION, trajectory=True)
    augment: bool | None = _opt(
        None, "train on randomly rotated (±10°), scaled (±10%%), sheared and shifted (±2 px) images, "
        "a new draw each epoch", flag="--augment/--no-augment", trajectory=True,
    )
    elastic: bool | None = _opt(
        None, "add elastic distortions (smoothed random displacement fields, Simard et al. 2003) to "
        "--augment", flag="--elastic/--no-elastic", trajectory=True,
    )
    ema_decay: float | None = _opt(
        None, "keep an exponential moving average of the weights with this decay (Ignite's EMAHandler; "
        "0: off); it is evaluated every epoch and the best checkpoint may come from it",
        range=FRACTION, trajectory=True,
    )
    normalize: bool | None = _opt(
        None, "train on inputs standardised with the training split's mean and std; the saved model has "
        "the standardisation folded into conv1, so it still takes images in [0, 1]",
        flag="--normalize/--no-normalize", trajectory=True,
    )
    fast_tanh: bool | None = _opt(
        None, "while training on CPU, compute tanh as 2*sigmoid(2x)-1 (within 2.4e-7 absolute of torch.tanh; torch's "
        "CPU tanh is several times slower than its sigmoid); checkpoints, exports and CUDA use torch.tanh",
        flag="--fast-tanh/--no-fast-tanh", trajectory=True,
    )
    seed: int = _opt(0, "random seed of the initial weights, the batch order and the augmentation",
                     range=(0, MAX_SEED), trajectory=True)
    output_dir: str = _opt(
        DEFAULT_RUN_DIR, "run directory for checkpoints, history, plots and metrics", metavar="DIR",
        section="run control",
    )
    device: str = _opt("auto", "where to train; 'auto' picks CUDA when available", choices=DEVICES)
    threads: int | None = _opt(None, "torch intra-op CPU threads (default: torch's choice, one per core)",
                               range=(1, MAX_THREADS))
    sanity_check: bool = _opt(False, "one batch per epoch for training and for evaluation (a smoke test)",
                              trajectory=True)
    epoch_length: int | None = _opt(
        None, "iterations per epoch (Ignite's epoch_length) for short runs; default: the whole training split",
        range=POSITIVE, trajectory=True,
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
        None, "stop early after this many epochs without a lower validation loss (default: never)", range=POSITIVE,
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
    backend: str | None = _opt(
        None, "distributed backend, to train in several processes: gloo (CPU or GPU) or nccl (GPU)",
        choices=BACKENDS, section="distributed data parallel",
    )
    nproc_per_node: int | None = _opt(None, "processes to spawn on this machine with --backend (not under torchrun)",
                                      range=(1, MAX_PROCESSES))

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, str) or self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        check_fields(self)
        if not 0 <= self.eta_min <= self.lr:
            raise ValueError(f"--eta-min must be between 0 and --lr ({self.lr}), got {self.eta_min!r}")
        if self.elastic and not self.augment:
            raise ValueError("--elastic adds to --augment: pass --augment too")
        if self.overwrite and self.resume:
            raise ValueError("--overwrite starts over; --resume continues the earlier run: pick one")
        if self.init_from is not None and self.resume:
            raise ValueError("--init-from starts a new run from given weights; --resume continues one: pick one")
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


# Settings that shape the trajectory (``trajectory=True`` above): a resumed run must use the checkpoint's values.
TRAJECTORY = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("trajectory"))
