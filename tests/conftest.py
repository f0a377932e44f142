"""Fixtures for the serving tests (the shared ones are in the root conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def raw_exported(trained_checkpoint, mnist_dir, tmp_path_factory):
    """``lenet5.onnx`` and ``lenet5.raw.onnx`` of ``trained_checkpoint``, made and verified by the product's export."""
    from ignite_lenet.export.exporter import export

    out = tmp_path_factory.mktemp("raw_export")
    return export(trained_checkpoint, out, ("onnx",), raw_input=True, data_dir=mnist_dir, download=False,
                  log=lambda line: None)
