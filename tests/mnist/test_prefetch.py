"""MNIST read on a background thread while torch imports: the same arrays, once, and no change to errors."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PYTHON, python_env, truncated_mnist_copy

from ignite_lenet.mnist import prefetch
from ignite_lenet.mnist.idx import DatasetError, read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.training.data import load_data


def test_prefetched_arrays_are_what_load_data_reads(mnist_dir, mnist_data):
    with prefetch.prefetching(mnist_dir) as started:
        assert started
        data = load_data(mnist_dir, download=False)  # takes the prefetched arrays
        assert prefetch.take(mnist_dir) is None  # taken once
    for split in ("train", "val", "test", "train_eval"):
        ours, theirs = getattr(data, split), getattr(mnist_data, split)  # mnist_data: read without a prefetch
        assert ours.images.shape == theirs.images.shape and ours.images.dtype == torch.float32
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)


def test_only_the_directory_asked_for_is_taken(mnist_dir, tmp_path, monkeypatch):
    root = Path(mnist_dir).resolve()
    monkeypatch.chdir(root.parent)
    with prefetch.prefetching(root.name):  # a relative path...
        monkeypatch.chdir(tmp_path)  # ...and the working directory changes while the thread reads
        assert prefetch.take(tmp_path) is None  # another directory: the caller reads it itself
        arrays = prefetch.take(root)
    assert arrays is not None and arrays["test"][0].shape == (10000, 1, 32, 32)


def test_model_inputs_are_the_preprocessed_splits(mnist_dir):
    arrays = prefetch.model_inputs(mnist_dir, download=False)
    assert sorted(arrays) == ["test", "train"]
    images, labels = arrays["test"]
    assert images.shape == (10000, 1, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int64
    raw, raw_labels = read_mnist(mnist_dir, "test", download=False)
    np.testing.assert_array_equal(images[:100], to_model_input(raw[:100]))
    np.testing.assert_array_equal(labels, raw_labels)
    assert arrays["train"][0].shape == (60000, 1, 32, 32)


def test_nothing_starts_without_the_files(tmp_path):
    assert not prefetch.start(tmp_path)  # a download, if any, stays with load_data on the main thread
    assert prefetch.take(tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_a_failed_prefetch_leaves_the_error_to_load_data(mnist_dir, tmp_path):
    truncated_mnist_copy(mnist_dir, tmp_path)
    with prefetch.prefetching(tmp_path) as started:
        assert started
        assert prefetch.take(tmp_path) is None  # the thread's error is not raised here...
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte") as info:
        load_data(tmp_path, download=False)  # ...but by load_data's own read, as one line
    assert "\n" not in str(info.value)


def test_what_nothing_took_is_discarded(mnist_dir):
    with pytest.raises(RuntimeError, match="before loading"):
        with prefetch.prefetching(mnist_dir) as started:
            assert started
            raise RuntimeError("a run that failed before loading its data")
    assert prefetch.take(mnist_dir) is None


def test_prefetch_needs_no_torch(mnist_dir):
    script = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
              "from ignite_lenet.mnist import prefetch\n"
              f"assert prefetch.start(r'{mnist_dir}')\n"
              f"arrays = prefetch.take(r'{mnist_dir}')\n"
              "print(arrays['train'][0].shape, arrays['test'][1][:5].tolist())")
    done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(60000, 1, 32, 32) [7, 2, 1, 0, 4]"
