"""Files without surprises: atomic writes, one-line write errors, JSON, the output-directory check, what kind of
archive a file is."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from ignite_lenet.spec import MODEL_FILES

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

    The one dispatch on model files (``spec.MODEL_FILES`` says how each kind is known): ``load_model`` and the
    classifiers of ``predict`` and serving ask it.
    """
    suffix = Path(path).suffix.lower()
    by_suffix = next((m.kind for m in MODEL_FILES.values() if m.suffix == suffix), None)
    if by_suffix is not None:
        return by_suffix
    for m in MODEL_FILES.values():
        if m.zip_folder is not None:
            has_folder = zip_has_folder(path, m.zip_folder)
            if has_folder is None:
                return None  # no zip archive at all
            if has_folder:
                return m.kind
    return "checkpoint"  # a zip archive of no model kind: what torch.save writes


class WriteError(OSError):
    """A file or directory that could not be written (a full disk, a read-only file system, no permission).

    ``str()`` is one line naming the path and the reason (``cannot write runs/lenet5/best_model.pt: No space
    left on device``), plus ``hint`` when the caller knows what to do next; ``errno`` is the original one.
    """

    def __init__(self, errno: int | None, reason: str, path: str | Path, action: str = "write",
                 hint: str = "") -> None:
        super().__init__(errno, reason, str(path))
        self.action, self.hint = action, hint

    @classmethod
    def of(cls, error: OSError, path: str | Path, action: str = "write") -> WriteError:
        """``error`` (an ``OSError`` of writing ``path``) as a ``WriteError`` naming ``path``."""
        if isinstance(error, WriteError):
            return error
        return cls(error.errno, error.strerror or str(error) or type(error).__name__, path, action)

    def __str__(self) -> str:
        return f"cannot {self.action} {self.filename}: {self.strerror}" + (f"; {self.hint}" if self.hint else "")

    def __reduce__(self) -> tuple:  # OSError's own would call __init__ with (errno, strerror) only
        return type(self), (self.errno, self.strerror, self.filename, self.action, self.hint)


def _concerns(error: OSError, *paths: Path) -> bool:
    """Whether ``error`` is about one of ``paths`` (or about no file at all: a ``write()`` to a full disk)."""
    return error.filename is None or str(error.filename) in {str(p) for p in paths}


def make_dirs(path: str | Path) -> list[Path]:
    """``mkdir -p path``; returns the directories it created, outermost first. ``WriteError`` names the one that
    could not be created."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    for directory in missing:
        try:
            directory.mkdir(exist_ok=True)
        except OSError as e:
            raise WriteError.of(e, directory, "create directory") from None
    return missing


def temporary_files(path: str | Path) -> list[Path]:
    """Temporary files ``replace_checked`` left beside ``path`` when its process was killed mid-write."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.stem)}.*.tmp{glob.escape(path.suffix)}"))


def replace_checked(path: str | Path, write: Callable[[Path], None], check: Callable[[Path], T] | None = None) -> T | None:
    """Write ``path`` through a hidden temporary file beside it, ``check`` that file, then rename it into place.

    The one write-verify-rename of the package: readers never see a partial file, a failed write or check
    leaves the previous file (or none) and no temporary file behind. The temporary name keeps ``path``'s suffix
    (``torch.export.save`` insists on ``.pt2``). Returns what ``check`` returned.

    A failure to write (a full disk, a read-only file system, no permission) is a ``WriteError`` naming
    ``path``: ``write`` should write with Python's file objects, whose errors are ``OSError``s (serialise with
    torch to memory first: torch's own file writer reports a full disk as a ``RuntimeError``).
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise WriteError.of(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
            write(tmp)
        except OSError as e:
            if not _concerns(e, tmp, path):
                raise
            raise WriteError.of(e, path) from None
        result = check(tmp) if check is not None else None
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise WriteError.of(e, path) from None
        _sync_directory(path.parent)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the file system turned read-only: the error being raised says more than this one
            pass
    return result


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write the bytes ``write(f)`` produces atomically (``replace_checked``), synced to disk before the rename."""
    replace_checked(path, lambda tmp: write_synced(tmp, write))
    return Path(path)


def write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Atomically write ``data`` (``atomic_write``): a checkpoint or an export serialised in memory."""
    return atomic_write(path, lambda f: f.write(data))


def write_synced(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create ``path`` with the bytes ``write(f)`` produces, synced to disk: the body of a ``replace_checked`` write,
    with Python's file object, so that a full disk is an ``OSError``."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _sync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (a power cut after it keeps the new file), where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


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
