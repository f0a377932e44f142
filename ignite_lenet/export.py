"""Export the best checkpoint to ONNX, TorchScript and torch.export, each verified against the eager model.

    python -m ignite_lenet.export --format onnx              # runs/lenet5/best_model.pt -> exports/lenet5.onnx
    python -m ignite_lenet.export --format all --checkpoint runs/lenet5/best_model.pt --output-dir exports/
    python -m ignite_lenet.export --format onnx --quantize int8   # + exports/lenet5.int8.onnx (static QDQ)

Every file is written to a temporary name, reloaded, compared with the eager model on real MNIST test images
(max |logit difference| <= 1e-4 at batch 1 and at an odd batch; the same predicted class on all 10,000 test
images) and only then renamed into place: a failed check leaves no file behind.
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
from .cli import ArgumentParser, run_cli
from .config import default_data_dir
from .data import PREPROCESSING, load_mnist, preprocess
from .model import CLASS_NAMES, INPUT_SHAPE, probabilities

FORMATS = ("onnx", "torchscript", "torch-export")
FILE_NAMES = {"onnx": "lenet5.onnx", "torchscript": "lenet5.torchscript.pt", "torch-export": "lenet5.pt2"}
INT8_FILE_NAME = "lenet5.int8.onnx"
INPUT_NAME = "input"
OUTPUTS = ("logits", "probabilities")
METADATA_FILE = "metadata.json"  # TorchScript / torch.export extra file holding the metadata
PARITY_ATOL = 1e-4
INT8_MAX_ACCURACY_DROP = 0.003  # 0.3 points


class ExportMismatch(ValueError):
    """A reloaded export does not reproduce the eager model."""


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
    test_accuracy: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_metadata(checkpoint_path: Path, checkpoint: dict[str, Any], output: str, test_accuracy: float) -> dict[str, str]:
    """String key/values that travel inside every exported file (ONNX ``metadata_props``, extra files)."""
    import ignite
    import onnx

    return {
        "model": "LeNet-5 (ignite_lenet)",
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(["batch", *INPUT_SHAPE]),
        "output": output,
        "preprocessing": json.dumps(PREPROCESSING),
        "class_names": json.dumps(list(CLASS_NAMES)),
        "source_checkpoint": checkpoint_path.name,
        "source_checkpoint_sha256": sha256_file(checkpoint_path),
        "best_epoch": str(checkpoint["epoch"]),
        "val_accuracy": f"{checkpoint['val_accuracy']:.6f}",
        "test_accuracy": f"{test_accuracy:.6f}",
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
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


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
    if fmt in ("onnx", "int8"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {INPUT_NAME: x})[0]
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
    return np.concatenate([run(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def verify(
    name: str, run: Callable[[np.ndarray], np.ndarray], eager: nn.Module, images: np.ndarray, labels: np.ndarray,
    eager_predictions: np.ndarray, atol: float | None = None,
) -> tuple[float, float]:
    """Compare an export with the eager model: outputs at batch 1 and 7, classes on the whole test set.

    Returns ``(max |difference|, test accuracy)``; raises ``ExportMismatch`` when they disagree by more than
    ``atol`` (default ``PARITY_ATOL``) or on any predicted class.
    """
    atol = PARITY_ATOL if atol is None else atol
    worst = 0.0
    for batch in (images[:1], images[1:8]):  # batch 1 and an odd batch
        with torch.inference_mode():
            expected = eager(torch.from_numpy(batch)).numpy()
        got = run(np.ascontiguousarray(batch))
        if got.shape != expected.shape:
            raise ExportMismatch(f"{name}: output shape {got.shape} != eager {expected.shape} at batch {len(batch)}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > atol:
        raise ExportMismatch(f"{name}: max |output - eager| = {worst:.2e} > {atol:.0e}")
    predictions = _predict_all(run, images)
    differ = int((predictions != eager_predictions).sum())
    if differ:
        raise ExportMismatch(f"{name}: {differ} of {len(images)} test images get another class than the eager model")
    return worst, float((predictions == labels).mean())


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
) -> ExportReport:
    """Export ``checkpoint_path`` in ``formats`` into ``output_dir``, verifying each file on real MNIST.

    Raises ``FileNotFoundError``/``ValueError`` for bad input and ``ExportMismatch`` when a check fails (the
    failed file is deleted). ``quantize="int8"`` adds ``lenet5.int8.onnx`` (needs ``"onnx"`` in ``formats``).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)} or all")
    if output not in OUTPUTS:
        raise ValueError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize supports only int8, got {quantize!r}")
    if quantize and "onnx" not in formats:
        raise ValueError("--quantize int8 quantizes the ONNX export: use --format onnx or all")
    checkpoint_path = Path(checkpoint_path)
    eager, checkpoint = checkpoints.load_best_model(checkpoint_path)
    model = WithSoftmax(eager) if output == "probabilities" else eager
    model.eval()

    test_images, test_labels = load_mnist(data_dir or default_data_dir(), "test", download)
    images = preprocess(test_images).numpy()
    labels = test_labels.numpy()
    with torch.inference_mode():
        eager_outputs = np.concatenate([model(torch.from_numpy(images[i : i + 1000])).numpy()
                                        for i in range(0, len(images), 1000)])
    eager_predictions = eager_outputs.argmax(1)
    report = ExportReport()
    report.test_accuracy["eager"] = float((eager_predictions == labels).mean())
    metadata = build_metadata(checkpoint_path, checkpoint, output, report.test_accuracy["eager"])
    log(f"{checkpoint_path}: epoch {checkpoint['epoch']}, eager test accuracy {100 * report.test_accuracy['eager']:.2f}%")

    output_dir = Path(output_dir)
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
            f"test accuracy {100 * accuracy:.2f}%  (same class as eager on all {len(images):,} test images)")
        if fmt == "torchscript" and report.notes:
            log(f"        note: torch {torch.__version__} deprecates TorchScript ({report.notes[0]}); prefer "
                f"{FILE_NAMES['torch-export']} (torch.export) or {FILE_NAMES['onnx']}")

    if quantize:
        report.notes.extend(_export_int8(report, output_dir, images, labels, data_dir, download, log))
    return report


