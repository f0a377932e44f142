"""``export()``: a best checkpoint to ONNX, TorchScript and torch.export, each file verified against the eager model.

Every file is written to a temporary name, reloaded, compared with the eager model on real MNIST test images
(max |logit difference| <= 1e-4 at batch 1 and at an odd batch; the same predicted class on all 10,000 test
images; every weight and output finite) and only then renamed into place: a failed check leaves no file
behind. MNIST is looked for where the checkpoint was trained, then in $IGNITE_LENET_DATA_DIR, then ./data;
without it the files are verified on fixed synthetic images and the test accuracy is reported as not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ignite_lenet.checkpoints import load_best_model
from ignite_lenet.export.formats import FORMATS, WithSoftmax, load_runner
from ignite_lenet.export.metadata import build_metadata, checkpoint_summary
from ignite_lenet.export.onnx_graph import quantize_int8, raw_input_model
from ignite_lenet.export.verify import (
    ExportMismatch,
    VerificationSet,
    batch1_latency_us,
    load_verification_set,
    predict_all,
    resolve_data_dir,
    verify,
)
from ignite_lenet.files import check_output_dir, make_dirs, replace_checked, write_synced
from ignite_lenet.mnist.idx import has_mnist, read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.spec import (BEST_MODEL, DEFAULT_EXPORT_DIR, DEFAULT_RUN_DIR, EXPORT_FILES, MAX_OPSET, MIN_OPSET,
                               MODEL_OUTPUTS)

OUTPUTS = MODEL_OUTPUTS
INT8_MAX_ACCURACY_DROP = 0.003  # 0.3 points
INT8_CALIBRATION_IMAGES = 1000


@dataclass
class ExportReport:
    """What an export produced and measured (printed by the CLI, returned by ``export``)."""

    files: dict[str, Path] = field(default_factory=dict)
    test_accuracy: dict[str, float | None] = field(default_factory=dict)  # None: not checked (no MNIST)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def resolve_checkpoint(path: str | Path) -> Path:
    """``path``, or ``path/best_model.pt`` when it is a run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / BEST_MODEL).is_file():
            raise FileNotFoundError(f"{path}: a directory without {BEST_MODEL} (give a run directory of "
                                    f"ignite_lenet.train or its {BEST_MODEL})")
        return path / BEST_MODEL
    return path


def _percent(accuracy: float | None) -> str:
    return "n/a (no MNIST)" if accuracy is None else f"{100 * accuracy:.2f}%"


