"""The inference API on real MNIST: input forms, engines agreeing, clear errors, no torch on the ONNX path."""

import textwrap

import numpy as np
import pytest
import torch

from ignite_lenet.inference.loading import load_classifier
from ignite_lenet.inference.onnx_runtime import OnnxClassifier
from ignite_lenet.inference.torch_runtime import TorchScriptClassifier
from ignite_lenet.mnist.digits import NoDigitFound, load_image
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import to_model_input


@pytest.fixture(scope="module")
def raw_test(mnist_dir):
    images, labels = read_mnist(mnist_dir, "test", download=False)
    return images[:300], labels[:300]


@pytest.fixture(scope="module")
def onnx_clf(exported):
    return OnnxClassifier(exported.files["onnx"])


def test_every_accepted_input_form_gives_the_same_answer(onnx_clf, raw_test):
    images, labels = raw_test  # (300, 28, 28) uint8
    model_input = to_model_input(images)  # (300, 1, 32, 32) float
    reference_labels, reference_probs = onnx_clf.predict(model_input)
    forms = {
        "28x28 uint8": images,
        "1x28x28 uint8": images[:, None],
        "32x32 float": model_input[:, 0],
        "28x28 float": images.astype(np.float32) / 255,
        "torch tensor": torch.from_numpy(model_input),
    }
    for name, form in forms.items():
        got_labels, got_probs = onnx_clf.predict(form)
        agree = (got_labels == reference_labels).mean()
        assert agree >= (1.0 if "uint8" in name or "32" in name or "torch" in name else 0.99), name
    assert reference_probs.shape == (300, 10) and np.allclose(reference_probs.sum(1), 1, atol=1e-5)
    assert (reference_labels == labels).mean() > 0.85


def test_torchscript_classifier_has_the_same_interface_and_answers(exported, onnx_clf, raw_test):
    images, _ = raw_test
    ts = TorchScriptClassifier(exported.files["torchscript"])
    ts_labels, ts_probs = ts.predict(images)
    onnx_labels, onnx_probs = onnx_clf.predict(images)
    assert (ts_labels == onnx_labels).all()
    np.testing.assert_allclose(ts_probs, onnx_probs, atol=1e-5)
    assert type(load_classifier(exported.files["torchscript"])) is TorchScriptClassifier


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 32, 32), np.float32), "must have shape"),
    (np.zeros((2, 64, 64), np.uint8), "must have shape"),
    (np.zeros((32, 32), np.uint8), "must have shape"),
    (np.zeros((2, 28, 28), np.int64), "uint8"),
    (np.full((2, 28, 28), 255.0, np.float32), "scaled to \\[0, 1\\]"),
])
def test_wrong_shapes_and_dtypes_raise_value_error_naming_the_expected_shapes(onnx_clf, bad, message):
    with pytest.raises(ValueError, match=message):
        onnx_clf.predict(bad)


def test_metadata_is_read_from_the_model(onnx_clf):
    assert onnx_clf.class_names == tuple(str(d) for d in range(10))
    assert onnx_clf.input_size == (32, 32) and onnx_clf.output_kind == "logits"


def test_cuda_provider_without_a_cuda_build_is_a_clear_error(exported):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ValueError, match="no CUDA execution provider"):
        OnnxClassifier(exported.files["onnx"], provider="cuda")


def test_load_image_converts_rgb_resizes_and_detects_inversion(raw_test, tmp_path):
    from PIL import Image

    digit = raw_test[0][0]
    Image.fromarray(255 - digit).convert("RGB").resize((112, 112)).save(tmp_path / "dark_on_light.png")
    x, inverted = load_image(tmp_path / "dark_on_light.png")
    assert inverted and x.shape == (1, 32, 32) and x.dtype == np.float32
    reference = to_model_input(digit[None])[0]
    assert np.abs(x - reference).mean() < 0.05  # same digit, through a 4x upscale and back
    with pytest.raises(NoDigitFound):  # told not to invert, a light page holds no light ink
        load_image(tmp_path / "dark_on_light.png", invert=False)


def test_onnx_serving_imports_neither_torch_nor_torchvision(exported, raw_test):
    import json
    import subprocess

    from helpers import PYTHON, python_env

    images, labels = raw_test
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch or torchvision now fails
        sys.modules["torchvision"] = None
        import json, numpy as np
        from ignite_lenet.inference import OnnxClassifier
        clf = OnnxClassifier(r"{exported.files['onnx']}")
        images = np.load(r"{_save(images)}")
        labels, probs = clf.predict(images)
        print(json.dumps(labels.tolist()))
    """)
    done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    predicted = np.array(json.loads(done.stdout))
    assert (predicted == OnnxClassifier(exported.files["onnx"]).predict(images)[0]).all()
    assert (predicted == labels).mean() > 0.85


def _save(array):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        np.save(f, array)
    return f.name


def test_empty_batches_give_empty_arrays_and_non_finite_pixels_are_refused(onnx_clf):
    for empty in (np.zeros((0, 28, 28), np.uint8), np.zeros((0, 1, 32, 32), np.float32)):
        labels, probs = onnx_clf.predict(empty)
        assert labels.shape == (0,) and labels.dtype == np.int64 and probs.shape == (0, 10)
    for bad in (np.nan, np.inf, -np.inf):
        images = np.zeros((2, 28, 28), np.float32)
        images[1, 3, 4] = bad
        with pytest.raises(ValueError, match="non-finite"):
            onnx_clf.predict(images)


def test_the_raw_input_model_and_pt2_serve_through_the_same_interface(raw_exported, exported, raw_test, onnx_clf):
    images, _ = raw_test
    raw = load_classifier(raw_exported.files["raw"])
    assert raw.raw_input and raw.input_size == (28, 28)
    reference = OnnxClassifier(raw_exported.files["onnx"]).predict(images)
    labels, probs = raw.predict(images)
    assert (labels == reference[0]).all() and np.array_equal(probs, reference[1])  # bit-identical preprocessing
    with pytest.raises(ValueError, match="a raw-input model"):
        raw.predict(np.zeros((1, 32, 32), np.uint8))
    pt2 = load_classifier(exported.files["torch-export"])
    assert type(pt2).__name__ == "ExportedProgramClassifier"
    np.testing.assert_allclose(pt2.predict(images)[1], onnx_clf.predict(images)[1], atol=1e-5)


def test_checkpoints_and_run_directories_are_refused_with_the_export_command(trained_checkpoint):
    for path in (trained_checkpoint, trained_checkpoint.parent):
        with pytest.raises(ValueError, match="export it first: python -m ignite_lenet.export --checkpoint"):
            load_classifier(path)
