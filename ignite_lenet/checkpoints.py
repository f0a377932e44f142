"""Reading what training writes: checkpoints (``weights_only=True``), the best model, and ``load_model``.

    from ignite_lenet import load_model
    model = load_model("runs/lenet5")          # a run directory, best_model.pt, lenet5.pt2 or lenet5.torchscript.pt
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import artifacts
from .model import LeNet5


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
    checkpoint = load_checkpoint(path, map_location)
    missing = [k for k in artifacts.BEST_MODEL_KEYS if k not in checkpoint]
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


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 2)[1:2] == ["code"] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


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
        path = path / artifacts.BEST_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    if path.suffix == ".pt2":
        if not zipfile.is_zipfile(path):  # torch.export.load would log a whole traceback before raising
            raise ValueError(f"{path}: not a loadable torch.export program (not a zip archive)")
        quiet = _DropAll()  # a zip that is no program: torch.export logs a whole traceback, then raises
        logging.getLogger("torch.export").addFilter(quiet)
        try:
            module = torch.export.load(str(path)).module()
        except Exception as e:
            raise ValueError(f"{path}: not a loadable torch.export program ({type(e).__name__})") from None
        finally:
            logging.getLogger("torch.export").removeFilter(quiet)
        return module.to(map_location)
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit's deprecation notice
            try:
                return torch.jit.load(str(path), map_location=map_location).eval()
            except Exception as e:
                raise ValueError(f"{path}: not a loadable TorchScript model ({type(e).__name__})") from None
    checkpoint = load_checkpoint(path, map_location)
    if "model" in checkpoint and set(artifacts.BEST_MODEL_KEYS) - set(checkpoint):  # training_checkpoint.pt
        model = LeNet5()
        try:
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: weights do not fit LeNet5 ({type(e).__name__})") from None
        check_finite_weights(model, path)
        return model.to(map_location).eval()
    return load_best_model(path, map_location)[0]
