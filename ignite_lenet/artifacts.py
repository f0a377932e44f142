"""The run directory's files: their names, atomic writes, JSON reading and writing (no torch, no matplotlib).

Other tools depend on these names: ``best_model.pt``, ``history.json``, ``curves.png``, ``metrics.json``,
``config.json``, ``confusion_matrix.png`` (and ``training_checkpoint.pt`` for ``--resume``).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

BEST_MODEL = "best_model.pt"
TRAINING_CHECKPOINT = "training_checkpoint.pt"
HISTORY = "history.json"
CURVES = "curves.png"
METRICS = "metrics.json"
CONFIG = "config.json"
CONFUSION_MATRIX = "confusion_matrix.png"

BEST_MODEL_KEYS = ("model", "config", "epoch", "val_loss", "val_accuracy")


def check_output_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """``path`` as a ``Path``; ``ValueError`` naming ``flag`` when it is, or lies under, an existing file."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == path else f"lies under {parent}, which is a file"
                raise ValueError(f"{flag} {path}: {where}, not a directory")
            break
    return path


def zip_has_folder(path: str | Path, folder: str) -> bool | None:
    """Whether the zip archive ``path`` has a ``*/folder/`` entry (TorchScript archives have ``code/``);
    ``None`` when it is no zip archive at all."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 2)[1:2] == [folder] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return None


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
