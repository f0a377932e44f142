"""What the benchmark suites share: the device list and the ``extra_info`` every case records."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable, Iterator

import onnxruntime
import torch

CUDA = torch.cuda.is_available()


def _cuda_param():
    import pytest

    return pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="no CUDA GPU")])


DEVICES = ["cpu", _cuda_param()]


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool = True) -> Iterator[None]:
    """Set ``torch.backends.cudnn.benchmark`` for the block and restore the caller's value after it.

    The CUDA inference engines run with cuDNN's autotuner on (LeNet's convolutions gain from it); the flag is
    process-wide, so it is put back whatever happens inside, and the other cases see the value they had.
    """
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def cuda_graph_runner(module: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
                      warmup: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` captured in one ``torch.cuda.CUDAGraph`` for the shape of ``example``; returns ``run(x)``.

    ``run`` copies ``x`` (same shape, dtype and device as ``example``) into the graph's static input, replays the
    graph and synchronizes (as the other engines' timed calls do); it returns the graph's static output tensor,
    which the next call overwrites. Following the CUDA-graphs notes of the PyTorch docs: warm-up on a side stream
    (cuDNN autotuning, lazy workspaces, allocator pools happen there, never during capture), then capture on that
    same stream, under ``inference_mode`` both times.
    """
    if example.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA tensor, got one on {example.device}")
    static_input = example.clone()
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))  # static_input is written on the current stream
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(warmup):
            module(static_input)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph, stream=stream):
        static_output = module(static_input)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape != static_input.shape or x.dtype != static_input.dtype or x.device != static_input.device:
            raise ValueError(f"this graph was captured for {tuple(static_input.shape)} {static_input.dtype} on "
                             f"{static_input.device}, got {tuple(x.shape)} {x.dtype} on {x.device}")
        static_input.copy_(x)
        graph.replay()
        torch.cuda.synchronize(static_input.device)
        return static_output

    return run  # its closure keeps the graph, and so the graph's memory pool, alive


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(benchmark, images: int, **info) -> None:
    """Store images/s (from the median round) and the context a reader needs to compare figures."""
    device = info.get("device")
    info = {k: str(v) if isinstance(v, torch.device) else v for k, v in info.items()}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and not benchmark.disabled:
        median = stats.stats.median
        info["median_s"] = median
        info["images_per_s"] = images / median
    info.update(
        images_per_round=images,
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        cpu=cpu_model(),
        gpu=torch.cuda.get_device_name() if CUDA and str(device).startswith("cuda") else None,
    )
    benchmark.extra_info.update(info)
