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
- ``plain-cuda-graph`` (CUDA only): the reference for a graphed trainer: in-memory batches, ``LeNet5`` in NCHW,
  the whole step (forward, summed cross-entropy, backward, ``Adam(fused=True, capturable=True)``) captured in
  one ``torch.cuda.CUDAGraph`` and replayed per batch, a hand-written loop (what the chip allows).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time

import pytest
import torch
from bench_utils import DEVICES, record

from ignite_lenet.model import LeNet5, optimize_layout
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import create_trainer
from ignite_lenet.training.notebook_baseline import NotebookLeNet5, notebook_loader, notebook_loss
from ignite_lenet.training.optim import create_optimizer

IMAGES_PER_ROUND = 6400  # per pipeline and timed round; 320 when benchmarks are disabled (CI correctness mode)
ROUNDS = 7
PIPELINES = ("notebook", "memory-plain-model", "memory-plain-loop", "ignite")
CUDA_PIPELINES = ("plain-cuda-graph", "ignite-cuda-graph")  # the product's trainer replaying its captured step


def pipelines(device: torch.device) -> tuple[str, ...]:
    """The pipelines measured on ``device``: the four everywhere, the CUDA-graph ones on CUDA."""
    return PIPELINES + (CUDA_PIPELINES if device.type == "cuda" else ())


def _steps(benchmark, batch_size: int) -> int:
    return max(1, (320 if benchmark.disabled else IMAGES_PER_ROUND) // batch_size)


def _plain_loop(model, optimizer, batches, device):
    criterion = notebook_loss()

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


def _graph_loop(batch_size: int, device: torch.device, data):
    """The whole training step captured once in a CUDA graph, replayed with each batch copied into its inputs."""
    model = LeNet5().to(device)  # NCHW: channels_last measured slower on CUDA
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    criterion = notebook_loss()
    loader = InMemoryLoader(data.train.to(device), batch_size, shuffle=True)
    first_x, first_y = next(iter(loader))
    static_x, static_y = first_x.clone(), first_y.clone()  # real data: the warm-up steps really update the model

    def step() -> torch.Tensor:
        loss = criterion(model(static_x), static_y)
        loss.backward()
        optimizer.step()
        return loss

    model.train()
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up on a side stream: optimizer state, cuBLAS/cuDNN workspaces
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # backward in the capture allocates .grad from the graph's pool
    with torch.cuda.graph(graph, stream=side):
        static_loss = step()

    def train(steps: int) -> float:
        for x, y in itertools.islice(iter(loader), steps):
            if x.shape[0] != batch_size:  # the graph has one shape; the timed rounds never reach a partial batch
                raise ValueError(f"plain-cuda-graph: a batch of {x.shape[0]} in a graph captured for {batch_size}")
            static_x.copy_(x, non_blocking=True)
            static_y.copy_(y, non_blocking=True)
            graph.replay()  # forward, backward and the Adam step; the next replay overwrites the gradients
        return static_loss.item()  # one sync at the end, as in the plain loop

    return train


def _build(pipeline: str, batch_size: int, device: torch.device, data, mnist_dir):
    torch.manual_seed(0)
    if pipeline == "plain-cuda-graph":
        if device.type != "cuda":
            raise ValueError("plain-cuda-graph needs a CUDA device")
        return _graph_loop(batch_size, device, data)
    if pipeline in ("notebook", "memory-plain-model"):
        model = NotebookLeNet5().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = optimize_layout(LeNet5(), device).to(device)
        optimizer = create_optimizer(model.parameters(), "adam", 1e-3, device=device,
                                     graphs=pipeline == "ignite-cuda-graph")
    if pipeline == "notebook":
        loader = notebook_loader(mnist_dir, train=True, batch_size=batch_size)
        return _plain_loop(model, optimizer, lambda: iter(loader), device)
    split = data.train.to(device)
    loader = InMemoryLoader(split, batch_size, shuffle=True)
    if not pipeline.startswith("ignite"):
        return _plain_loop(model, optimizer, lambda: iter(loader), device)
    trainer, _ = create_trainer(model, optimizer, batch_size=batch_size, cuda_graphs=pipeline == "ignite-cuda-graph")

    def train(steps: int) -> float:
        loader.max_batches = steps
        trainer.run(loader, max_epochs=1)
        return trainer.state.output.item()  # one sync at the end, as in the plain loops

    return train


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [32, 256])
def test_training_throughput(benchmark, batch_size, device, mnist_data, mnist_dir):
    """The pipelines take turns inside every timed round, so the shared host's load falls on all of them alike;
    the medians of their own turns give the images/s and the ratios to quote."""
    device = torch.device(device)
    names = pipelines(device)
    trains = {name: _build(name, batch_size, device, mnist_data, mnist_dir) for name in names}
    steps = _steps(benchmark, batch_size)
    turns: dict[str, list[float]] = {name: [] for name in names}
    losses: dict[str, float] = {}

    def one_round() -> None:
        for name, train in trains.items():
            start = time.perf_counter()
            losses[name] = train(steps)
            turns[name].append(time.perf_counter() - start)

    benchmark.group = f"training {device.type} batch {batch_size}"
    rounds = 1 if benchmark.disabled else ROUNDS
    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=0 if benchmark.disabled else 1, iterations=1)
    assert all(math.isfinite(loss) and loss > 0 for loss in losses.values()), losses  # real training happened
    images = steps * batch_size
    medians = {name: statistics.median(times[-rounds:]) for name, times in turns.items()}
    record(benchmark, images=images * len(names), engine="interleaved", device=device, batch_size=batch_size,
           kind="training", pipelines_images_per_s={name: images / m for name, m in medians.items()})
