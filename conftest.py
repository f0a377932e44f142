"""Fixtures shared by tests/ and benchmarks/: real MNIST (``$IGNITE_LENET_DATA_DIR`` or ``../shared/datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ignite_lenet  # noqa: F401  sets CUBLAS_WORKSPACE_CONFIG's default before any test's first CUDA matrix product

ROOT = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Benchmarks only measure when asked (``--benchmark-only`` or ``--benchmark-enable``); a plain ``pytest``
    runs each benchmark once, as a correctness test (pytest-benchmark's ``--benchmark-disable``)."""
    option = config.option
    if hasattr(option, "benchmark_disable") and not (option.benchmark_only or option.benchmark_enable):
        option.benchmark_disable = True


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_commit_info(config: pytest.Config, commit_info: dict) -> None:
    """A copy of the tree without its ``.git`` (what the lent GPU machine receives) gives pytest-benchmark no
    commit to record ("unversioned"): there the caller names the commit it sent in ``IGNITE_LENET_COMMIT``
    (``.ci/gpu-check``'s header says how), so the JSON's ``commit_info`` still says what was measured."""
    named = os.environ.get("IGNITE_LENET_COMMIT", "").strip()
    if named and commit_info.get("id") in ("unversioned", "unknown"):
        commit_info.update(id=named, dirty=None, source="IGNITE_LENET_COMMIT (the tree had no .git)")
        commit_info.pop("error", None)


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
    from ignite_lenet.training.data import load_data

    return load_data(mnist_dir, download=False)




@pytest.fixture(scope="session")
def trained_checkpoint(mnist_dir, tmp_path_factory) -> Path:
    """``best_model.pt`` of a brief real-MNIST training run (one epoch of 300 iterations, about 90% accurate)."""
    from ignite_lenet.config import TrainConfig
    from ignite_lenet.training.job import train

    out = tmp_path_factory.mktemp("trained")
    train(TrainConfig(data_dir=str(mnist_dir), download=False, output_dir=str(out), epochs=1, epoch_length=300,
                      progress=False))
    return out / "best_model.pt"


@pytest.fixture(scope="session")
def exported(trained_checkpoint, mnist_dir, tmp_path_factory):
    """Every export format of ``trained_checkpoint``, made and verified by the product's own export code."""
    from ignite_lenet.export.exporter import FORMATS, export

    out = tmp_path_factory.mktemp("exports")
    return export(trained_checkpoint, out, FORMATS, data_dir=mnist_dir, download=False, log=lambda line: None)
