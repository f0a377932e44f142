"""MNIST: locate or download the IDX files, validate them, preprocess once, serve batches from memory.

The notebook ran ``transforms.Resize((32, 32))`` and ``ToTensor()`` on every PIL image through a
``DataLoader``; that costs more than the LeNet-5 training step itself. Here the whole set is resized once
(bit-identical to that pipeline: torchvision's uint8 bilinear antialiased resize matches PIL's) into one
float32 tensor, and ``InMemoryLoader`` draws shuffled batches from it by indexing.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .model import INPUT_SHAPE

SOURCE_SIZE = 28  # MNIST digits are 28x28
IMAGE_SIZE = INPUT_SHAPE[-1]  # LeNet-5 takes 32x32
PREPROCESSING = {
    "resize": [IMAGE_SIZE, IMAGE_SIZE],
    "interpolation": "bilinear, antialiased (torchvision Resize((32, 32)) on PIL)",
    "scale": "pixel / 255 -> [0, 1], float32",
    "polarity": "white digit on black background",
    "layout": "NCHW [batch, 1, 32, 32]",
}
HOLDOUT_SEED = 0  # fixed, so runs with different --seed are validated on the same held-out images

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


class DatasetError(ValueError):
    """A data file exists but is not what it should be (truncated, corrupt, wrong shape)."""


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision's layout keeps the IDX files: ``DATA_DIR/MNIST/raw``."""
    return Path(data_dir) / "MNIST" / "raw"


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: not a readable gzip file ({e})") from None
    return path.read_bytes()


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
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_idx(_read_bytes(path), str(path))


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(data_dir: Path) -> None:
    """torchvision's downloader (mirrors, MD5 checks, extraction), with a timeout so that offline fails fast."""
    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            datasets.MNIST(str(data_dir), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def ensure_mnist(data_dir: str | Path, download: bool = True) -> Path:
    """Make sure the four MNIST files are in ``DATA_DIR/MNIST/raw`` (downloading them if allowed); returns that dir.

    Raises ``FileNotFoundError`` with one line naming the missing files and where to put them.
    """
    raw = raw_dir(data_dir)
    names = [name for split in MNIST_FILES.values() for name in split]
    missing = [n for n in names if _find(raw, n) is None]
    if not missing:
        return raw
    where = (f"copy the MNIST IDX files (plain or .gz) into {raw}, or point --data-dir at a directory that "
             f"has MNIST/raw/")
    if not download:
        raise FileNotFoundError(f"MNIST file(s) {', '.join(missing)} not found in {raw}; {where}, or drop --no-download to download them")
    try:
        _download(Path(data_dir))
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(e).__name__)[:160]
        raise FileNotFoundError(
            f"MNIST file(s) {', '.join(missing)} missing from {raw} and the download failed ({reason}); {where}"
        ) from None
    missing = [n for n in names if _find(raw, n) is None]
    if missing:
        raise FileNotFoundError(f"MNIST file(s) {', '.join(missing)} still missing from {raw} after the download; {where}")
    return raw


def _read_mnist_file(path: Path, name: str) -> np.ndarray:
    data = _read_bytes(path)
    array = parse_idx(data, str(path))
    if hashlib.sha256(data).hexdigest() != MNIST_SHA256[name]:
        raise DatasetError(
            f"{path}: checksum mismatch (SHA-256 is not the original MNIST file's); the file is corrupt, "
            f"replace it or delete it to download it again"
        )
    return array


