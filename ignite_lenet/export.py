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

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import artifacts, checkpoints
from .cli import ArgumentParser, int_range, output_dir, run_cli
from .export_formats import (
    INPUT_NAME, METADATA_FILE, NCHWC_BLOCK, RAW_INPUT_NAME, ExportMismatch, WithSoftmax, load_runner, pad_conv_channels,
    quantize_int8, raw_input_model, write_onnx, write_torch_export, write_torchscript,
)
from .export_verify import (
    PARITY_ATOL, SYNTHETIC_IMAGES, VerificationSet, batch1_latency_us, build_metadata,
    checkpoint_summary, load_verification_set, predict_all, resolve_data_dir, sha256_file, synthetic_images, verify,
)
from .mnist_files import has_mnist, read_mnist
from .preprocessing import to_model_input

__all__ = [  # the writers and checks live in export_formats and export_verify; their names stay importable here
    "FILE_NAMES", "FORMATS", "INPUT_NAME", "INT8_FILE_NAME", "INT8_MAX_ACCURACY_DROP", "MAX_OPSET", "METADATA_FILE",
    "MIN_OPSET", "NCHWC_BLOCK", "OUTPUTS", "PARITY_ATOL", "RAW_FILE_NAME", "RAW_INPUT_NAME", "SYNTHETIC_IMAGES",
    "ExportMismatch", "ExportReport", "VerificationSet", "WithSoftmax", "batch1_latency_us", "build_metadata",
    "export", "get_args_parser", "load_runner", "load_verification_set", "main",
    "pad_conv_channels", "quantize_int8", "raw_input_model", "resolve_checkpoint", "resolve_data_dir", "sha256_file",
    "synthetic_images", "verify", "write_onnx", "write_torch_export", "write_torchscript",
]

FORMATS = ("onnx", "torchscript", "torch-export")
FILE_NAMES = {"onnx": "lenet5.onnx", "torchscript": "lenet5.torchscript.pt", "torch-export": "lenet5.pt2"}
INT8_FILE_NAME = "lenet5.int8.onnx"
RAW_FILE_NAME = "lenet5.raw.onnx"
MIN_OPSET, MAX_OPSET = 18, 25  # torch.onnx's dynamo exporter writes these as asked; older ones need the
# deprecated TorchScript exporter (the onnx version converter fails on this graph below 16), newer ones are untested
OUTPUTS = ("logits", "probabilities")
INT8_MAX_ACCURACY_DROP = 0.003  # 0.3 points


@dataclass
class ExportReport:
    """What an export produced and measured (printed by the CLI, returned by ``export``)."""

    files: dict[str, Path] = field(default_factory=dict)
    test_accuracy: dict[str, float | None] = field(default_factory=dict)  # None: not checked (no MNIST)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _tmp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` with the same suffix (torch.export.save insists on ``.pt2``)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


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
    output_dir = artifacts.check_output_dir(output_dir)
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    eager, checkpoint = checkpoints.load_best_model(checkpoint_path)  # refuses non-finite weights by name
    checkpoint_summary(checkpoint_path, checkpoint)
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
        report.notes.extend(_export_int8(report, output_dir, images, labels, eager_predictions, calibration_dir,
                                         download, log))
    return report


def _export_raw(report: ExportReport, output_dir: Path, model: nn.Module, check: VerificationSet,
                eager_predictions: np.ndarray, log: Callable[[str], None]) -> None:
    """``lenet5.raw.onnx``, verified like every format: the same class as the eager model (and so as
    ``lenet5.onnx``, verified the same way) on every verification image."""
    import onnx

    final = output_dir / RAW_FILE_NAME
    tmp = _tmp_path(final)
    try:
        onnx.save_model(raw_input_model(onnx.load(str(report.files["onnx"]))), str(tmp), save_as_external_data=False)
        run = load_runner("raw", tmp)
        diff, accuracy = verify("raw", run, model, check.images, check.labels, eager_predictions, inputs=check.raw)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    report.files["raw"], report.max_abs_diff["raw"], report.test_accuracy["raw"] = final, diff, accuracy
    report.sizes["raw"] = final.stat().st_size
    log(f"{'raw':>12}: {final}  {report.sizes['raw'] / 1024:6.1f} KiB  uint8 [batch, 28, 28] input  max |diff| vs "
        f"eager {diff:.1e}  test accuracy {_percent(accuracy)}  (same class as {FILE_NAMES['onnx']} on all "
        f"{check.source})")


def _export_int8(
    report: ExportReport, output_dir: Path, images: np.ndarray, labels: np.ndarray | None,
    fp32_predictions: np.ndarray, data_dir: Path, download: bool, log: Callable[[str], None],
) -> list[str]:
    """``lenet5.int8.onnx`` calibrated on 1,000 training images; refused when its accuracy drops too far below
    fp32 (``fp32_predictions``: the eager model's classes, which ``lenet5.onnx`` was verified to match)."""
    final = output_dir / INT8_FILE_NAME
    tmp = _tmp_path(final)
    train_images, _ = read_mnist(data_dir, "train", download)
    order = np.random.default_rng(0).permutation(len(train_images))[:1000]
    calibration = to_model_input(train_images[np.sort(order)])
    try:
        quantize_int8(report.files["onnx"], tmp, calibration)
        run = load_runner("int8", tmp)
        predictions = predict_all(run, images)
        truth = fp32_predictions if labels is None else labels  # without MNIST's labels: agreement with fp32
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
