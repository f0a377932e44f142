"""The run directory's files: names, atomic writes, the best-model checkpoint reader, and the plots.

Other tools depend on these names: ``best_model.pt``, ``history.json``, ``curves.png``, ``metrics.json``,
``config.json``, ``confusion_matrix.png`` (and ``training_checkpoint.pt`` for ``--resume``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from .model import CLASS_NAMES, LeNet5

BEST_MODEL = "best_model.pt"
TRAINING_CHECKPOINT = "training_checkpoint.pt"
HISTORY = "history.json"
CURVES = "curves.png"
METRICS = "metrics.json"
CONFIG = "config.json"
CONFUSION_MATRIX = "confusion_matrix.png"

BEST_MODEL_KEYS = ("model", "config", "epoch", "val_loss", "val_accuracy")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a temporary file in the same directory, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    missing = [k for k in BEST_MODEL_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a best-model checkpoint (missing {', '.join(missing)})")
    model = LeNet5()
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit LeNet5 ({first})") from None
    return model.to(map_location).eval(), checkpoint


def new_figure(figsize: tuple[float, float], ncols: int = 1):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize, constrained_layout=True)


def save_figure(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def plot_curves(history: dict[str, Any], path: str | Path, best_epoch: int | None = None) -> Path:
    """Two panels, "Loss" and "Accuracy": train vs val per epoch, the best epoch marked."""
    fig, (ax_loss, ax_acc) = new_figure((10, 4), ncols=2)
    epochs = list(range(1, len(history["val"]["loss"]) + 1))
    panels = ((ax_loss, "loss", "Loss", "cross-entropy per sample"), (ax_acc, "accuracy", "Accuracy", "accuracy (%)"))
    for ax, key, title, ylabel in panels:
        scale = 100.0 if key == "accuracy" else 1.0
        for split, style in (("train", "o-"), ("val", "s-")):
            ax.plot(epochs, [v * scale for v in history[split][key]], style, ms=3, label=split)
        if best_epoch is not None:
            best = history["val"][key][best_epoch - 1] * scale
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
            ax.plot([best_epoch], [best], "*", color="crimson", ms=12, label=f"best (epoch {best_epoch})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    if len(epochs) > 1:
        from matplotlib.ticker import MaxNLocator

        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: torch.Tensor | Sequence[Sequence[int]], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Counts of true (rows) vs predicted (columns) classes, annotated, as a heat map."""
    cm = torch.as_tensor(matrix).cpu().long()
    fig, ax = new_figure((6.5, 5.5))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    fig.colorbar(im, ax=ax)
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n), CLASS_NAMES)
    ax.set_yticks(range(n), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max().item() / 2
    for i in range(n):
        for j in range(n):
            value = cm[i, j].item()
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    return save_figure(fig, path)
