"""Fixtures shared by the training tests."""

import pytest
from helpers import train_config


@pytest.fixture(scope="session")
def short_run(mnist_dir, tmp_path_factory):
    """A 3-epoch run of 300 iterations on real MNIST (CPU): ``(run directory, metrics)``. Tests compare their own
    runs with it bit for bit; none may write into it."""
    from ignite_lenet.training.job import train

    out = tmp_path_factory.mktemp("short")
    return out, train(train_config(mnist_dir, out, epochs=3, epoch_length=300)).metrics
