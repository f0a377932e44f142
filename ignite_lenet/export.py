"""Export the best checkpoint to ONNX, TorchScript and torch.export, each verified against the eager model.

    python -m ignite_lenet.export --format onnx              # runs/lenet5/best_model.pt -> exports/lenet5.onnx
    python -m ignite_lenet.export --format all --checkpoint runs/lenet5/best_model.pt --output-dir exports/
    python -m ignite_lenet.export --format onnx --quantize int8   # + exports/lenet5.int8.onnx (static QDQ)
    python -m ignite_lenet.export --format onnx --raw-input       # + exports/lenet5.raw.onnx (uint8 28x28 input)

Every file is written to a temporary name, reloaded, compared with the eager model on real MNIST test images
(max |logit difference| <= 1e-4 at batch 1 and at an odd batch; the same predicted class on all 10,000 test
images; every weight and output finite) and only then renamed into place: a failed check leaves no file
behind. MNIST is looked for where the checkpoint was trained, then in $IGNITE_LENET_DATA_DIR, then ./data;
without it the files are verified on fixed synthetic images and the test accuracy is reported as not checked.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import artifacts, checkpoints
from .cli import ArgumentParser, int_range, output_dir, run_cli
from .config import DATA_DIR_ENV, DEFAULT_DATA_DIR
from .mnist_files import has_mnist, raw_dir, read_mnist
from .model import CLASS_NAMES, INPUT_SHAPE, probabilities
from .preprocessing import PREPROCESSING, SOURCE_SIZE, fixed_point_weights, to_model_input

FORMATS = ("onnx", "torchscript", "torch-export")
FILE_NAMES = {"onnx": "lenet5.onnx", "torchscript": "lenet5.torchscript.pt", "torch-export": "lenet5.pt2"}
INT8_FILE_NAME = "lenet5.int8.onnx"
RAW_FILE_NAME = "lenet5.raw.onnx"
INPUT_NAME = "input"
RAW_INPUT_NAME = "image"
MIN_OPSET, MAX_OPSET = 18, 25  # torch.onnx's dynamo exporter writes these as asked; older ones need the
# deprecated TorchScript exporter (the onnx version converter fails on this graph below 16), newer ones are untested
SYNTHETIC_IMAGES = 256  # fixed inputs for the verification when MNIST is not available
OUTPUTS = ("logits", "probabilities")
METADATA_FILE = "metadata.json"  # TorchScript / torch.export extra file holding the metadata
PARITY_ATOL = 1e-4
INT8_MAX_ACCURACY_DROP = 0.003  # 0.3 points


class ExportMismatch(ValueError):
    """A reloaded export does not reproduce the eager model."""


@dataclass
class VerificationSet:
    """The images every export is checked on: MNIST's test set, or fixed synthetic images without it."""

    raw: np.ndarray  # (N, 28, 28) uint8
    images: np.ndarray  # (N, 1, 32, 32) float32, training's preprocessing of ``raw``
    labels: np.ndarray | None  # None for synthetic images: no accuracy
    source: str


