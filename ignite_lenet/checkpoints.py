"""Reading and writing what training writes: checkpoints (``weights_only=True``), the best model, ``load_model``.

    from ignite_lenet import load_model
    model = load_model("runs/lenet5")          # a run directory, best_model.pt, lenet5.pt2 or lenet5.torchscript.pt
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ignite_lenet.files import model_file_kind, write_bytes
from ignite_lenet.model import LeNet5
from ignite_lenet.spec import BEST_MODEL, BEST_MODEL_KEYS, MODEL_FILES


def save_checkpoint(checkpoint: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` into memory, then ``files.write_bytes`` (temporary file, fsync, rename) to ``path``.

    A LeNet-5 checkpoint is small (under 1 MB with Adam's state). Serialising to memory first makes a full disk,
    a read-only file system or a missing permission the ``WriteError`` naming ``path`` that it is (torch's file
    writer reports it as a ``RuntimeError`` of ``inline_container.cc``); the previous file stays until the new
    one is complete.
    """
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    return write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... for damaged files
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint dictionary")
    return checkpoint


def load_best_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LeNet5, dict[str, Any]]:
    """Rebuild the ``LeNet5`` stored in a ``best_model.pt``; returns ``(model in eval mode, checkpoint)``.

    Raises ``FileNotFoundError`` or ``ValueError`` (not a best-model checkpoint, or weights that do not fit).
    """
    return best_model_from(load_checkpoint(path, map_location), path, map_location)


def best_model_from(checkpoint: dict[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[LeNet5, dict[str, Any]]:
    """``load_best_model`` of a checkpoint already read (``path`` names it in errors)."""
    missing = [k for k in BEST_MODEL_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a best-model checkpoint (missing {', '.join(missing)})")
    state = checkpoint["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: its 'model' entry is not a state_dict of tensors")
    model = LeNet5()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit LeNet5 ({first})") from None
    check_finite_weights(model, path)
    return model.to(map_location).eval(), checkpoint


def check_finite_weights(model: nn.Module, path: str | Path) -> None:
    """A model with NaN or infinite weights would answer every input with garbage: refuse it by name
    (``ValueError``); ``load_best_model`` and ``load_model`` apply it to everything they load."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"{path}: weight {bad[0]} has non-finite values (NaN or infinity){more}")


def load_torchscript(path: str | Path, map_location: str | torch.device = "cpu",
                     extra_files: dict[str, Any] | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.load`` (torch.jit's deprecation notice silenced) with a one-line ``ValueError``; ``extra_files``
    is filled in as ``torch.jit.load`` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        try:
            return torch.jit.load(str(path), map_location=map_location, _extra_files=extra_files or {}).eval()
        except Exception as e:
            raise ValueError(f"{path}: not a loadable TorchScript model ({type(e).__name__})") from None


def load_exported_program(path: str | Path, device: str | torch.device = "cpu",
                          extra_files: dict[str, Any] | None = None) -> nn.Module:
    """The module of a ``torch.export`` program (``.pt2``) on ``device``, with a one-line ``ValueError``."""
    if not zipfile.is_zipfile(path):  # torch.export.load would log a whole traceback before raising
        raise ValueError(f"{path}: not a loadable torch.export program (not a .pt2 archive)")
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # its deserialisation errors repeat the one raised below; restored after
    try:
        program = torch.export.load(str(path), extra_files=extra_files)
        if torch.device(device).type != "cpu":  # exported programs move with a pass, not .to()
            program = torch.export.passes.move_to_device_pass(program, device)
        return program.module()
    except Exception as e:
        raise ValueError(f"{path}: not a loadable torch.export program ({type(e).__name__})") from None
    finally:
        logger.setLevel(level)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A model ready for inference (eval mode) or fine-tuning, from any file the package writes.

    Args:
        path: a run directory (its ``best_model.pt``), a ``best_model.pt`` / ``training_checkpoint.pt``, an
            exported ``.pt2`` (torch.export) or ``.torchscript.pt`` file.
        map_location: device to load onto.

    ``best_model.pt`` and run directories give a plain ``LeNet5`` (trainable); ``.pt2`` gives the exported
    program's module and ``.torchscript.pt`` a ``ScriptModule``. Raises ``FileNotFoundError`` / ``ValueError``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / BEST_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    entry = MODEL_FILES.get(model_file_kind(path) or "")
    if entry is not None and entry.module is not None:  # an exported file: its own loader (spec.MODEL_FILES)
        return entry.load("module")(path, map_location)
    checkpoint = load_checkpoint(path, map_location)
    if "model" in checkpoint and set(BEST_MODEL_KEYS) - set(checkpoint):  # training_checkpoint.pt
        model = LeNet5()
        try:
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: weights do not fit LeNet5 ({type(e).__name__})") from None
        check_finite_weights(model, path)
        return model.to(map_location).eval()
    return load_best_model(path, map_location)[0]
