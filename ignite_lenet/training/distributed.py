"""Data-parallel launching through ``ignite.distributed`` (``idist.Parallel``): spawned processes or torchrun.

    python -m ignite_lenet.train --nproc-per-node 2 --backend gloo                  # spawns 2 processes (CPU)
    torchrun --nproc-per-node 2 -m ignite_lenet.train --backend gloo                # the same under torchrun
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 --nproc-per-node 8 \\
        -m ignite_lenet.train --backend nccl                                          # one of two machines

Without ``--backend`` and outside torchrun nothing here runs: single-process training is unchanged.
Where each process trains is ``place_processes``: ``gloo`` processes train on CPU (the GPUs are hidden
from them) unless ``--device cuda`` is given; too few GPUs for ``nccl`` is refused before anything is spawned.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ignite.distributed as idist
import torch

from ignite_lenet.checkpoints import load_checkpoint
from ignite_lenet.config import TrainConfig
from ignite_lenet.mnist.idx import ensure_mnist
from ignite_lenet.training.devices import ProcessPlacement, gpus_hidden, place_processes

T = TypeVar("T")


def on_rank0(work: Callable[[], T]) -> T | None:
    """``work()`` run by rank 0 alone, which owns the run directory (the other ranks get ``None``).

    The other ranks of a multi-node job may run on machines that do not see rank 0's disk. Rank 0's user error
    (``OSError``, ``ValueError``) is raised on every rank, so all of them stop together: rank 0 raises its own,
    the others a ``FileNotFoundError`` or ``ValueError`` with its message. Every rank must call it.
    """
    if idist.get_world_size() == 1:
        return work()
    result, failure, error = None, None, ""
    if idist.get_rank() == 0:
        try:
            result = work()
        except (OSError, ValueError) as e:
            failure, error = e, f"{type(e).__name__}:{e}"
    error = idist.broadcast(error, src=0)
    if failure is not None:
        raise failure
    if error:
        kind, _, message = error.partition(":")
        raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(message)
    return result


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``; in a data-parallel job wrapped in ``DistributedDataParallel`` (gradients
    all-reduced), on ``device``'s GPU or on CPU.

    Not ``idist.auto_model``: it moves the model to ``idist.device()``, which is CUDA whenever the process sees a
    GPU, whatever ``--device`` says (a ``--device cpu`` run on a GPU machine would train on the GPU and evaluate
    on the CPU), and in a single process on a machine with several GPUs it wraps the model in ``DataParallel``,
    which a captured CUDA-graph step cannot replay. A single process is never wrapped.
    """
    model = model.to(device)
    if idist.get_world_size() == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def checkpoint_from_rank0(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """``load_checkpoint(path)`` read by rank 0 alone and sent to every rank (``idist.broadcast``, ``on_rank0``)."""
    if idist.get_world_size() == 1:
        return load_checkpoint(path, map_location)
    idist.barrier()  # rank 0 has finished writing what the others are about to read

    def read() -> bytes:
        load_checkpoint(path)  # the same checks as a single process
        return path.read_bytes()

    payload = on_rank0(read) or b""
    size = int(idist.broadcast(len(payload), src=0))
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.empty(size, dtype=torch.uint8)
    data = idist.broadcast(data.to(idist.device()), src=0).cpu()  # nccl broadcasts from the GPU
    return torch.load(io.BytesIO(data.numpy().tobytes()), map_location=map_location, weights_only=True)


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def requested(cfg: TrainConfig) -> bool:
    """Whether this run is distributed: ``--backend`` given, or a torchrun launch."""
    return cfg.backend is not None or launched_by_torchrun()


def local_processes(cfg: TrainConfig) -> int:
    """Processes of the job on this machine: ``--nproc-per-node``, or torchrun's ``LOCAL_WORLD_SIZE``."""
    if cfg.nproc_per_node is not None:
        return cfg.nproc_per_node
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _gpu_count(backend: str | None, device: str) -> int:
    """GPUs of this machine, counted only when the placement depends on it.

    Counting may initialise CUDA in this process (when NVML is unavailable), after which hiding the GPUs from
    it no longer works: a torchrun worker that is to train on CPU must not count.
    """
    if device == "cpu" or (backend == "gloo" and device != "cuda"):
        return 0
    return torch.cuda.device_count()


def place(cfg: TrainConfig) -> ProcessPlacement:
    """The backend and devices of this job (``place_processes``), checked against this torch build."""
    if cfg.nproc_per_node is not None and launched_by_torchrun():
        raise ValueError("--nproc-per-node is torchrun's job here: drop it when launching with torchrun")
    placement = place_processes(cfg.backend, cfg.device, local_processes(cfg), _gpu_count(cfg.backend, cfg.device))
    if placement.backend not in idist.available_backends():
        raise ValueError(f"--backend {placement.backend}: not available in this torch build "
                         f"(available: {', '.join(idist.available_backends()) or 'none'})")
    return placement


def threads_per_process(local_world_size: int) -> int:
    """CPU threads for each of ``local_world_size`` processes sharing this machine (no oversubscription)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


class WorkerError(Exception):
    """A user error (bad data directory, bad setting) raised in a worker process, carried to the launcher."""


# hints CUDA and torch append to their messages: never the line that says what happened
_HINTS = ("CUDA kernel errors might be asynchronously reported", "For debugging consider passing CUDA_LAUNCH_BLOCKING",
          "Compile with `TORCH_USE_CUDA_DSA`", "Search for `cuda", "Device-side assertion tracking was not enabled")
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")


def _parse_failure(text: str) -> tuple[str | None, str]:
    """``(exception type, first line of its message)`` of the last traceback in ``text``; type ``None`` without one."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"]
    i = starts[-1] + 1 if starts else 0
    while starts and i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):  # frames, code, carets
        i += 1
    report = [line.strip() for line in lines[i:] if line.strip() and not line.strip().startswith(_HINTS)]
    if not report:
        return None, (lines[-1].strip() if lines else "")
    match = _EXCEPTION_LINE.match(report[0]) if starts else None
    if match is None:
        return None, report[0]
    message = (match.group("message") or "").strip()
    if not message and len(report) > 1:  # "RuntimeError:" alone, the message on the lines below
        message = report[1]
    return match.group("type"), message