def synthetic_images(n: int = SYNTHETIC_IMAGES, seed: int = 0) -> np.ndarray:
    """Fixed uint8 ``(n, 28, 28)`` images for parity checks without MNIST: blank, noise and random strokes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SOURCE_SIZE, SOURCE_SIZE), np.uint8)
    images[1] = 255
    images[2 : n // 4] = rng.integers(0, 256, (max(0, n // 4 - 2), SOURCE_SIZE, SOURCE_SIZE), dtype=np.uint8)
    for image in images[n // 4 :]:  # a few thick random strokes in the 20x20 centre, like a digit's
        for _ in range(int(rng.integers(1, 4))):
            (y0, x0), (y1, x1) = rng.integers(4, 24, (2, 2))
            for t in np.linspace(0, 1, 40):
                y, x = round(y0 + t * (y1 - y0)), round(x0 + t * (x1 - x0))
                image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = 255
    return images


def resolve_data_dir(checkpoint: dict[str, Any], explicit: str | Path | None) -> tuple[Path | None, list[Path]]:
    """Where to find MNIST for the verification: ``explicit``, else the first of the checkpoint's recorded
    ``data_dir``, ``$IGNITE_LENET_DATA_DIR`` and ``./data`` that holds the test split; and the places tried."""
    if explicit is not None:
        return Path(explicit), [Path(explicit)]
    config = checkpoint.get("config")
    recorded = config.get("data_dir") if isinstance(config, dict) else None
    candidates = [c for c in (recorded, os.environ.get(DATA_DIR_ENV), DEFAULT_DATA_DIR) if isinstance(c, str) and c]
    tried = list(dict.fromkeys(Path(c) for c in candidates))
    return next((d for d in tried if has_mnist(d, ("test",))), None), tried


def check_finite_weights(model: nn.Module, name: str) -> None:
    """Raise ``ExportMismatch`` naming the first parameter or buffer with a NaN or an infinity."""
    for key, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ExportMismatch(f"{name}: weight {key} has non-finite values (NaN or infinity); nothing exported")


def _checkpoint_summary(path: Path, checkpoint: dict[str, Any]) -> tuple[int, float]:
    """``(epoch, val_accuracy)`` of a best-model checkpoint, as plain numbers (``ValueError`` if they are not)."""
    values = []
    for key, kind in (("epoch", int), ("val_accuracy", float)):
        value = checkpoint.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{path}: its {key!r} is {type(value).__name__} {str(value)[:40]}, not a number")
        values.append(kind(value))
    return values[0], values[1]


class WithSoftmax(nn.Module):
    """``model`` followed by a softmax, for exports whose output is ``probabilities``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.model(x))