def export(
    checkpoint_path: str | Path = Path(DEFAULT_RUN_DIR) / BEST_MODEL,
    output_dir: str | Path = DEFAULT_EXPORT_DIR,
    formats: tuple[str, ...] = tuple(FORMATS),
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
    _check_arguments(formats, output, opset, quantize, raw_input)
    output_dir = check_output_dir(output_dir)
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    eager, checkpoint = load_best_model(checkpoint_path)  # refuses non-finite weights by name
    checkpoint_summary(checkpoint_path, checkpoint)
    model = (WithSoftmax(eager) if output == "probabilities" else eager).eval()
    calibration_dir = _calibration_dir(checkpoint, data_dir, download) if quantize else None  # before any write
    check = load_verification_set(checkpoint, data_dir, download, log)
    eager_predictions = _eager_predictions(model, check, checkpoint_path)
    report = ExportReport()
    labels = check.labels
    report.test_accuracy["eager"] = None if labels is None else float((eager_predictions == labels).mean())
    metadata = build_metadata(checkpoint_path, checkpoint, output, report.test_accuracy["eager"])
    log(f"{checkpoint_path}: epoch {metadata['best_epoch']}, eager test accuracy "
        f"{_percent(report.test_accuracy['eager'])}")

    make_dirs(output_dir)
    for name in formats:
        fmt, notes = FORMATS[name], []
        final = output_dir / fmt.file_name
        diff, accuracy = fmt.replace(
            final, lambda tmp: notes.extend(fmt.write(model, tmp, metadata, opset)),
            lambda tmp: verify(name, fmt.load(tmp), model, check.images, labels, eager_predictions))
        _record(report, name, final, accuracy, diff)
        log(f"{name:>12}: {final}  {report.sizes[name] / 1024:6.1f} KiB  max |diff| vs eager {diff:.1e}  "
            f"test accuracy {_percent(accuracy)}  (same class as eager on all {check.source})")
        for note in notes:  # what the writer wants said, in its own words
            report.notes.append(note)
            log(f"        note: {note}")
    if raw_input:
        _export_raw(report, output_dir, model, check, eager_predictions, log)
    if quantize:
        report.notes.append(_export_int8(report, output_dir, check, eager_predictions, calibration_dir, download,
                                         log))
    return report


def _check_arguments(formats: tuple[str, ...], output: str, opset: int | None, quantize: str | None,
                     raw_input: bool) -> None:
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


def _calibration_dir(checkpoint: dict, data_dir: str | Path | None, download: bool) -> Path:
    """Where int8 calibration finds MNIST's training images; ``FileNotFoundError`` when nowhere."""
    found = resolve_data_dir(checkpoint, data_dir)[0] if data_dir is None else Path(data_dir)
    if found is None or not (has_mnist(found, ("train",)) or (download and data_dir)):
        raise FileNotFoundError("--quantize int8 calibrates on MNIST training images: none found (pass "
                                "--data-dir DIR holding MNIST/raw/)")
    return found


def _eager_predictions(model: nn.Module, check: VerificationSet, checkpoint_path: Path) -> np.ndarray:
    """The eager model's classes on the verification images; ``ExportMismatch`` on any non-finite output."""
    images = check.images
    with torch.inference_mode():
        outputs = np.concatenate([model(torch.from_numpy(images[i : i + 1000])).numpy()
                                  for i in range(0, len(images), 1000)])
    if not np.isfinite(outputs).all():
        raise ExportMismatch(f"{checkpoint_path}: the model gives non-finite outputs (NaN or infinity) on "
                             f"{check.source}; nothing exported")
    return outputs.argmax(1)


def _record(report: ExportReport, name: str, path: Path, accuracy: float | None, diff: float | None = None) -> None:
    report.files[name], report.test_accuracy[name], report.sizes[name] = path, accuracy, path.stat().st_size
    if diff is not None:
        report.max_abs_diff[name] = diff


def _export_raw(report: ExportReport, output_dir: Path, model: nn.Module, check: VerificationSet,
                eager_predictions: np.ndarray, log: Callable[[str], None]) -> None:
    """``lenet5.raw.onnx``, verified like every format: the same class as the eager model (and so as
    ``lenet5.onnx``, verified the same way) on every verification image."""
    import onnx

    final = output_dir / EXPORT_FILES["raw"]
    proto = raw_input_model(onnx.load(str(report.files["onnx"])))
    diff, accuracy = replace_checked(
        final, lambda tmp: write_synced(tmp, lambda f: onnx.save_model(proto, f)),
        lambda tmp: verify("raw", load_runner("raw", tmp), model, check.images, check.labels, eager_predictions,
                           inputs=check.raw))
    _record(report, "raw", final, accuracy, diff)
    log(f"{'raw':>12}: {final}  {report.sizes['raw'] / 1024:6.1f} KiB  uint8 [batch, 28, 28] input  max |diff| vs "
        f"eager {diff:.1e}  test accuracy {_percent(accuracy)}  (same class as {EXPORT_FILES['onnx']} on all "
        f"{check.source})")


def _export_int8(report: ExportReport, output_dir: Path, check: VerificationSet, fp32_predictions: np.ndarray,
                 data_dir: Path, download: bool, log: Callable[[str], None]) -> str:
    """``lenet5.int8.onnx`` calibrated on training images; refused when its accuracy drops too far below fp32
    (``fp32_predictions``: the eager model's classes, which ``lenet5.onnx`` was verified to match)."""
    final = output_dir / EXPORT_FILES["int8"]
    train_images, _ = read_mnist(data_dir, "train", download)
    order = np.random.default_rng(0).permutation(len(train_images))[:INT8_CALIBRATION_IMAGES]
    calibration = to_model_input(train_images[np.sort(order)])
    labels = check.labels
    truth = fp32_predictions if labels is None else labels  # without MNIST's labels: agreement with fp32
    baseline = 1.0 if labels is None else report.test_accuracy["onnx"]

    def check_accuracy(tmp: Path) -> float:
        accuracy = float((predict_all(load_runner("int8", tmp), check.images) == truth).mean())
        drop = baseline - accuracy
        if drop > INT8_MAX_ACCURACY_DROP:
            raise ExportMismatch(f"int8: test accuracy {100 * accuracy:.2f}% is {100 * drop:.2f} points below fp32 "
                                 f"(limit {100 * INT8_MAX_ACCURACY_DROP:.1f})")
        return accuracy

    accuracy = replace_checked(final, lambda tmp: quantize_int8(report.files["onnx"], tmp, calibration),
                               check_accuracy)
    _record(report, "int8", final, accuracy)
    one = np.ascontiguousarray(check.images[:1])
    latency = {kind: batch1_latency_us(load_runner(kind, report.files[kind]), one) for kind in ("onnx", "int8")}
    note = (f"int8: {final}  {report.sizes['int8'] / 1024:.1f} KiB (fp32 {report.sizes['onnx'] / 1024:.1f} KiB)  "
            f"test accuracy {100 * accuracy:.2f}% ({100 * (accuracy - baseline):+.2f} points)  "
            f"batch-1 latency {latency['int8']:.1f} us (fp32 {latency['onnx']:.1f} us)")
    log(note)
    return note
