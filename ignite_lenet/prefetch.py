"""MNIST read and preprocessed on a background thread while torch and Ignite are imported (torch-free).

    with prefetch.prefetching(cfg.data_dir):   # python -m ignite_lenet.train, before its first torch import
        ...                                    # import torch, ignite (~4 s on 2 cores, one core busy)
        arrays = prefetch.take(data_dir)       # data.load_data: the arrays, or None (then it reads them itself)

Importing torch and Ignite keeps one core busy for seconds; reading, checking and resizing MNIST (~1.5 s on the
2-core machine) is numpy, which releases the GIL in its large operations, so it runs on the other core meanwhile.
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

from .mnist_files import MNIST_FILES, find_file, raw_dir, read_mnist
from .preprocessing import to_model_input

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images (N, 1, 32, 32) float32, labels (N,) int64)

_pending: dict[Path, Future[Arrays]] = {}
_lock = threading.Lock()


def model_inputs(data_dir: str | Path, download: bool = True) -> Arrays:
    """Both MNIST splits as model input: ``{"train": (images, labels), "test": ...}``, images ``(N, 1, 32, 32)``
    float32 in [0, 1] (``preprocessing.to_model_input``), labels int64."""
    arrays = {}
    for split in MNIST_FILES:
        images, labels = read_mnist(data_dir, split, download)
        arrays[split] = (to_model_input(images), labels)
    return arrays


def _key(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve()


def start(data_dir: str | Path) -> bool:
    """Begin ``model_inputs(data_dir)`` on a daemon thread; False (nothing started) unless every MNIST file is
    already in ``data_dir`` (a download stays on the main thread, with its progress and errors) or one is
    already under way."""
    raw = raw_dir(data_dir)
    if any(find_file(raw, name) is None for names in MNIST_FILES.values() for name in names):
        return False
    key = _key(data_dir)
    future: Future[Arrays] = Future()
    with _lock:
        if key in _pending:
            return False
        _pending[key] = future

    def work() -> None:
        try:
            future.set_result(model_inputs(data_dir, download=False))
        except BaseException as e:  # kept for take(): the main thread decides what happens
            future.set_exception(e)

    threading.Thread(target=work, name="ignite_lenet-prefetch", daemon=True).start()
    return True


def take(data_dir: str | Path) -> Arrays | None:
    """The arrays a ``start(data_dir)`` prepared (waiting for them if needed), once; None when none was started
    for that directory or it failed."""
    with _lock:
        future = _pending.pop(_key(data_dir), None)
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # the caller reads the files itself and raises the real error there
        return None


def discard(data_dir: str | Path) -> None:
    """Forget a prefetch nobody took (its thread finishes and the arrays are freed), so a later start can run."""
    with _lock:
        _pending.pop(_key(data_dir), None)


@contextmanager
def prefetching(data_dir: str | Path) -> Iterator[bool]:
    """``start(data_dir)`` for the duration of the block, and ``discard`` it at the end if nothing took it (a run
    that failed before loading its data); yields whether a prefetch started."""
    started = start(data_dir)
    try:
        yield started
    finally:
        if started:
            discard(data_dir)
