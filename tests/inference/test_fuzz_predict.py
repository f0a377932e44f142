"""Hostile inputs for the serving side: ``predict`` and ``export`` command lines and the inference API.

The promise under test: exit 2 with one line (1 for a partial batch, the good files still predicted), nothing
half-written, never a traceback, never a silent wrong answer. Each table row is one hostile input; the module
runs them in-process (the command lines' ``main``), so it stays fast.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import assert_one_line_error
from helpers import call_main as _call
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ignite_lenet import predict as P
from ignite_lenet.export.__main__ import main as export_main
from ignite_lenet.inference.loading import load_classifier
from ignite_lenet.inference.onnx_runtime import OnnxClassifier
from ignite_lenet.mnist.digits import NoDigitFound, normalize_digit
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import to_model_input

# --- files a user might hand to predict ----------------------------------------------------------------------


def _digit(mnist_dir: Path) -> np.ndarray:
    images, _ = read_mnist(mnist_dir, "test", download=False)
    return images[0]  # a 7


def _tiff_float(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.float32), "F").save(path, "TIFF")


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


FILE_MAKERS = {  # name -> writes a file from the digit (a 7), returns its path
    "blank_white.png": lambda d, p: Image.new("L", (64, 64), 255).save(p),
    "blank_black.png": lambda d, p: Image.new("L", (64, 64), 0).save(p),
    "uniform_grey_28.png": lambda d, p: Image.new("L", (28, 28), 128).save(p),
    "one_pixel.png": lambda d, p: Image.new("L", (1, 1), 0).save(p),
    "thin_strip.png": lambda d, p: Image.new("L", (400, 3), 0).save(p),
    "transparent.png": lambda d, p: Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(p),
    "speck_on_page.png": lambda d, p: Image.fromarray(np.pad(np.zeros((2, 2), np.uint8), 400, constant_values=255)).save(p),
    "nan.tiff": lambda d, p: _tiff_float(p, np.where(d > 0, np.nan, 0.0)),
    "inf.tiff": lambda d, p: _tiff_float(p, np.where(d > 0, np.inf, 0.0)),
    "empty.png": lambda d, p: p.write_bytes(b""),
    "text.png": lambda d, p: p.write_text("not an image"),
    "truncated.png": lambda d, p: p.write_bytes(_png_bytes(Image.fromarray(d).resize((200, 200)))[:300]),
    "bomb.png": lambda d, p: Image.new("1", (8000, 6000)).save(p),
    "wrong_suffix.jpg": lambda d, p: Image.fromarray(255 - d).save(p, "PNG"),  # PNG bytes, .jpg name: fine
    # images that must work and give the right digit
    "float_01.tiff": lambda d, p: _tiff_float(p, d / 255),
    "float_0255.tiff": lambda d, p: _tiff_float(p, d.astype(np.float32)),
    "sixteen_bit.png": lambda d, p: Image.fromarray((255 - d).astype(np.uint16) * 257).save(p),
    "palette.png": lambda d, p: Image.fromarray(255 - d).resize((90, 90)).convert("P").save(p),
    "one_bit.png": lambda d, p: Image.fromarray(255 - d).resize((112, 112)).point(lambda v: 255 if v > 127 else 0).convert("1").save(p),
    "cmyk.jpg": lambda d, p: Image.fromarray(255 - d).resize((96, 96)).convert("CMYK").save(p, "JPEG", quality=95),
    "rgba_black_ink.png": lambda d, p: Image.fromarray(np.dstack([np.zeros((84, 84, 3), np.uint8), np.asarray(Image.fromarray(d).resize((84, 84)))]), "RGBA").save(p),
    "la_black_ink.png": lambda d, p: Image.fromarray(np.dstack([np.zeros((56, 56), np.uint8), np.asarray(Image.fromarray(d).resize((56, 56)))]), "LA").save(p),
    "small_on_big_page.png": lambda d, p: Image.fromarray(_on_page(d)).save(p),
    "animated.gif": lambda d, p: Image.fromarray(255 - d).save(p, save_all=True, append_images=[Image.new("L", (28, 28), 255)]),
    "with spaces, commas.png": lambda d, p: Image.fromarray(d).save(p),
}


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _on_page(d: np.ndarray) -> np.ndarray:
    page = np.full((500, 700), 250, np.uint8)
    page[40:68, 600:628] = 250 - d.astype(np.int64) * 250 // 255  # a digit taking 0.2% of the page, off-centre
    return page


@pytest.fixture(scope="module")
def hostile(mnist_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    digit = _digit(mnist_dir)
    for name, make in FILE_MAKERS.items():
        make(digit, folder / name)
    (folder / "empty_dir").mkdir()
    (folder / "a_file").write_text("x")
    ones = np.ones((3, 28, 28), np.uint8)
    (folder / "images4d.idx").write_bytes(_idx(np.ones((2, 1, 28, 28), np.uint8)))
    (folder / "float.idx").write_bytes(_idx(np.ones((2, 28, 28), ">f4").astype(">f4"), 0x0D))
    (folder / "tiny.idx").write_bytes(_idx(np.ones((2, 10, 10), np.uint8)))
    (folder / "empty.idx").write_bytes(_idx(np.zeros((0, 28, 28), np.uint8)))
    (folder / "three.idx").write_bytes(_idx(ones))
    (folder / "labels2.idx").write_bytes(_idx(np.array([1, 2], np.uint8)))
    (folder / "labels_2d.idx").write_bytes(_idx(np.ones((3, 1), np.uint8)))
    (folder / "huge_header.idx").write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 3)
    (folder / "bad.idx.gz").write_bytes(b"\x1f\x8b not really gzip")
    (folder / "three.idx.gz").write_bytes(gzip.compress(_idx(ones)))
    return folder


RIGHT = "7"  # the digit every good file holds

# (arguments after --model, expected exit code, substring of stderr (or of stdout when the code is 0))
PREDICT_FILES = [
    (["blank_white.png"], 2, "no digit found"),
    (["blank_black.png"], 2, "no digit found"),
    (["uniform_grey_28.png"], 2, "no digit found"),
    (["one_pixel.png"], 2, "too small"),
    (["thin_strip.png"], 2, "too small"),
    (["transparent.png"], 2, "fully transparent"),
    (["speck_on_page.png"], 2, "no digit found"),
    (["nan.tiff"], 2, "non-finite"),
    (["inf.tiff"], 2, "non-finite"),
    (["empty.png"], 2, "not a readable image"),
    (["text.png"], 2, "not a readable image"),
    (["truncated.png"], 2, "not a readable image"),
    (["bomb.png"], 2, "above the limit"),
    (["missing.png"], 2, "missing.png"),
    (["empty_dir"], 2, "no image files"),
    (["bomb.png", "float_01.tiff"], 1, "bomb.png"),
    (["blank_white.png", "text.png", "float_01.tiff"], 1, "blank_white.png: no digit found"),
    (["blank_white.png", "text.png"], 2, "none of the 2 images"),
    (["wrong_suffix.jpg"], 0, RIGHT),
    (["float_01.tiff"], 0, RIGHT),
    (["float_0255.tiff"], 0, RIGHT),
    (["sixteen_bit.png"], 0, RIGHT),
    (["palette.png"], 0, RIGHT),
    (["one_bit.png"], 0, RIGHT),
    (["cmyk.jpg"], 0, RIGHT),
    (["rgba_black_ink.png"], 0, RIGHT),
    (["la_black_ink.png"], 0, RIGHT),
    (["small_on_big_page.png"], 0, RIGHT),
    (["animated.gif"], 0, RIGHT),
    (["with spaces, commas.png"], 0, RIGHT),
    (["float_01.tiff", "--output-format", "csv"], 0, RIGHT),
    (["float_01.tiff", "--output-format", "jsonl", "--top-k", "10"], 0, RIGHT),
]


@pytest.mark.parametrize("args, code, expected", PREDICT_FILES, ids=[" ".join(a) for a, _, _ in PREDICT_FILES])
def test_predict_hostile_files(exported, hostile, capsys, args, code, expected):
    args = [str(hostile / a) if (hostile / a).exists() or a.endswith(".png") else a for a in args]
    got, out, err = _call(P.main, ["--model", str(exported.files["onnx"]), *args], capsys)
    assert got == code, err
    assert "Traceback" not in err
    if code == 0:
        assert expected in out and err.count("error") == 0
        lines = [line for line in out.splitlines() if line and not line.startswith(("path,", "{\"path"))]
        assert all(RIGHT in line.split("\t" if "\t" in line else ",")[1:3] or '"label": "7"' in line
                   for line in lines), out
    else:
        assert expected in err
        files = [a for a in args if not a.startswith("--")]
        predicted = out.splitlines()
        assert len(predicted) == (1 if code == 1 else 0)  # the good file is still predicted
        summary = 1 if code == 2 and len(files) > 1 else 0  # "none of the N images could be predicted"
        assert err.count("\n") == len(files) - len(predicted) + summary, err  # a line per unusable file


PREDICT_FLAGS = [
    (["--batch-size", "0", "--test-set"], "--batch-size"),
    (["--batch-size", "-5", "--test-set"], "--batch-size"),
    (["--batch-size", str(10**23), "--test-set"], "--batch-size"),
    (["--batch-size", "1e20", "--test-set"], "--batch-size"),
    (["--threads", "0", "--test-set"], "--threads"),
    (["--threads", "1e20", "--test-set"], "--threads"),
    (["--threads", str(2**64), "--test-set"], "--threads"),
    (["--top-k", "0", "--test-set"], "--top-k"),
    (["--top-k", "11", "float_01.tiff"], "--top-k 11"),
    (["--top-k", str(10**30), "float_01.tiff"], "--top-k"),
    (["--output-format", "xml", "float_01.tiff"], "--output-format"),
    ([], "exactly one of them"),
    (["float_01.tiff", "--test-set"], "exactly one of them"),
    (["--labels", "labels2.idx", "--test-set"], "--labels goes with --idx"),
    (["--idx", "images4d.idx"], "N x H x W"),
    (["--idx", "float.idx"], "uint8"),
    (["--idx", "tiny.idx"], "must have shape"),
    (["--idx", "three.idx", "--labels", "labels2.idx"], "2 labels for 3 images"),
    (["--idx", "three.idx", "--labels", "labels_2d.idx"], "labels for 3 images"),
    (["--idx", "huge_header.idx"], "truncated"),
    (["--idx", "bad.idx.gz"], "not a readable gzip"),
    (["--idx", "text.png"], "not an IDX file"),
    (["--idx", "empty_dir"], "a directory"),
    (["--idx", "missing.idx"], "no such file"),
    (["--test-set", "--data-dir", "{tmp}/nowhere", "--no-download"], "not found in"),
]


@pytest.mark.parametrize("args, expected", PREDICT_FLAGS, ids=[" ".join(a) for a, _ in PREDICT_FLAGS])
def test_predict_hostile_flags_are_one_line_exit_2(exported, hostile, tmp_path, capsys, args, expected):
    args = [a.format(tmp=tmp_path) for a in args]
    args = [str(hostile / a) if (hostile / a).exists() or a.endswith(".idx") else a for a in args]
    code, out, err = _call(P.main, ["--model", str(exported.files["onnx"]), *args], capsys)
    assert_one_line_error(code, err, expected)
    assert out == ""


def test_predict_sets_that_are_empty_or_gzipped(exported, hostile, capsys):
    code, out, _ = _call(P.main, ["--model", str(exported.files["onnx"]), "--idx", str(hostile / "empty.idx")], capsys)
    assert code == 0 and "0 images" in out
    code, out, _ = _call(P.main, ["--model", str(exported.files["onnx"]), "--idx", str(hostile / "three.idx.gz")], capsys)
    assert code == 0 and len(out.splitlines()) == 4  # three rows and the summary


# --- models a user might hand to predict ---------------------------------------------------------------------


def _onnx(path: Path, inputs, outputs, nodes, initializers=(), metadata=None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))
    return path


def _linear(path: Path, classes: int, shape=("batch", 1, 32, 32), metadata=None, dtype=TensorProto.FLOAT,
            weight_value: float = 0.01) -> Path:
    size = int(np.prod([d for d in shape[1:]]))
    weight = numpy_helper.from_array(np.full((size, classes), weight_value, np.float32), "w")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    if dtype != TensorProto.FLOAT:
        nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("Flatten", ["xf"], ["f"]), nodes[1]]
    return _onnx(path, [helper.make_tensor_value_info("x", dtype, list(shape))],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])], nodes, [weight], metadata)


MODEL_MAKERS = {
    "three_classes.onnx": (lambda p, e: _linear(p, 3), "3 outputs but 10 class names"),
    "rgb_input.onnx": (lambda p, e: _linear(p, 10, ("batch", 3, 32, 32)), "not an image batch"),
    "flat_input.onnx": (lambda p, e: _linear(p, 10, ("batch", 1024)), "not an image batch"),
    "int_input.onnx": (lambda p, e: _linear(p, 10, ("batch", 1, 32, 32), dtype=TensorProto.INT32), "not an image batch"),
    "bad_class_names.onnx": (lambda p, e: _linear(p, 10, metadata={"class_names": "not json"}), "class_names"),
    "bad_output_kind.onnx": (lambda p, e: _linear(p, 10, metadata={"output": "banana"}), "metadata 'output'"),
    "nan_weights.onnx": (lambda p, e: _linear(p, 10, weight_value=float("nan")), "non-finite scores"),
    "two_inputs.onnx": (lambda p, e: _onnx(p, [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1, 32, 32])
                                               for n in "ab"],
                                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 32, 32])],
                                           [helper.make_node("Add", ["a", "b"], ["y"])]), "takes 2 inputs"),
    "garbage.onnx": (lambda p, e: p.write_bytes(b"\x08\x01garbage"), "not a loadable ONNX model"),
    "empty.onnx": (lambda p, e: p.write_bytes(b""), "not a loadable ONNX model"),
    "garbage.pt2": (lambda p, e: p.write_bytes(b"PK not a zip"), "not a loadable torch.export"),
    "garbage.pt": (lambda p, e: p.write_bytes(b"nope"), "not a loadable TorchScript"),
    "model.txt": (lambda p, e: p.write_text("x"), "expected an exported model"),
    "best_model.pt": (lambda p, e: p.write_bytes(e["checkpoint"].read_bytes()), "export it first"),
    "run_dir": (lambda p, e: (p.mkdir(), (p / "best_model.pt").write_bytes(e["checkpoint"].read_bytes())),
                "export it first"),
    "plain_dir": (lambda p, e: p.mkdir(), "a directory without lenet5.onnx"),
    "missing.onnx": (lambda p, e: None, "no such model file"),
}


@pytest.mark.parametrize("name", list(MODEL_MAKERS))
def test_predict_hostile_models_are_one_line_exit_2(name, hostile, trained_checkpoint, tmp_path, capsys):
    make, expected = MODEL_MAKERS[name]
    path = tmp_path / name
    make(path, {"checkpoint": trained_checkpoint})
    code, out, err = _call(P.main, ["--model", str(path), str(hostile / "float_01.tiff")], capsys)
    assert_one_line_error(code, err, expected)
    assert out == ""


def test_predict_accepts_a_directory_of_exports(exported, hostile, capsys):
    code, out, _ = _call(P.main, ["--model", str(exported.files["onnx"].parent), str(hostile / "float_01.tiff")], capsys)
    assert code == 0 and out.split("\t")[1] == RIGHT


# --- the inference API ---------------------------------------------------------------------------------------

API_INPUTS = [
    ("nan float", lambda: np.full((2, 28, 28), np.nan, np.float32), "non-finite"),
    ("inf float", lambda: np.full((1, 1, 32, 32), np.inf, np.float32), "non-finite"),
    ("negative float", lambda: -np.ones((1, 28, 28), np.float32), "scaled to"),
    ("0-255 floats", lambda: np.full((1, 28, 28), 200.0), "scaled to"),
    ("int64", lambda: np.zeros((1, 28, 28), np.int64), "uint8"),
    ("bool", lambda: np.zeros((1, 28, 28), bool), "uint8"),
    ("object", lambda: np.array([None, 1], dtype=object), "uint8"),
    ("strings", lambda: np.array(["a"]), "uint8"),
    ("no batch axis", lambda: np.zeros((28, 28), np.uint8), "must have shape"),
    ("channels last", lambda: np.zeros((1, 28, 28, 1), np.uint8), "must have shape"),
    ("three channels", lambda: np.zeros((1, 3, 32, 32), np.float32), "must have shape"),
    ("5-D", lambda: np.zeros((1, 1, 1, 28, 28), np.uint8), "must have shape"),
    ("64x64", lambda: np.zeros((1, 64, 64), np.uint8), "must have shape"),
    ("scalar", lambda: np.float32(0.5), "must have shape"),
    ("list of ints", lambda: [[0] * 28] * 28, "uint8"),
]


@pytest.mark.parametrize("name, make, message", API_INPUTS, ids=[n for n, _, _ in API_INPUTS])
def test_api_hostile_inputs_are_value_errors(exported, name, make, message):
    clf = OnnxClassifier(exported.files["onnx"])
    with pytest.raises(ValueError, match=message):
        clf.predict(make())


API_GOOD = [
    ("empty uint8", lambda: np.zeros((0, 28, 28), np.uint8), 0),
    ("empty float 32x32", lambda: np.zeros((0, 1, 32, 32), np.float32), 0),
    ("float16", lambda: np.zeros((2, 28, 28), np.float16), 2),
    ("float64", lambda: np.zeros((2, 1, 32, 32)), 2),
    ("strided view", lambda: np.zeros((4, 56, 56), np.uint8)[::2, ::2, ::2], 2),
    ("tensor with grad", lambda: torch.zeros(3, 1, 32, 32, requires_grad=True), 3),
    ("Fortran order", lambda: np.asfortranarray(np.zeros((2, 28, 28), np.uint8)), 2),
]


@pytest.mark.parametrize("name, make, n", API_GOOD, ids=[n for n, _, _ in API_GOOD])
def test_api_unusual_but_valid_inputs(exported, name, make, n):
    labels, probs = OnnxClassifier(exported.files["onnx"]).predict(make())
    assert labels.shape == (n,) and probs.shape == (n, 10) and np.isfinite(probs).all()


API_CONSTRUCTORS = [
    (lambda e, t: OnnxClassifier(e.files["onnx"], provider="tpu"), ValueError, "provider"),
    (lambda e, t: OnnxClassifier(e.files["onnx"], threads=0), ValueError, "threads"),
    (lambda e, t: OnnxClassifier(e.files["onnx"], threads=10**20), ValueError, "threads"),
    (lambda e, t: OnnxClassifier(t), FileNotFoundError, "no such model file"),
    (lambda e, t: load_classifier(t / "x.bin"), FileNotFoundError, "no such model file"),
    (lambda e, t: normalize_digit(np.zeros((3, 28, 28))), ValueError, "grayscale"),
    (lambda e, t: normalize_digit(np.full((28, 28), np.nan)), ValueError, "non-finite"),
    (lambda e, t: normalize_digit(np.zeros((40, 40))), NoDigitFound, "no digit found"),
    (lambda e, t: to_model_input(np.zeros((2, 28), np.uint8)), ValueError, "expected images of shape"),
]


@pytest.mark.parametrize("make, error, message", API_CONSTRUCTORS)
def test_api_hostile_construction(exported, tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        make(exported, tmp_path)


# --- checkpoints and flags a user might hand to export -------------------------------------------------------


def _tampered(trained_checkpoint: Path, tmp_path: Path, change) -> Path:
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    change(checkpoint)
    path = tmp_path / "tampered.pt"
    torch.save(checkpoint, path)
    return path


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _weight(name, value):
    return lambda c: c["model"][name].view(-1).__setitem__(0, value)


EXPORT_CHECKPOINTS = [
    ("all NaN weights", lambda c: [t.fill_(float("nan")) for t in c["model"].values()], "non-finite"),
    ("one NaN weight", _weight("fc2.weight", float("nan")), "fc2.weight has non-finite"),
    ("one inf bias", _weight("conv1.bias", float("inf")), "conv1.bias has non-finite"),
    ("model is a tensor", _set("model", torch.zeros(3)), "not a state_dict"),
    ("model is None", _set("model", None), "not a state_dict"),
    ("weights of another shape", lambda c: c["model"].__setitem__("fc2.weight", torch.zeros(3, 84)), "do not fit"),
    ("a weight missing", lambda c: c["model"].pop("fc1.bias"), "do not fit"),
    ("epoch is text", _set("epoch", "three"), "'epoch'"),
    ("val_accuracy is None", _set("val_accuracy", None), "'val_accuracy'"),
    ("val_accuracy is NaN", _set("val_accuracy", float("nan")), "'val_accuracy'"),
    ("no val_accuracy", lambda c: c.pop("val_accuracy"), "missing val_accuracy"),
    ("config is a list", _set("config", [1, 2]), None),  # harmless: exported, data found elsewhere
]


@pytest.mark.parametrize("name, change, expected", EXPORT_CHECKPOINTS, ids=[n for n, _, _ in EXPORT_CHECKPOINTS])
def test_export_hostile_checkpoints(trained_checkpoint, mnist_dir, tmp_path, capsys, name, change, expected):
    path = _tampered(trained_checkpoint, tmp_path, change)
    out_dir = tmp_path / "out"
    args = ["--checkpoint", str(path), "--output-dir", str(out_dir), "--data-dir", str(mnist_dir), "--no-download"]
    if expected is None:  # a checkpoint that is odd but usable: exported and verified
        code, _, err = _call(export_main, args, capsys)
        assert code == 0 and (out_dir / "lenet5.onnx").is_file(), err
        return
    code, out, err = _call(export_main, args, capsys)
    assert_one_line_error(code, err, expected)
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


EXPORT_FLAGS = [
    (["--opset", "13"], "--opset"),
    (["--opset", "17"], "from 18 to 25"),
    (["--opset", "26"], "from 18 to 25"),
    (["--opset", "-1"], "--opset"),
    (["--opset", str(10**23)], "--opset"),
    (["--opset", "18.5"], "--opset"),
    (["--output-dir", "{file}"], "--output-dir"),
    (["--output-dir", "{file}/sub"], "--output-dir"),
    (["--output-dir", ""], "--output-dir"),
    (["--format", "tflite"], "--format"),
    (["--output", "log_softmax"], "--output"),
    (["--quantize", "int4"], "--quantize"),
    (["--quantize", "int8", "--format", "torchscript"], "--quantize int8 builds on the ONNX export"),
    (["--raw-input", "--format", "torch-export"], "--raw-input builds on the ONNX export"),
    (["--checkpoint", "{tmp}"], "without best_model.pt"),
    (["--checkpoint", "{tmp}/missing.pt"], "no such checkpoint"),
    (["--checkpoint", "{file}"], "not a readable PyTorch checkpoint"),
    (["--checkpoint", "{onnx}"], "not a readable PyTorch checkpoint"),
    (["--data-dir", "{truncated}"], "truncated"),
    (["--quantize", "int8", "--data-dir", "{tmp}/nowhere", "--no-download"], "calibrates on MNIST training images"),
]


@pytest.mark.parametrize("args, expected", EXPORT_FLAGS, ids=[" ".join(a) for a, _ in EXPORT_FLAGS])
def test_export_hostile_flags_are_one_line_exit_2(trained_checkpoint, exported, mnist_dir, tmp_path, capsys,
                                                  args, expected):
    from helpers import truncated_mnist_copy

    (tmp_path / "a_file").write_text("x")
    values = {"file": tmp_path / "a_file", "tmp": tmp_path, "onnx": exported.files["onnx"],
              "truncated": truncated_mnist_copy(mnist_dir, tmp_path / "trunc") if "{truncated}" in args else ""}
    args = [a.format(**values) for a in args]
    defaults = {"--checkpoint": str(trained_checkpoint), "--output-dir": str(tmp_path / "out"),
                "--data-dir": str(mnist_dir)}
    full = [*args, *[x for k, v in defaults.items() if k not in args for x in (k, v)], "--no-download"]
    code, out, err = _call(export_main, full, capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
