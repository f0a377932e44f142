"""MNIST read and preprocessed on a background thread while torch and Ignite are imported (torch-free).

    with prefetch.prefetching(cfg.data_dir):   # python -m ignite_lenet.train, before its first torch import
        ...                                    # import torch, ignite (seconds, one core busy)
        arrays = prefetch.take(data_dir)       # data.load_data: the arrays, or None (then it reads them itself)

Importing torch and Ignite keeps one core busy for seconds; reading, checking and resizing MNIST is numpy, which releases the GIL in its large operations, so it runs on the other core meanwhile.
The thread runs ``model_inputs``, the very function ``load_data`` calls otherwise, so the arrays are the same.
Nothing about errors changes: a prefetch that fails is dropped and ``load_data`` reads the files again and
raises there, with its usual one-line message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ignite_lenet.mnist.idx import MNIST_FILES, find_file, raw_dir, read_mnist
from ignite_lenet.mnist.resize import to_model_input

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images (N, 1, 32, 32) float32, labels (N,) int64)

_pending: tuple[Path, Future[Arrays]] | None = None  # (resolved directory, its arrays); the main thread's alone


def model_inputs(data_dir: str | Path, download: bool = True) -> Arrays:
    """Both MNIST splits as model input: ``{"train": (images, labels), "test": ...}``, images ``(N, 1, 32, 32)``
    float32 in [0, 1] (``preprocessing.to_model_input``), labels int64."""
    arrays = {}
    for split in MNIST_FILES:
        images, labels = read_mnist(data_dir, split, download)
        arrays[split] = (to_model_input(images), labels)
    return arrays


def start(data_dir: str | Path) -> bool:
    """Begin ``model_inputs(data_dir)`` on a daemon thread, replacing any prefetch not taken yet; False (nothing
    started) unless every MNIST file is already there: a download stays on the main thread, with its errors."""
    global _pending
    raw = raw_dir(data_dir)
    if any(find_file(raw, name) is None for names in MNIST_FILES.values() for name in names):
        return False
    key = Path(data_dir).resolve()  # read from here on, whatever the working directory becomes
    future: Future[Arrays] = Future()

    def work() -> None:
        try:
            future.set_result(model_inputs(key, download=False))
        except BaseException as e:  # kept for take(): the main thread decides what happens
            future.set_exception(e)

    _pending = (key, future)
    threading.Thread(target=work, name="ignite_lenet-prefetch", daemon=True).start()
    return True


def take(data_dir: str | Path) -> Arrays | None:
    """The arrays ``start(data_dir)`` prepared (waiting for them if needed), once; None when no prefetch of that
    directory is pending or it failed."""
    global _pending
    if _pending is None or _pending[0] != Path(data_dir).resolve():
        return None
    future, _pending = _pending[1], None
    try:
        return future.result()
    except Exception:  # the caller reads the files itself and raises the real error there
        return None


def discard() -> None:
    """Forget a prefetch nobody took: its thread finishes and the arrays are freed."""
    global _pending
    _pending = None


@contextmanager
def prefetching(data_dir: str | Path) -> Iterator[bool]:
    """``start(data_dir)`` for the duration of the block, then ``discard`` what nothing took (a run that failed
    before loading its data); yields whether a prefetch started."""
    started = start(data_dir)
    try:
        yield started
    finally:
        discard()
