"""MNIST in memory for training: the run's splits, preprocessed once, and batches drawn by indexing.

The notebook ran ``transforms.Resize((32, 32))`` and ``ToTensor()`` on every PIL image through a
``DataLoader``; that costs more than the LeNet-5 training step itself. Here the whole set is resized once
(bit-identical to that pipeline: ``mnist.resize``) into one float32 tensor, and ``InMemoryLoader`` draws
shuffled batches from it by indexing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ignite_lenet.mnist import prefetch

HOLDOUT_SEED = 0  # fixed, so runs with different --seed are validated on the same held-out images


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
    """Load, validate and preprocess MNIST into the run's splits (see ``TrainConfig`` for the arguments).

    Takes the arrays a ``prefetch.start(data_dir)`` prepared while torch was imported, else reads them here.
    """
    arrays = prefetch.take(data_dir) or prefetch.model_inputs(data_dir, download)
    full, test = (Split(torch.from_numpy(arrays[s][0]), torch.from_numpy(arrays[s][1])) for s in ("train", "test"))
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
    ``augment`` (e.g. ``augment.RandomAffine()``) transforms every batch with a generator seeded by seed, epoch
    and rank, on the images' device.

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
            # modulo torch's seed range: a large --seed would overflow it (small seeds keep their streams)
            stream = (((self.seed * 1_000_003 + self.epoch) * 1009 + self.rank) + 1) % 2**64
            # on the images' device: a GPU draws the parameters itself, the CPU keeps its stream
            generator = torch.Generator(device=images.device).manual_seed(stream)
        for i in range(len(self)):
            if order is None:  # contiguous slices are views: no copy
                x, y = images[i * bs : (i + 1) * bs], labels[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                x, y = images[idx], labels[idx]
            yield (x if generator is None else self.augment(x, generator)), y
