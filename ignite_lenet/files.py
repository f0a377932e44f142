"""Files without surprises: atomic writes, JSON, the output-directory check, what kind of archive a file is."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


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


def model_file_kind(path: str | Path) -> str | None:
    """What a model file is: ``"onnx"``, ``"torch-export"`` (``.pt2``), ``"torchscript"`` (a zip archive with
    ``code/``), ``"checkpoint"`` (a ``torch.save`` zip archive without code) or ``None`` (none of these).

    The one dispatch on model files: ``load_model`` and the classifiers of ``predict`` and serving ask it.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2":
        return "torch-export"
    has_code = zip_has_folder(path, "code")
    return None if has_code is None else "torchscript" if has_code else "checkpoint"


def replace_checked(path: str | Path, write: Callable[[Path], None], check: Callable[[Path], T] | None = None) -> T | None:
    """Write ``path`` through a hidden temporary file beside it, ``check`` that file, then rename it into place.

    The one write-verify-rename of the package: readers never see a partial file, a failed write or check
    leaves the previous file (or none) and no temporary file behind. The temporary name keeps ``path``'s suffix
    (``torch.export.save`` insists on ``.pt2``). Returns what ``check`` returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        write(tmp)
        result = check(tmp) if check is not None else None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write the bytes ``write(f)`` produces atomically (``replace_checked``), synced to disk before the rename."""

    def write_synced(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    replace_checked(path, write_synced)
    return Path(path)


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
