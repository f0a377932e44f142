"""Training throughput (images/s): the notebook's pipeline against ours, and a plain loop against Ignite.

    pytest benchmarks/test_training.py --benchmark-only            # measure (prints the table, medians)
    pytest benchmarks/test_training.py                             # CI: each case runs once, for correctness

Pipelines, all on real MNIST, summed cross-entropy, Adam lr 1e-3:
- ``notebook``: torchvision ``MNIST`` + per-image ``Resize``/``ToTensor`` through a ``DataLoader``, the plain
  model (``reference.NotebookLeNet5``), default Adam, a hand-written loop: the original notebook.
- ``memory-plain-model``: our in-memory batches, the same plain model and loop (the data pipeline's share).
- ``memory-plain-loop``: in-memory batches, ``LeNet5`` in channels_last with conv3 as a GEMM, fused Adam, a
  hand-written loop (the model's share).
- ``ignite``: the product: the same as ``memory-plain-loop`` through ``engines.create_trainer`` (Ignite's
  overhead, as the ratio to ``memory-plain-loop``).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ignite_lenet.data import InMemoryLoader
from ignite_lenet.engines import create_loss, create_trainer
from ignite_lenet.model import LeNet5, optimize_layout
from ignite_lenet.reference import NotebookLeNet5, notebook_loader

from bench_utils import DEVICES, record

IMAGES_PER_ROUND = 9600  # per timed round; 320 when benchmarks are disabled (CI correctness mode)
PIPELINES = ("notebook", "memory-plain-model", "memory-plain-loop", "ignite")


def _steps(benchmark, batch_size: int) -> int:
    return max(1, (320 if benchmark.disabled else IMAGES_PER_ROUND) // batch_size)


def _plain_loop(model, optimizer, batches, device):
    criterion = create_loss()

    def train(steps: int) -> float:
        loss = torch.zeros(())
        for x, y in itertools.islice(batches(), steps):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            model.train()
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        return loss.item()  # one sync at the end (the Ignite trainer syncs every step for its output)

    return train


def _build(pipeline: str, batch_size: int, device: torch.device, data, mnist_dir):
    torch.manual_seed(0)
    if pipeline in ("notebook", "memory-plain-model"):
        model = NotebookLeNet5().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = optimize_layout(LeNet5()).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    if pipeline == "notebook":
        loader = notebook_loader(mnist_dir, train=True, batch_size=batch_size)
        return _plain_loop(model, optimizer, lambda: iter(loader), device)
    split = data.train.to(device)
    loader = InMemoryLoader(split, batch_size, shuffle=True)
    if pipeline != "ignite":
        return _plain_loop(model, optimizer, lambda: iter(loader), device)
    trainer = create_trainer(model, optimizer, device)

    def train(steps: int) -> float:
        loader.max_batches = steps
        trainer.run(loader, max_epochs=1)
        return trainer.state.output

    return train


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [32, 256])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_training_throughput(benchmark, pipeline, batch_size, device, mnist_data, mnist_dir):
    device = torch.device(device)
    train = _build(pipeline, batch_size, device, mnist_data, mnist_dir)
    steps = _steps(benchmark, batch_size)
    benchmark.group = f"training {device.type} batch {batch_size}"
    loss = benchmark.pedantic(train, args=(steps,), rounds=5, warmup_rounds=1, iterations=1)
    assert loss == loss and loss > 0  # finite, real training happened
    record(benchmark, images=steps * batch_size, engine=pipeline, device=device, batch_size=batch_size,
           kind="training")