@dataclass
class ExportReport:
    """What an export produced and measured (printed by the CLI, returned by ``export``)."""

    files: dict[str, Path] = field(default_factory=dict)
    test_accuracy: dict[str, float | None] = field(default_factory=dict)  # None: not checked (no MNIST)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_metadata(checkpoint_path: Path, checkpoint: dict[str, Any], output: str,
                   test_accuracy: float | None) -> dict[str, str]:
    """String key/values that travel inside every exported file (ONNX ``metadata_props``, extra files)."""
    import ignite
    import onnx

    epoch, val_accuracy = _checkpoint_summary(checkpoint_path, checkpoint)
    return {
        "model": "LeNet-5 (ignite_lenet)",
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(["batch", *INPUT_SHAPE]),
        "output": output,
        "preprocessing": json.dumps(PREPROCESSING),
        "class_names": json.dumps(list(CLASS_NAMES)),
        "source_checkpoint": checkpoint_path.name,
        "source_checkpoint_sha256": sha256_file(checkpoint_path),
        "best_epoch": str(epoch),
        "val_accuracy": f"{val_accuracy:.6f}",
        "test_accuracy": "not checked (MNIST not found)" if test_accuracy is None else f"{test_accuracy:.6f}",
        "torch_version": torch.__version__,
        "ignite_version": ignite.__version__,
        "onnx_version": onnx.__version__,
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _tmp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` with the same suffix (torch.export.save insists on ``.pt2``)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1)


# --- writers: each writes `path` (a temporary name) and returns a callable running the reloaded export ---------


NCHWC_BLOCK = 8  # ONNX Runtime's blocked conv layout on AVX2 CPUs groups channels by 8


def pad_conv_channels(proto: Any, multiple: int = NCHWC_BLOCK) -> int:
    """Pad convolutions whose channel count is not a multiple of ``multiple`` with zero filters, in place.

    ONNX Runtime runs convolutions in a blocked layout (NCHWc) only when the channels come in blocks of 8;
    LeNet-5's conv1 has 6 filters, so its output went back to NCHW for a slow generic average pooling (a
    quarter of the batch-1024 time). Two zero filters on conv1 (bias 0) and two zero input channels on conv2
    keep the whole convolution stack blocked and change no output: the extra channels are multiplied by zero
    weights. Only a Conv whose output reaches the next Conv through channel-wise ops (activations, pooling)
    is padded. Returns how many convolutions were padded.
    """
    import numpy as np
    from onnx import numpy_helper

    channelwise = {"Tanh", "Relu", "Sigmoid", "AveragePool", "MaxPool"}
    initializers = {t.name: t for t in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_conv(node: Any) -> Any:
        while True:
            users = consumers.get(node.output[0], [])
            if len(users) != 1:
                return None
            node = users[0]
            if node.op_type == "Conv":
                return node
            if node.op_type not in channelwise:
                return None

    def pad(name: str, axis: int, size: int) -> None:
        array = numpy_helper.to_array(initializers[name])
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, size - array.shape[axis])
        initializers[name].CopyFrom(numpy_helper.from_array(np.pad(array, widths), name))

    padded = 0
    for node in [n for n in proto.graph.node if n.op_type == "Conv"]:
        following = next_conv(node)
        weight = initializers.get(node.input[1])
        if following is None or weight is None or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        channels = weight.dims[0]
        size = -(-channels // multiple) * multiple
        if size == channels or following.input[1] not in initializers:
            continue
        pad(node.input[1], 0, size)
        pad(node.input[2], 0, size)
        pad(following.input[1], 1, size)
        padded += 1
    if padded:
        del proto.graph.value_info[:]  # intermediate shapes changed; let shape inference redo them
    return padded


def write_onnx(model: nn.Module, path: Path, metadata: dict[str, str], opset: int | None = None) -> None:
    """Self-contained ONNX (weights inside, not external data), dynamic ``batch``, conv channels padded for
    ONNX Runtime's blocked layout, metadata, full checker pass."""
    import onnx

    example = torch.zeros(2, *INPUT_SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=[metadata["output"]], opset_version=opset,
            dynamic_shapes={"x": {0: _batch_dim()}},
        )
    proto = program.model_proto
    if pad_conv_channels(proto):
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ExportMismatch(f"onnx: asked for opset {opset}, the exporter wrote opset {written}")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def raw_input_model(proto: Any) -> Any:
    """``proto`` (float ``[batch, 1, 32, 32]`` input) behind training's preprocessing, in the graph: input
    ``image`` uint8 ``[batch, 28, 28]`` (MNIST's IDX layout).

    The 28->32 resize is Pillow's fixed-point bilinear resampling as two constant matrix products, each
    followed by the rounding and clamping to uint8 that Pillow does between and after its passes; the
    coefficients are sixteenths, so float32 holds every product and sum exactly and the pixels are
    bit-identical to ``preprocessing.to_model_input`` (then the same division by 255).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kh, bits_h = fixed_point_weights(SOURCE_SIZE, INPUT_SHAPE[2])
    kv, bits_v = fixed_point_weights(SOURCE_SIZE, INPUT_SHAPE[1])
    for k, bits in ((kh, bits_h), (kv, bits_v)):
        if 255 * int(k.sum(axis=1).max()) + (1 << bits) >= 1 << 24:
            raise ValueError("the resize coefficients do not fit float32 exactly")  # not for 28 -> 32
    graph = proto.graph
    float_input = graph.input[0].name

    def const(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value), f"preprocess/{name}")

    constants = [
        const("resize_x", kh.T.astype(np.float32)),  # (28, 32): image @ resize_x resizes the rows
        const("resize_y", kv.astype(np.float32)),  # (32, 28): resize_y @ image resizes the columns
        const("half_x", np.float32(1 << (bits_h - 1))), const("scale_x", np.float32(1 / (1 << bits_h))),
        const("half_y", np.float32(1 << (bits_v - 1))), const("scale_y", np.float32(1 / (1 << bits_v))),
        const("zero", np.float32(0)), const("max", np.float32(255)), const("axes", np.array([1], np.int64)),
    ]
    names = [c.name for c in constants]
    rx, ry, hx, sx, hy, sy, zero, top, axes = names
    p = "preprocess/"
    nodes = [
        helper.make_node("Cast", [RAW_INPUT_NAME], [p + "pixels"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", [p + "pixels", rx], [p + "x_sum"]),  # (B, 28, 32)
        helper.make_node("Add", [p + "x_sum", hx], [p + "x_rounded"]),
        helper.make_node("Mul", [p + "x_rounded", sx], [p + "x_shifted"]),  # >> bits: exact (a power of two)
        helper.make_node("Floor", [p + "x_shifted"], [p + "x_floor"]),
        helper.make_node("Clip", [p + "x_floor", zero, top], [p + "x_uint8"]),
        helper.make_node("MatMul", [ry, p + "x_uint8"], [p + "y_sum"]),  # (B, 32, 32)
        helper.make_node("Add", [p + "y_sum", hy], [p + "y_rounded"]),
        helper.make_node("Mul", [p + "y_rounded", sy], [p + "y_shifted"]),
        helper.make_node("Floor", [p + "y_shifted"], [p + "y_floor"]),
        helper.make_node("Clip", [p + "y_floor", zero, top], [p + "y_uint8"]),
        helper.make_node("Div", [p + "y_uint8", top], [p + "scaled"]),  # ToTensor's / 255
        helper.make_node("Unsqueeze", [p + "scaled", axes], [float_input]),  # (B, 1, 32, 32)
    ]
    image = helper.make_tensor_value_info(RAW_INPUT_NAME, TensorProto.UINT8, ["batch", SOURCE_SIZE, SOURCE_SIZE])
    new_graph = helper.make_graph([*nodes, *graph.node], graph.name, [image], list(graph.output),
                                  [*constants, *graph.initializer])
    model = helper.make_model(new_graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version,
                              producer_name=proto.producer_name, producer_version=proto.producer_version)
    model.functions.extend(proto.functions)
    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata.update(input_name=RAW_INPUT_NAME, input_shape=json.dumps(["batch", SOURCE_SIZE, SOURCE_SIZE]),
                    input_dtype="uint8", preprocessing=json.dumps({"inside the graph": PREPROCESSING}))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_torchscript(model: nn.Module, path: Path, metadata: dict[str, str]) -> list[str]:
    """``torch.jit.script`` with the metadata as the extra file ``metadata.json``; returns torch's deprecation notes.

    TorchScript is deprecated in torch 2.14: ``torch.jit`` emits FutureWarnings, which are collected here (not
    silenced) and reported in one line. ``lenet5.pt2`` (torch.export) is the format PyTorch recommends now.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category=FutureWarning)
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return sorted({str(w.message) for w in caught if issubclass(w.category, FutureWarning)})


def write_torch_export(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """``torch.export.export`` with a dynamic ``batch`` dimension, saved with ``torch.export.save``."""
    program = torch.export.export(model, (torch.zeros(2, *INPUT_SHAPE),), dynamic_shapes={"x": {0: _batch_dim()}})
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})


def load_runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Reload an exported file the way a user would and return ``run(images) -> outputs`` (numpy in and out)."""
    if fmt in ("onnx", "int8", "raw"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = RAW_INPUT_NAME if fmt == "raw" else INPUT_NAME
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    elif fmt == "torch-export":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(f"unknown format {fmt!r}")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def _predict_all(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes of the whole array; ``ExportMismatch`` on any non-finite output."""
    predictions = []
    for i in range(0, len(images), batch_size):
        outputs = np.asarray(run(np.ascontiguousarray(images[i : i + batch_size])))
        if not np.isfinite(outputs).all():
            raise ExportMismatch(f"non-finite outputs (NaN or infinity) on verification images "
                                 f"{i}-{i + len(outputs) - 1}")
        predictions.append(outputs.argmax(1))
    return np.concatenate(predictions)


def verify(
    name: str, run: Callable[[np.ndarray], np.ndarray], eager: nn.Module, images: np.ndarray, labels: np.ndarray | None,
    eager_predictions: np.ndarray, atol: float | None = None, inputs: np.ndarray | None = None,
) -> tuple[float, float | None]:
    """Compare an export with the eager model: outputs at batch 1 and 7, classes on the whole set.

    ``inputs`` are what the export takes when it is not ``images`` (the raw-input model's uint8 images).
    Returns ``(max |difference|, accuracy or None without labels)``; raises ``ExportMismatch`` when they
    disagree by more than ``atol`` (default ``PARITY_ATOL``), on any predicted class, or on any non-finite output.
    """
    atol = PARITY_ATOL if atol is None else atol
    inputs = images if inputs is None else inputs
    worst = 0.0
    for batch in (slice(0, 1), slice(1, 8)):  # batch 1 and an odd batch
        with torch.inference_mode():
            expected = eager(torch.from_numpy(images[batch])).numpy()
        got = np.asarray(run(np.ascontiguousarray(inputs[batch])))
        if got.shape != expected.shape:
            raise ExportMismatch(f"{name}: output shape {got.shape} != eager {expected.shape} at batch "
                                 f"{len(expected)}")
        if not np.isfinite(got).all() or not np.isfinite(expected).all():
            raise ExportMismatch(f"{name}: non-finite outputs (NaN or infinity) at batch {len(expected)}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= atol:  # written so that a NaN fails too
        raise ExportMismatch(f"{name}: max |output - eager| = {worst:.2e} > {atol:.0e}")
    predictions = _predict_all(run, inputs)
    differ = int((predictions != eager_predictions).sum())
    if differ:
        raise ExportMismatch(f"{name}: {differ} of {len(images)} verification images get another class than the "
                             f"eager model")
    return worst, None if labels is None else float((predictions == labels).mean())


def quantize_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime static quantization, QDQ format, calibrated on training images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i : i + 100] for i in range(0, len(calibration), 100))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        prepared.unlink(missing_ok=True)


def batch1_latency_us(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, repeats: int = 2000) -> float:
    """Median single-image latency in microseconds (after a warm-up)."""
    for _ in range(100):
        run(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def load_verification_set(
    checkpoint: dict[str, Any], data_dir: str | Path | None, download: bool, log: Callable[[str], None]
) -> VerificationSet:
    """MNIST's test split from ``resolve_data_dir`` (downloaded only into an explicit ``data_dir``), else fixed
    synthetic images with one line saying that the test accuracy is not checked."""
    found, tried = resolve_data_dir(checkpoint, data_dir)
    reason = f"no MNIST test files in {', '.join(str(raw_dir(d)) for d in tried)}"
    if found is not None:
        try:
            raw, labels = read_mnist(found, "test", download=download and data_dir is not None)
            return VerificationSet(raw, to_model_input(raw), labels, f"the {len(raw):,} MNIST test images")
        except FileNotFoundError as e:  # an explicit --data-dir without the files, the download failed or refused
            reason = " ".join(str(e).split())
    raw = synthetic_images()
    log(f"note: test accuracy not checked ({reason}); the exports are verified on {len(raw)} fixed synthetic "
        f"images (pass --data-dir DIR to check it)")
    return VerificationSet(raw, to_model_input(raw), None, f"{len(raw)} synthetic images")


def resolve_checkpoint(path: str | Path) -> Path:
    """``path``, or ``path/best_model.pt`` when it is a run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / artifacts.BEST_MODEL).is_file():
            raise FileNotFoundError(f"{path}: a directory without {artifacts.BEST_MODEL} (give a run directory of "
                                    f"ignite_lenet.train or its {artifacts.BEST_MODEL})")
        return path / artifacts.BEST_MODEL
    return path


def _percent(accuracy: float | None) -> str:
    return "n/a (no MNIST)" if accuracy is None else f"{100 * accuracy:.2f}%"


def export(
    checkpoint_path: str | Path = Path("runs/lenet5") / artifacts.BEST_MODEL,
    output_dir: str | Path = "exports",
    formats: tuple[str, ...] = FORMATS,
    output: str = "logits",
    opset: int | None = None,
    quantize: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    log: Callable[[str], None] = print,
    raw_input: bool = False,
) -> ExportReport:
    """Export ``checkpoint_path`` (a ``best_model.pt`` or a run directory) in ``formats`` into ``output_dir``,
    verifying each file against the eager model.

    ``data_dir=None`` looks for MNIST where the checkpoint was trained, then ``$IGNITE_LENET_DATA_DIR``, then
    ``./data`` (never downloading); without it the verification runs on fixed synthetic images and
    ``test_accuracy`` holds ``None``. Raises ``FileNotFoundError``/``ValueError`` for bad input and
    ``ExportMismatch`` when a check fails (the failed file is deleted). ``quantize="int8"`` adds
    ``lenet5.int8.onnx`` (needs ``"onnx"`` in ``formats`` and MNIST's training split); ``raw_input`` adds
    ``lenet5.raw.onnx`` (uint8 ``[batch, 28, 28]`` input, preprocessing inside the graph).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)} or all")
    if output not in OUTPUTS:
        raise ValueError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize supports only int8, got {quantize!r}")
    if (quantize or raw_input) and "onnx" not in formats:
        raise ValueError(f"{'--quantize int8' if quantize else '--raw-input'} builds on the ONNX export: use "
                         f"--format onnx or all")
    if opset is not None and (isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(f"--opset {opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file, not a directory")
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    eager, checkpoint = checkpoints.load_best_model(checkpoint_path)
    _checkpoint_summary(checkpoint_path, checkpoint)
    check_finite_weights(eager, str(checkpoint_path))
    model = WithSoftmax(eager) if output == "probabilities" else eager
    model.eval()

    calibration_dir = None
    if quantize:  # needs real training images: find them before writing anything
        calibration_dir = resolve_data_dir(checkpoint, data_dir)[0] if data_dir is None else Path(data_dir)
        if calibration_dir is None or not (has_mnist(calibration_dir, ("train",)) or (download and data_dir)):
            raise FileNotFoundError("--quantize int8 calibrates on MNIST training images: none found (pass "
                                    "--data-dir DIR holding MNIST/raw/)")
    check = load_verification_set(checkpoint, data_dir, download, log)
    images, labels = check.images, check.labels
    with torch.inference_mode():
        eager_outputs = np.concatenate([model(torch.from_numpy(images[i : i + 1000])).numpy()
                                        for i in range(0, len(images), 1000)])
    if not np.isfinite(eager_outputs).all():
        raise ExportMismatch(f"{checkpoint_path}: the model gives non-finite outputs (NaN or infinity) on "
                             f"{check.source}; nothing exported")
    eager_predictions = eager_outputs.argmax(1)
    report = ExportReport()
    report.test_accuracy["eager"] = None if labels is None else float((eager_predictions == labels).mean())
    metadata = build_metadata(checkpoint_path, checkpoint, output, report.test_accuracy["eager"])
    log(f"{checkpoint_path}: epoch {metadata['best_epoch']}, eager test accuracy "
        f"{_percent(report.test_accuracy['eager'])}")

    output_dir.mkdir(parents=True, exist_ok=True)
    writers = {"onnx": lambda p: write_onnx(model, p, metadata, opset),
               "torchscript": lambda p: report.notes.extend(write_torchscript(model, p, metadata)),
               "torch-export": lambda p: write_torch_export(model, p, metadata)}
    for fmt in formats:
        final = output_dir / FILE_NAMES[fmt]
        tmp = _tmp_path(final)
        try:
            writers[fmt](tmp)
            diff, accuracy = verify(fmt, load_runner(fmt, tmp), model, images, labels, eager_predictions)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        report.files[fmt], report.max_abs_diff[fmt], report.test_accuracy[fmt] = final, diff, accuracy
        report.sizes[fmt] = final.stat().st_size
        log(f"{fmt:>12}: {final}  {final.stat().st_size / 1024:6.1f} KiB  max |diff| vs eager {diff:.1e}  "
            f"test accuracy {_percent(accuracy)}  (same class as eager on all {check.source})")
        if fmt == "torchscript" and report.notes:
            log(f"        note: torch {torch.__version__} deprecates TorchScript ({report.notes[0]}); prefer "
                f"{FILE_NAMES['torch-export']} (torch.export) or {FILE_NAMES['onnx']}")

    if raw_input:
        _export_raw(report, output_dir, model, check, eager_predictions, log)
    if quantize:
        report.notes.extend(_export_int8(report, output_dir, images, labels, calibration_dir, download, log))
    return report


def _export_raw(report: ExportReport, output_dir: Path, model: nn.Module, check: VerificationSet,
                eager_predictions: np.ndarray, log: Callable[[str], None]) -> None:
    """``lenet5.raw.onnx``, verified like every format and against ``lenet5.onnx`` on every verification image."""
    import onnx

    final = output_dir / RAW_FILE_NAME
    tmp = _tmp_path(final)
    try:
        onnx.save_model(raw_input_model(onnx.load(str(report.files["onnx"]))), str(tmp), save_as_external_data=False)
        run = load_runner("raw", tmp)
        diff, accuracy = verify("raw", run, model, check.images, check.labels, eager_predictions, inputs=check.raw)
        onnx_predictions = _predict_all(load_runner("onnx", report.files["onnx"]), check.images)
        differ = int((_predict_all(run, check.raw) != onnx_predictions).sum())
        if differ:
            raise ExportMismatch(f"raw: {differ} of {len(check.raw)} verification images get another class than "
                                 f"{FILE_NAMES['onnx']}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    report.files["raw"], report.max_abs_diff["raw"], report.test_accuracy["raw"] = final, diff, accuracy
    report.sizes["raw"] = final.stat().st_size
    log(f"{'raw':>12}: {final}  {report.sizes['raw'] / 1024:6.1f} KiB  uint8 [batch, 28, 28] input  max |diff| vs "
        f"eager {diff:.1e}  test accuracy {_percent(accuracy)}  (same class as {FILE_NAMES['onnx']} on all "
        f"{check.source})")


def _export_int8(
    report: ExportReport, output_dir: Path, images: np.ndarray, labels: np.ndarray | None, data_dir: Path,
    download: bool, log: Callable[[str], None],
) -> list[str]:
    final = output_dir / INT8_FILE_NAME
    tmp = _tmp_path(final)
    train_images, _ = read_mnist(data_dir, "train", download)
    order = np.random.default_rng(0).permutation(len(train_images))[:1000]
    calibration = to_model_input(train_images[np.sort(order)])
    reference = _predict_all(load_runner("onnx", report.files["onnx"]), images)
    try:
        quantize_int8(report.files["onnx"], tmp, calibration)
        run = load_runner("int8", tmp)
        predictions = _predict_all(run, images)
        truth = reference if labels is None else labels  # without MNIST's labels: agreement with fp32
        accuracy = float((predictions == truth).mean())
        baseline = 1.0 if labels is None else report.test_accuracy["onnx"]
        drop = baseline - accuracy
        if drop > INT8_MAX_ACCURACY_DROP:
            raise ExportMismatch(f"int8: test accuracy {100 * accuracy:.2f}% is {100 * drop:.2f} points below fp32 "
                                 f"(limit {100 * INT8_MAX_ACCURACY_DROP:.1f})")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fp32_run = load_runner("onnx", report.files["onnx"])
    one = np.ascontiguousarray(images[:1])
    latency = {"fp32": batch1_latency_us(fp32_run, one), "int8": batch1_latency_us(run, one)}
    report.files["int8"], report.test_accuracy["int8"], report.sizes["int8"] = final, accuracy, final.stat().st_size
    note = (f"int8: {final}  {report.sizes['int8'] / 1024:.1f} KiB (fp32 {report.sizes['onnx'] / 1024:.1f} KiB)  "
            f"test accuracy {100 * accuracy:.2f}% ({100 * (accuracy - baseline):+.2f} points)  "
            f"batch-1 latency {latency['int8']:.1f} us (fp32 {latency['fp32']:.1f} us)")
    log(note)
    return [note]


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.export",
        description="Export the best LeNet-5 checkpoint to ONNX / TorchScript / torch.export and verify each file "
        "against the eager model on the MNIST test set.",
    )
    parser.add_argument("--format", default="onnx", choices=[*FORMATS, "all"],
                        help="what to export; 'all' writes every format (default: %(default)s)")
    parser.add_argument("--checkpoint", default=str(Path("runs/lenet5") / artifacts.BEST_MODEL), metavar="PATH",
                        help="best-model checkpoint written by ignite_lenet.train, or its run directory "
                        "(default: %(default)s)")
    parser.add_argument("--output-dir", type=output_dir, default="exports", metavar="DIR",
                        help="where the exported files go (default: %(default)s)")
    parser.add_argument("--opset", type=int_range(MIN_OPSET, MAX_OPSET), default=None, metavar="N",
                        help=f"ONNX opset version, {MIN_OPSET} to {MAX_OPSET} (default: the exporter's)")
    parser.add_argument("--output", default="logits", choices=OUTPUTS,
                        help="model output: raw logits, or probabilities (a softmax inside the graph) "
                        "(default: %(default)s)")
    parser.add_argument("--raw-input", action="store_true",
                        help=f"also write {RAW_FILE_NAME}: uint8 [batch, 28, 28] input (MNIST's IDX layout), the "
                        "scaling and 28->32 resize of training inside the graph")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help="also write lenet5.int8.onnx by ONNX Runtime static quantization (QDQ, calibrated on "
                        "training images)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="MNIST directory (torchvision layout) for the verification on the test set (default: "
                        "the checkpoint's data_dir when it holds MNIST, else $IGNITE_LENET_DATA_DIR, else ./data; "
                        "without MNIST the files are verified on synthetic images)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download MNIST into --data-dir when it is missing there")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    formats = FORMATS if args.format == "all" else (args.format,)

    def work() -> None:
        export(args.checkpoint, args.output_dir, formats, args.output, args.opset, args.quantize,
               args.data_dir, args.download, log=print, raw_input=args.raw_input)

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
