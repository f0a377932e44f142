"""Let glibc's malloc keep freed memory for reuse, so a CPU training step stops page-faulting (Linux, glibc).

    from ignite_lenet.allocator import keep_freed_memory
    keep_freed_memory()   # python -m ignite_lenet.train and .seeds call it first; True where it took effect

torch's CPU tensors come straight from ``malloc``. By default glibc serves a block above its mmap threshold
(128 KiB, raised as large blocks are freed, up to 32 MiB) with a fresh ``mmap`` and gives freed memory at the top
of its heap back to the system above 128 KiB. A LeNet-5 training step at batch 256 allocates and frees tens of
MB-sized activations and gradients, so each step touches new pages: every first touch of a page is a page fault
that zero-fills it. Fixing the mmap threshold at its maximum (32 MiB) and the trim threshold at 1 GiB keeps those
blocks in the heap, reused from step to step: the training step went from ~22 to ~15 ms (2 cores, torch 2.14).
These are glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment); the cost is that the process keeps its peak heap until it exits.
It changes no result, only where memory comes from. PyTorch's own CPU launcher
(``python -m torch.backends.xeon.run_cpu``) preloads jemalloc or tcmalloc for the same reason.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1024 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for the rest of the process; False (nothing changed) off glibc, or
    when the environment already chooses (``MALLOC_*_THRESHOLD_``, ``GLIBC_TUNABLES``, or a preloaded
    allocator through ``LD_PRELOAD``)."""
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