def load_mnist(data_dir: str | Path, split: str = "train", download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Original MNIST images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of ``split`` ('train' or 'test').

    Files are looked for in ``DATA_DIR/MNIST/raw`` (plain or ``.gz``) and downloaded there when missing and
    ``download`` is true. Raises ``FileNotFoundError`` (missing, with where to put them) or ``DatasetError``
    (truncated or corrupt), each with a one-line message.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    raw = ensure_mnist(data_dir, download)
    images_name, labels_name = MNIST_FILES[split]
    images = _read_mnist_file(_find(raw, images_name), images_name)
    labels = _read_mnist_file(_find(raw, labels_name), labels_name)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def preprocess(images: torch.Tensor | np.ndarray, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> torch.Tensor:
    """Model input ``(N, 1, 32, 32)`` float32 in [0, 1] from ``(N, H, W)`` or ``(N, 1, H, W)`` images.

    uint8 images are resized in uint8 exactly as ``transforms.Resize((32, 32))`` does on PIL images and then
    scaled by 1/255 (what ``ToTensor`` does); float images are taken to be in [0, 1] already.
    """
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != tuple(size):
        if x.dtype != torch.uint8:
            x = x.float()
        x = TF.resize(x, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    return x.float()


@dataclass
class Split:
    """Preprocessed images ``(N, 1, 32, 32)`` float32 and labels ``(N,)`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass
class MNISTData:
    """The splits a run uses: ``train`` to fit, ``val`` to select the best epoch, ``test`` to report, and
    ``train_eval`` (a fixed sample of ``train``) for the train curves."""

    train: Split
    val: Split
    test: Split
    train_eval: Split

    def to(self, device: torch.device | str) -> MNISTData:
        return MNISTData(self.train.to(device), self.val.to(device), self.test.to(device), self.train_eval.to(device))


def load_data(
    data_dir: str | Path,
    download: bool = True,
    val_source: str = "holdout",
    val_size: int = 5000,
    train_eval_size: int = 5000,
) -> MNISTData:
    """Load, validate and preprocess MNIST into the run's splits (see ``TrainConfig`` for the arguments)."""
    train_images, train_labels = load_mnist(data_dir, "train", download)
    test_images, test_labels = load_mnist(data_dir, "test", download)
    full = Split(preprocess(train_images), train_labels)
    test = Split(preprocess(test_images), test_labels)
    if val_source == "holdout":
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
        train, val = full.subset(order[val_size:].sort().values), full.subset(order[:val_size].sort().values)
    elif val_source == "test":
        train, val = full, test
    else:
        raise ValueError(f"val_source must be 'holdout' or 'test', got {val_source!r}")
    if 0 < train_eval_size < len(train):
        sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(HOLDOUT_SEED + 1))
        train_eval = train.subset(sample[:train_eval_size].sort().values)
    else:
        train_eval = train
    return MNISTData(train=train, val=val, test=test, train_eval=train_eval)


class InMemoryLoader:
    """Mini-batches ``(images, labels)`` drawn by indexing tensors that already sit in memory (or on the GPU).

    With ``shuffle`` the order is a permutation seeded by ``seed + epoch`` (call ``set_epoch`` each epoch, as
    with ``DistributedSampler``), so a resumed run sees exactly the batches an uninterrupted one would.
    With ``world_size > 1`` each rank takes every ``world_size``-th index of that order: disjoint shards that
    cover the set; ``pad=True`` repeats a few indices so that every rank gets the same number (training needs
    equal step counts), ``pad=False`` keeps shards exact (evaluation). ``max_batches`` caps an epoch.
    ``augment`` (e.g. ``augment.RandomAffine()``) transforms every batch with a generator seeded by seed, epoch and rank.

    Example::

        loader = InMemoryLoader(data.train, batch_size=32, shuffle=True, seed=0)
        for epoch in range(1, 3):
            loader.set_epoch(epoch)
            for x, y in loader:  # x: (32, 1, 32, 32), y: (32,)
                ...
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        max_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_batches = max_batches
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = epoch

    def shard_size(self) -> int:
        n = len(self.split)
        if self.world_size == 1:
            return n
        if self.pad:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        batches = math.ceil(self.shard_size() / self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def indices(self) -> torch.Tensor | None:
        """This rank's sample indices for the current epoch (``None``: all, in order)."""
        n = len(self.split)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.pad:
                total = self.shard_size() * self.world_size
                order = torch.cat([order, order[: total - n]])
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self):  # noqa: ANN204 - yields (images, labels)
        images, labels = self.split.images, self.split.labels
        order = self.indices()
        if order is not None:
            order = order.to(images.device)
        bs = self.batch_size
        generator = None
        if self.augment is not None:  # its own stream: the batch order must not depend on it
            generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1009 + self.rank) + 1)
        for i in range(len(self)):
            if order is None:  # contiguous slices are views: no copy
                x, y = images[i * bs : (i + 1) * bs], labels[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                x, y = images[idx], labels[idx]
            yield (x if generator is None else self.augment(x, generator)), y
