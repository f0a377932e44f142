"""The original notebook's pipeline, kept as the baseline that parity tests and benchmarks compare against.

Not used for training: ``data.py`` replaces the per-image pipeline with one in-memory pass (bit-identical
pixels) and ``model.py`` computes the same LeNet-5 faster. The notebook's model also ended in a softmax that
``CrossEntropyLoss`` then log-softmaxed again (a double softmax); ``NotebookLeNet5(softmax=True)`` keeps that
mistake available for comparison only.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ignite_lenet.mnist.idx import ensure_mnist
from ignite_lenet.spec import IMAGE_SIZE


def notebook_transform():  # noqa: ANN201 - a torchvision Compose
    """The notebook's per-image preprocessing: PIL image -> ``Resize((32, 32))`` -> ``ToTensor()``."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor()])


def notebook_loader(data_dir: str | Path, train: bool = True, batch_size: int = 32, shuffle: bool = True) -> DataLoader:
    """torchvision ``MNIST`` with the per-image transforms through a ``DataLoader`` (the notebook's data path)."""
    from torchvision import datasets

    ensure_mnist(data_dir, download=False)
    dataset = datasets.MNIST(str(data_dir), train=train, download=False, transform=notebook_transform())
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


def notebook_loss(label_smoothing: float = 0.0) -> nn.Module:
    """The notebook's training criterion: cross-entropy summed over the batch (not averaged). The product's
    ``TrainStep`` computes the same sum with per-sample weights; this is the plain loops' reference."""
    return nn.CrossEntropyLoss(reduction="sum", label_smoothing=label_smoothing)


class NotebookLeNet5(nn.Module):
    """LeNet-5 computed the plain way: ``conv3`` as a convolution, NCHW; same parameters as ``model.LeNet5``."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 32, 32)
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)  # (B, 6, 14, 14)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)  # (B, 16, 5, 5)
        x = torch.tanh(self.conv3(x)).flatten(1)  # (B, 120)
        x = self.fc2(torch.tanh(self.fc1(x)))  # (B, 10)
        return torch.softmax(x, dim=1) if self.softmax else x
