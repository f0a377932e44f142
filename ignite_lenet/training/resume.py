"""What a run starts from: the training checkpoint ``--resume`` continues (checked against the settings it was
trained with) and the weights ``--init-from`` fine-tunes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ignite.handlers import Checkpoint

from ignite_lenet.checkpoints import load_model
from ignite_lenet.cmdline import flag_name
from ignite_lenet.config import TRAJECTORY, TrainConfig
from ignite_lenet.model import LeNet5
from ignite_lenet.spec import TRAINING_CHECKPOINT
from ignite_lenet.training.distributed import checkpoint_from_rank0
from ignite_lenet.training.wiring import RESUME_KEYS

RESUME_MUST_MATCH = TRAJECTORY  # the settings that shape the trajectory (marked so in TrainConfig)
RESUME_ABSENT_MEANS = {"fast_tanh": False}  # the value of a setting missing from an older checkpoint's config


def load_resumable(cfg: TrainConfig, path: Path, device: torch.device) -> dict[str, Any]:
    """The training checkpoint ``--resume`` continues, refused in one line when it is missing, unreadable or
    trained with other settings."""
    try:
        checkpoint = checkpoint_from_rank0(path, map_location=device)  # only rank 0 need see the run directory
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: no {TRAINING_CHECKPOINT} in {path.parent} to resume from") from None
    except ValueError as e:
        raise ValueError(f"--resume: {e}") from None
    check_resumable(cfg, checkpoint, path)
    return checkpoint


def check_resumable(cfg: TrainConfig, checkpoint: dict[str, Any], path: Path) -> None:
    """``ValueError`` unless ``checkpoint`` is a training checkpoint of ``cfg``'s trajectory."""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing or not isinstance(checkpoint["config"], dict):
        what = f"missing {', '.join(missing)}" if missing else "its 'config' is not a dictionary"
        raise ValueError(f"--resume: {path} is not a training checkpoint of this package ({what})")
    saved = {**RESUME_ABSENT_MEANS, **checkpoint["config"]}  # an older checkpoint trained without newer settings
    # a one-cycle schedule spans the whole run: its length cannot change midway
    for name in RESUME_MUST_MATCH + (("epochs",) if cfg.schedule == "onecycle" else ()):
        if name in saved and saved[name] != getattr(cfg, name):
            raise ValueError(
                f"--resume: {path} was trained with {flag_name(name)} {saved[name]}, not {getattr(cfg, name)}; "
                f"resume with the same setting or start a new --output-dir"
            )


def restore(to_save: dict[str, Any], checkpoint: dict[str, Any], path: Path) -> None:
    """``Checkpoint.load_objects`` with one line for a checkpoint that does not fit this run."""
    try:
        Checkpoint.load_objects(to_load=to_save, checkpoint=checkpoint)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"--resume: {path} does not fit this run ({first})") from None


def initial_weights(path: str) -> LeNet5:
    """The ``LeNet5`` of ``--init-from``; errors name the flag."""
    try:
        initial = load_model(path)
    except (OSError, ValueError) as e:
        raise type(e)(f"--init-from: {e}") from None
    if not isinstance(initial, LeNet5):
        raise ValueError(f"--init-from {path}: needs a best_model.pt or run directory (plain LeNet5 weights), not "
                         f"an exported program")
    return initial
