"""Where training runs: the device of this process, the devices of a data-parallel job, and ``--deterministic``.

``place_processes`` is the whole decision for data-parallel runs, a pure function of the flags and the number
of GPUs, so it is tested on machines without one::

    place_processes("gloo", "auto", nproc_per_node=2, gpu_count=1)   # CPU processes (the GPU is hidden from them)
    place_processes("nccl", "auto", nproc_per_node=2, gpu_count=1)   # ValueError, before anything is spawned
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ignite.distributed as idist
import torch

from ignite_lenet import CUBLAS_WORKSPACE_CONFIG  # set as the default when the package is imported


def resolve_device(name: str) -> torch.device:
    """The device this process trains on: ``cpu``, ``cuda`` (a ``ValueError`` without a GPU) or ``auto``.

    ``auto`` is CUDA when this process sees a GPU, else CPU. In a data-parallel job a process with a GPU uses
    the one ignite gave it (``cuda:local_rank``); a ``gloo`` job trains on CPU unless ``--device cuda`` is
    given (``launch`` also hides the GPUs from such processes, see ``place_processes``).
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if idist.get_world_size() > 1:
        if name == "auto" and idist.backend() == "gloo":
            return torch.device("cpu")
        return idist.device()  # cuda:local_rank: ignite calls torch.cuda.set_device(local_rank)
    return torch.device("cuda")


@dataclass(frozen=True)
class ProcessPlacement:
    """How the processes of a data-parallel job use this machine: the backend, and one GPU each or CPUs only."""

    backend: str
    gpus: bool  # True: process ``local_rank`` trains on ``cuda:local_rank``

    @property
    def hide_gpus(self) -> bool:
        """CPU processes must not see the GPUs: ignite puts every process on ``cuda:local_rank`` when CUDA exists."""
        return not self.gpus


def _plural(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def place_processes(backend: str | None, device: str, nproc_per_node: int, gpu_count: int) -> ProcessPlacement:
    """Decide the backend and the devices of ``nproc_per_node`` local processes; ``ValueError`` when impossible.

    - ``gloo`` runs on CPU unless ``--device cuda`` is given, which needs a GPU per local process.
    - ``nccl`` (and ``--device cuda``) need a GPU per local process; with fewer the job is refused here, before
      spawning, in one line that says what to do.
    - ``backend=None`` (torchrun without ``--backend``): ``nccl`` on GPUs when there is one per process (or with
      ``--device cuda``), else ``gloo`` on CPUs.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (choose).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``--device``).
        nproc_per_node: processes on this machine (``--nproc-per-node``, or torchrun's ``LOCAL_WORLD_SIZE``).
        gpu_count: GPUs this machine shows to the launcher (``torch.cuda.device_count()``).
    """
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be a positive integer, got {nproc_per_node!r}")
    enough = gpu_count >= nproc_per_node
    if device == "cpu":
        if backend == "nccl":
            raise ValueError("--backend nccl needs a GPU per process, but --device cpu was given; "
                             "use --backend gloo for CPU processes")
        return ProcessPlacement("gloo", gpus=False)
    if backend == "gloo":
        if device != "cuda":
            return ProcessPlacement("gloo", gpus=False)
        if not enough:
            raise ValueError(f"--nproc-per-node {nproc_per_node} --device cuda needs {_plural(nproc_per_node)}, "
                             f"this machine has {gpu_count}; drop --device cuda for CPU processes")
        return ProcessPlacement("gloo", gpus=True)
    if backend is None and device == "auto" and not enough:
        return ProcessPlacement("gloo", gpus=False)
    if not enough:  # nccl, or --device cuda with the backend left to choose
        raise ValueError(f"--nproc-per-node {nproc_per_node} needs {_plural(nproc_per_node)}, "
                         f"this machine has {gpu_count}; use --backend gloo for CPU processes")
    return ProcessPlacement("nccl" if backend is None else backend, gpus=True)


@contextmanager
def gpus_hidden(hide: bool = True) -> Iterator[None]:
    """Set ``CUDA_VISIBLE_DEVICES=""`` inside the block (restored after), so processes started in it see no GPU.

    It takes effect in processes that initialise CUDA afterwards: children spawned inside the block (they
    inherit the environment), or this process if nothing in it has touched CUDA yet (a torchrun worker).
    """
    if not hide:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@contextmanager
def configure_determinism(enabled: bool, warn_only: bool = False) -> Iterator[None]:
    """Inside the block, torch uses deterministic algorithms only (``--deterministic``); everything is restored after.

    Sets ``torch.use_deterministic_algorithms(True, warn_only=...)``, ``cudnn.benchmark = False``,
    ``cudnn.deterministic = True`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when the environment does not set it
    (importing ``ignite_lenet`` already sets it: PyTorch reads it once per process, at the first matrix
    product, so later is too late; ``check_cublas_workspace`` tells); processes spawned inside it inherit the
    variable. Seeds are the caller's. Every op of LeNet-5's training and evaluation (convolutions, tanh,
    ``avg_pool2d`` and its backward, linear layers, 1-D cross-entropy, fused Adam, Ignite's
    Accuracy/Loss/ConfusionMatrix without weights, ``grid_sample`` forward) has a deterministic CUDA
    implementation, so ``warn_only`` stays ``False``: an op without one fails loudly, naming itself.
    ``enabled=False`` changes nothing.
    """
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    env_was_set = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if not env_was_set:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def check_cublas_workspace(device: torch.device | str) -> None:
    """For ``--deterministic`` on CUDA (inside ``configure_determinism``): a one-line ``ValueError`` when this
    process ran a CUDA matrix product before ``CUBLAS_WORKSPACE_CONFIG`` was set, instead of a RuntimeError at
    the first deterministic GEMM, mid-run.

    PyTorch checks the variable at the first GEMM of the process and keeps the answer, so setting it afterwards
    changes nothing. ``import ignite_lenet`` sets it, so this fails only when CUDA work ran before the package was
    imported (or the variable was removed). A process that has not initialised CUDA has run no GEMM: nothing to
    check; otherwise one 2x2 product on the device asks cuBLAS's own check (a torch without that check, since
    PyTorch #161749, passes).
    """
    if torch.device(device).type != "cuda" or not torch.cuda.is_initialized():
        return
    try:
        _deterministic_gemm(torch.device(device))
    except RuntimeError as e:
        if "CUBLAS_WORKSPACE_CONFIG" not in str(e):
            raise
        raise ValueError(f"--deterministic: this process ran CUDA matrix products before CUBLAS_WORKSPACE_CONFIG "
                         f"was set, and cuBLAS reads it only once; start a new process with "
                         f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} set (or import ignite_lenet before "
                         f"any CUDA work)") from None


def _deterministic_gemm(device: torch.device) -> None:
    a = torch.ones(2, 2, device=device)
    torch.mm(a, a)
