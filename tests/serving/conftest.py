"""Fixtures of the serving tests: a model exported from a real MNIST run, real MNIST test digits as PNG files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from helpers import png_bytes


@dataclass(frozen=True)
class Digit:
    png: bytes
    label: int  # the true label
    image: np.ndarray  # (28, 28) uint8, as MNIST stores it


@pytest.fixture(scope="session")
def serving_model(raw_exported):
    """``lenet5.onnx`` exported (and verified) by the product's export from a brief real-MNIST training run."""
    return raw_exported.files["onnx"]


@pytest.fixture(scope="session")
def mnist_test_digits(mnist_dir):
    """The first 500 MNIST test images (uint8, 28x28) and their labels."""
    from ignite_lenet.mnist.idx import read_mnist

    images, labels = read_mnist(mnist_dir, "test", download=False)
    return images[:500], labels[:500].astype(int)


@pytest.fixture(scope="session")
def digits(mnist_test_digits):
    """64 real MNIST test digits, PNG-encoded, with their true labels."""
    images, labels = mnist_test_digits
    return [Digit(png_bytes(image), int(label), image) for image, label in zip(images[:64], labels[:64])]


@pytest.fixture(scope="session")
def sure_digits(serving_model, digits):
    """Digits (one per class where possible) the model classifies right with probability > 0.9 offline: what a
    server must then answer exactly."""
    from ignite_lenet.inference import OnnxClassifier

    labels, probs = OnnxClassifier(serving_model).predict(np.stack([d.image for d in digits]))
    chosen: dict[int, Digit] = {}
    for digit, label, p in zip(digits, labels, probs):
        if label == digit.label and p[label] > 0.9:
            chosen.setdefault(digit.label, digit)
    assert len(chosen) >= 5, "the fixture model is too weak to pick digits from"
    return list(chosen.values())


_HOSTILE = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def hostile_count(pytestconfig) -> dict:
    """``{"requests": n}``: the hostile requests tried, printed in the terminal summary."""
    return pytestconfig.stash.setdefault(_HOSTILE, {"requests": 0})


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counted = config.stash.get(_HOSTILE, None)
    if counted and counted["requests"]:
        outcome = "no 500, the server still up and right" if exitstatus == 0 else "see the failures above"
        terminalreporter.write_line(f"serving: {counted['requests']:,} hostile requests tried against a real server "
                                    f"(test_serving_hostile.py): {outcome}")