def failure_line(text: str) -> str:
    """The line of a failed process's report that says what happened, for a one-line error.

    ``text`` is what torch.multiprocessing reports (``-- Process 1 terminated with the following error:`` and
    the worker's traceback) or any exception text. The line is the first line of the last exception of the
    last traceback, as ``type: message`` (the message alone for the package's own ``WorkerError``), never a
    trailing hint such as "For debugging consider passing CUDA_LAUNCH_BLOCKING=1".
    """
    return _format_failure(*_parse_failure(text))


def _is_user_error(kind: str | None) -> bool:
    """No exception type found, or the package's own ``WorkerError``: the message alone says it."""
    return kind is None or kind.split(".")[-1] == WorkerError.__name__


def _format_failure(kind: str | None, message: str) -> str:
    if _is_user_error(kind):
        return message or "a process failed"
    return f"{kind}: {message}" if message else kind


def _rank_failure(exc: BaseException) -> str:
    """One line for a failed spawned process: which one and what happened (a user error: its message alone)."""
    kind, message = _parse_failure(str(exc))
    line = _format_failure(kind, message)
    index = getattr(exc, "error_index", None)
    return line if _is_user_error(kind) or index is None else f"process {index} failed: {line}"


def _worker(local_rank: int, train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig) -> dict[str, Any]:
    if cfg.threads is None:
        torch.set_num_threads(threads_per_process(idist.get_nproc_per_node()))
    if torch.cuda.is_available() and cfg.device != "cpu":
        torch.cuda.set_device(local_rank)
    try:
        return train(cfg)
    except (OSError, ValueError) as e:  # one clear line in the launcher, not a traceback per process
        raise WorkerError(" ".join(str(e).split())) from None
    finally:
        # The DistributedDataParallel model (its reducer holds the process group) is still alive here, in the
        # reference cycles of the engines' handlers: freed now, while every rank is up, and not by the collector
        # at interpreter exit, after idist.finalize() destroyed the group and rank 0 took the store down with it
        # (a rank then aborted at exit: "terminate called without an active exception").
        gc.collect()


def launch(train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig) -> dict[str, Any] | None:
    """Run ``train(cfg)`` in every process of the job; returns rank 0's result in the process that has it.

    With ``--nproc-per-node`` the processes are spawned here and the launcher returns ``None`` (rank 0 wrote
    ``metrics.json``); under torchrun each process runs its own rank. A failure in any rank ends the job
    (spawn terminates the other processes) and is raised here as one ``ValueError`` line.
    """
    placement = place(cfg)  # refused here, before spawning, when the machine cannot hold the job
    if cfg.nproc_per_node:  # fail (or download) once, here, rather than in every spawned process
        ensure_mnist(cfg.data_dir, cfg.download)
    # the launcher's INFO lines and torch's "Terminating process" warning would bury the one-line error
    logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    results: list[dict[str, Any]] = []
    try:
        # CPU processes see no GPU: ignite would otherwise put process k on cuda:k (set_device(local_rank): an
        # invalid device ordinal where the machine has fewer GPUs than processes). Spawned processes inherit the
        # hidden GPUs; a torchrun worker hides them from itself, before anything here has initialised CUDA.
        with gpus_hidden(placement.hide_gpus), \
                idist.Parallel(backend=placement.backend, nproc_per_node=cfg.nproc_per_node) as parallel:
            if cfg.nproc_per_node:  # spawned: rank 0 writes metrics.json, nothing comes back to this process
                parallel.run(_worker, train, cfg)
            else:  # torchrun: this process is one rank (Parallel.run returns nothing, so collect it here)
                parallel.run(_collect, train, cfg, results)
    except WorkerError as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # torch.multiprocessing's ProcessRaisedException / ProcessExitedException
        if type(e).__name__.startswith("Process"):
            raise ValueError(_rank_failure(e)) from None
        raise
    return results[0] if results else None


def _collect(local_rank: int, train: Callable[[TrainConfig], dict[str, Any]], cfg: TrainConfig,
             results: list[dict[str, Any]]) -> None:
    results.append(_worker(local_rank, train, cfg))
