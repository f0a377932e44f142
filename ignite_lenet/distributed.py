"""Data-parallel launching through ``ignite.distributed`` (``idist.Parallel``): spawned processes or torchrun.

    python -m ignite_lenet.train --nproc-per-node 2 --backend gloo                  # spawns 2 processes (CPU)
    torchrun --nproc-per-node 2 -m ignite_lenet.train --backend gloo                # the same under torchrun
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 --nproc-per-node 8 \\
        -m ignite_lenet.train --backend nccl                                          # one of two machines

Without ``--backend`` and outside torchrun nothing here runs: single-process training is unchanged.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import torch

from .config import TrainConfig
from .data import ensure_mnist

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def requested(cfg: TrainConfig) -> bool:
    """Whether this run is distributed: ``--backend`` given, or a torchrun launch."""
    return cfg.backend is not None or launched_by_torchrun()


def resolve_backend(cfg: TrainConfig) -> str:
    """The backend to use, checked: nccl needs CUDA; under torchrun gloo (or nccl with GPUs) when none is given."""
    backend = cfg.backend or ("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
    if backend not in idist.available_backends():
        raise ValueError(f"--backend {backend}: not available in this torch build "
                         f"(available: {', '.join(idist.available_backends()) or 'none'})")
    if backend == "nccl" and (not torch.cuda.is_available() or cfg.device == "cpu"):
        raise ValueError("--backend nccl needs CUDA GPUs; use --backend gloo to train on CPUs")
    if cfg.nproc_per_node is not None and launched_by_torchrun():
        raise ValueError("--nproc-per-node is torchrun's job here: drop it when launching with torchrun")
    if cfg.nproc_per_node is not None and backend == "nccl" and cfg.nproc_per_node > torch.cuda.device_count():
        raise ValueError(f"--nproc-per-node {cfg.nproc_per_node} with nccl needs as many GPUs "
                         f"({torch.cuda.device_count()} visible)")
    return backend


def threads_per_process(local_world_size: int) -> int:
    """CPU threads for each of ``local_world_size`` processes sharing this machine (no oversubscription)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


class WorkerError(Exception):
    """A user error (bad data directory, bad setting) raised in a worker process, carried to the launcher."""


_CHILD_ERROR = re.compile(r"^(?:ignite_lenet\.\S+\.)?(?:WorkerError|\w*Error): (.*)$")


def _one_line(exc: BaseException) -> str:
    """The child's own message from torch.multiprocessing's ``ProcessRaisedException`` text (its last line)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _CHILD_ERROR.match(line.strip())
        if match:
            return match.group(1)
    return lines[-1] if lines else type(exc).__name__


def _worker(local_rank: int, train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig) -> dict[str, Any]:
    if cfg.threads is None:
        torch.set_num_threads(threads_per_process(idist.get_nproc_per_node()))
    if torch.cuda.is_available() and cfg.device != "cpu":
        torch.cuda.set_device(local_rank)
    try:
        return train(cfg)
    except (OSError, ValueError) as e:  # one clear line in the launcher, not a traceback per process
        raise WorkerError(" ".join(str(e).split())) from None


def launch(train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig) -> dict[str, Any] | None:
    """Run ``train(cfg)`` in every process of the job; returns rank 0's result in the process that has it.

    With ``--nproc-per-node`` the processes are spawned here and the launcher returns ``None`` (rank 0 wrote
    ``metrics.json``); under torchrun each process runs its own rank. A failure in any rank ends the job
    (spawn terminates the other processes) and is raised here as one ``ValueError`` line.
    """
    backend = resolve_backend(cfg)
    if cfg.nproc_per_node:  # fail (or download) once, here, rather than in every spawned process
        ensure_mnist(cfg.data_dir, cfg.download)
    # the launcher's INFO lines and torch's "Terminating process" warning would bury the one-line error
    logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    results: list[dict[str, Any]] = []
    try:
        with idist.Parallel(backend=backend, nproc_per_node=cfg.nproc_per_node) as parallel:
            if cfg.nproc_per_node:  # spawned: rank 0 writes metrics.json, nothing comes back to this process
                parallel.run(_worker, train, cfg)
            else:  # torchrun: this process is one rank (Parallel.run returns nothing, so collect it here)
                parallel.run(_collect, train, cfg, results)
    except WorkerError as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # torch.multiprocessing's ProcessRaisedException / ProcessExitedException
        if type(e).__name__.startswith("Process"):
            raise ValueError(_one_line(e)) from None
        raise
    return results[0] if results else None


def _collect(local_rank: int, train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig,
             results: list[dict[str, Any]]) -> None:
    results.append(_worker(local_rank, train, cfg))
