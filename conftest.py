"""Fixtures shared by tests/ and benchmarks/: real MNIST (``$IGNITE_LENET_DATA_DIR`` or ``../shared/datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _mnist_dir() -> Path | None:
    for candidate in (os.environ.get("IGNITE_LENET_DATA_DIR"), ROOT.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


MNIST_DIR = _mnist_dir()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if MNIST_DIR is None:
        pytest.skip("real MNIST not found: set IGNITE_LENET_DATA_DIR or provide ../shared/datasets")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist_data(mnist_dir):
    """The default splits of real MNIST (holdout validation), preprocessed once for the whole session."""
    from ignite_lenet.data import load_data

    return load_data(mnist_dir, download=False)