def _export_int8(
    report: ExportReport, output_dir: Path, images: np.ndarray, labels: np.ndarray, data_dir: Any, download: bool,
    log: Callable[[str], None],
) -> list[str]:
    final = output_dir / INT8_FILE_NAME
    tmp = _tmp_path(final)
    train_images, _ = load_mnist(data_dir or default_data_dir(), "train", download)
    calibration = preprocess(train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:1000]]).numpy()
    try:
        quantize_int8(report.files["onnx"], tmp, calibration)
        run = load_runner("int8", tmp)
        accuracy = float((_predict_all(run, images) == labels).mean())
        drop = report.test_accuracy["onnx"] - accuracy
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
            f"test accuracy {100 * accuracy:.2f}% ({100 * (accuracy - report.test_accuracy['onnx']):+.2f} points)  "
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
                        help="best-model checkpoint written by ignite_lenet.train (default: %(default)s)")
    parser.add_argument("--output-dir", default="exports", metavar="DIR",
                        help="where the exported files go (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--output", default="logits", choices=OUTPUTS,
                        help="model output: raw logits, or probabilities (a softmax inside the graph) "
                        "(default: %(default)s)")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help="also write lenet5.int8.onnx by ONNX Runtime static quantization (QDQ, calibrated on "
                        "training images)")
    parser.add_argument("--data-dir", default=default_data_dir(), metavar="DIR",
                        help="MNIST directory (torchvision layout) for the verification on the test set "
                        "(default: $IGNITE_LENET_DATA_DIR or ./data, now %(default)s)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download MNIST: fail with a message when it is missing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    formats = FORMATS if args.format == "all" else (args.format,)

    def work() -> None:
        export(args.checkpoint, args.output_dir, formats, args.output, args.opset, args.quantize,
               args.data_dir, args.download, log=print)

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
