"""What the benchmark suites share: the device list and the ``extra_info`` every case records."""

from __future__ import annotations

import functools
import platform

import onnxruntime
import torch

CUDA = torch.cuda.is_available()


def _cuda_param():
    import pytest

    return pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="no CUDA GPU")])


DEVICES = ["cpu", _cuda_param()]


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
