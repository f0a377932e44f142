"""Figures: learning curves, confusion matrix, benchmark charts; drawn on ``matplotlib.figure.Figure``.

No global state is touched (no ``matplotlib.use``, no pyplot): a figure returned here shows inline in Jupyter
and a saved one is written atomically, whatever backend the caller uses. Neither torch nor the model is imported.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ignite_lenet.files import atomic_write
from ignite_lenet.spec import CLASS_NAMES


class InlineFigure(Figure):
    """A ``Figure`` that Jupyter shows as a picture when it ends a cell, with no ``%matplotlib inline`` first.

    A bare ``Figure`` has no display formatter until pyplot's backend registers one (it shows as the text
    ``<Figure size ...>``); ``_repr_png_`` is IPython's own protocol, so no backend is switched or imported.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def new_figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Figure, Any]:
    """A ``Figure`` with ``ncols`` axes side by side (no pyplot, no backend switch), shown inline in Jupyter."""
    fig = InlineFigure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def curves_figure(history: dict[str, Any], best_epoch: int | None = None) -> Figure:
    """Two panels, "Loss" and "Accuracy": train vs val per epoch, the best epoch marked."""
    fig, (ax_loss, ax_acc) = new_figure((10, 4), ncols=2)
    epochs = list(range(1, len(history["val"]["loss"]) + 1))
    panels = ((ax_loss, "loss", "Loss", "cross-entropy per sample"), (ax_acc, "accuracy", "Accuracy", "accuracy (%)"))
    for ax, key, title, ylabel in panels:
        scale = 100.0 if key == "accuracy" else 1.0
        for split, style in (("train", "o-"), ("val", "s-"), ("val_ema", "^--")):
            if split in history and history[split][key]:
                ax.plot(epochs, [v * scale for v in history[split][key]], style, ms=3, label=split.replace("_", " "))
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
    return fig


def plot_curves(history: dict[str, Any], path: str | Path, best_epoch: int | None = None) -> Path:
    """``curves_figure`` saved as PNG."""
    return save_figure(curves_figure(history, best_epoch), path)


def confusion_matrix_figure(matrix: Any, title: str = "Confusion matrix") -> Figure:
    """Counts of true (rows) vs predicted (columns) classes, annotated, as a heat map (any array-like 10x10)."""
    cm = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix).astype(np.int64)
    fig, ax = new_figure((6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n), CLASS_NAMES)
    ax.set_yticks(range(n), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2
    for i in range(n):
        for j in range(n):
            value = int(cm[i, j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]] | Any, path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """``confusion_matrix_figure`` saved as PNG."""
    return save_figure(confusion_matrix_figure(matrix, title), path)
