"""MNIST's IDX files without torch: parse, validate against the original digests, locate, download.

    from ignite_lenet.mnist_files import read_mnist
    images, labels = read_mnist("../shared/datasets", "test", download=False)   # (10000, 28, 28) uint8, (10000,) int64

Serving (``predict --test-set``, ``export``'s verification) reads MNIST through this module, so it needs only
numpy; torchvision is imported only to download missing files.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_COUNTS = {"train": 60000, "test": 10000}
# SHA-256 of the uncompressed original files (the same digests for their .gz downloads once inflated).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
DOWNLOAD_TIMEOUT_S = 15.0  # per connection attempt; torchvision tries two mirrors

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_BYTES = 1 << 31  # 2 GiB: far above MNIST (47 MB), a bound on what a header may ask for


class DatasetError(ValueError):
    """A data file exists but is not what it should be (truncated, corrupt, wrong shape)."""


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision's layout keeps the IDX files: ``DATA_DIR/MNIST/raw``."""
    return Path(data_dir) / "MNIST" / "raw"


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_IDX_BYTES + 1)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DatasetError(f"{path}: not a readable gzip file ({e})") from None
    else:
        if path.is_dir():
            raise DatasetError(f"{path}: a directory, not an IDX file")
        with open(path, "rb") as f:
            data = f.read(MAX_IDX_BYTES + 1)
    if len(data) > MAX_IDX_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_IDX_BYTES >> 30} GiB, not an MNIST-like IDX file")
    return data


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse the IDX format (magic 0x0000TTDD, big-endian dims, then the values), checking the length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{name}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{name}: {'truncated' if len(data) < expected else 'has trailing bytes'} "
            f"(header says shape {shape}: {expected} bytes, file has {len(data)})"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) such as MNIST's into a numpy array.

    Raises ``FileNotFoundError`` when it is missing and ``DatasetError`` when it is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_idx(_read_bytes(path), str(path))


def find_file(raw: Path, name: str) -> Path | None:
    """``raw/name`` or ``raw/name.gz``, whichever exists first; ``None`` when neither does."""
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _names(splits: Iterable[str]) -> list[str]:
    splits = list(splits)
    unknown = [s for s in splits if s not in MNIST_FILES]
    if unknown:
        raise ValueError(f"split must be 'train' or 'test', got {', '.join(map(repr, unknown))}")
    return [name for split in splits for name in MNIST_FILES[split]]


def has_mnist(data_dir: str | Path, splits: Iterable[str] = ("train", "test")) -> bool:
    """Whether ``DATA_DIR/MNIST/raw`` holds the files of ``splits`` (presence only; contents are checked on read)."""
    raw = raw_dir(data_dir)
    return all(find_file(raw, name) is not None for name in _names(splits))


def _download(data_dir: Path) -> None:
    """torchvision's downloader (mirrors, MD5 checks, extraction), with a timeout so that offline fails fast.

    It downloads into a temporary directory and moves only complete files into ``DATA_DIR/MNIST/raw``: a
    failed download leaves neither partial files nor empty directories behind.
    """
    from torchvision import datasets  # the one torch-side import of this module, only when downloading

    ancestors = [p for p in reversed(data_dir.absolute().parents) if not p.exists()]
    created = ancestors + [p for p in (data_dir, data_dir / "MNIST", raw_dir(data_dir)) if not p.exists()]
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".mnist-download-"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            datasets.MNIST(str(staging), train=train, download=True)
        raw = raw_dir(data_dir)
        raw.mkdir(parents=True, exist_ok=True)
        for name in _names(MNIST_FILES):
            found = find_file(raw_dir(staging), name)
            if found is not None and find_file(raw, name) is None:
                os.replace(found, raw / found.name)
    finally:
        socket.setdefaulttimeout(previous)
        shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(created):  # deepest first; only what this call created, only if left empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def ensure_mnist(data_dir: str | Path, download: bool = True, splits: Iterable[str] = ("train", "test")) -> Path:
    """Make sure the MNIST files of ``splits`` are in ``DATA_DIR/MNIST/raw`` (downloading them if allowed).

    Returns that directory. Raises ``FileNotFoundError`` with one line naming the missing files and where to
    put them.
    """
    raw = raw_dir(data_dir)
    names = _names(splits)
    missing = [n for n in names if find_file(raw, n) is None]
    if not missing:
        return raw
    where = (f"copy the MNIST IDX files (plain or .gz) into {raw}, or point --data-dir at a directory that "
             f"has MNIST/raw/")
    if not download:
        raise FileNotFoundError(f"MNIST file(s) {', '.join(missing)} not found in {raw}; {where}, or drop "
                                f"--no-download to download them")
    try:
        _download(Path(data_dir))
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(e).__name__)[:160]
        raise FileNotFoundError(
            f"MNIST file(s) {', '.join(missing)} missing from {raw} and the download failed ({reason}); {where}"
        ) from None
    missing = [n for n in names if find_file(raw, n) is None]
    if missing:
        raise FileNotFoundError(f"MNIST file(s) {', '.join(missing)} still missing from {raw} after the download; "
                                f"{where}")
    return raw


def read_mnist_file(path: Path, name: str) -> np.ndarray:
    """One MNIST IDX file, checked against the original file's SHA-256."""
    data = _read_bytes(path)
    array = parse_idx(data, str(path))
    if hashlib.sha256(data).hexdigest() != MNIST_SHA256[name]:
        raise DatasetError(
            f"{path}: checksum mismatch (SHA-256 is not the original MNIST file's); the file is corrupt, "
            f"replace it or delete it to download it again"
        )
    return array


def read_mnist(data_dir: str | Path, split: str = "train", download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Original MNIST images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of ``split`` ('train' or 'test').

    Files are looked for in ``DATA_DIR/MNIST/raw`` (plain or ``.gz``) and downloaded there when missing and
    ``download`` is true. Raises ``FileNotFoundError`` (missing, with where to put them) or ``DatasetError``
    (truncated or corrupt), each with a one-line message.
    """
    raw = ensure_mnist(data_dir, download, splits=(split,))
    images_name, labels_name = MNIST_FILES[split]
    images = read_mnist_file(find_file(raw, images_name), images_name)
    labels = read_mnist_file(find_file(raw, labels_name), labels_name)
    return images, labels.astype(np.int64)
