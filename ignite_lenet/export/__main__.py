"""``python -m ignite_lenet.export``: the command line of ``export()`` (this module only parses and calls).

    python -m ignite_lenet.export --format onnx              # runs/lenet5/best_model.pt -> exports/lenet5.onnx
    python -m ignite_lenet.export --format all --checkpoint runs/lenet5/best_model.pt --output-dir exports/
    python -m ignite_lenet.export --format onnx --quantize int8   # + exports/lenet5.int8.onnx (static QDQ)
    python -m ignite_lenet.export --format onnx --raw-input       # + exports/lenet5.raw.onnx (uint8 28x28 input)
    python -m ignite_lenet.export --format triton --output-dir model_repository   # lenet5/config.pbtxt, 1/model.onnx

Every file is written to a temporary name, reloaded, compared with the eager model on real MNIST test images
(max |logit difference| <= 1e-4 at batch 1 and at an odd batch; the same predicted class on all 10,000 test
images; every weight and output finite) and only then renamed into place: a failed check leaves no file
behind. MNIST is looked for where the checkpoint was trained, then in $IGNITE_LENET_DATA_DIR, then ./data;
without it the files are verified on fixed synthetic images and the test accuracy is reported as not checked.
"""

from __future__ import annotations

from pathlib import Path

from ignite_lenet.cmdline import ArgumentParser, int_range, output_dir, run_cli
from ignite_lenet.spec import (BEST_MODEL, DEFAULT_EXPORT_DIR, DEFAULT_RUN_DIR, EXPORT_FILES, EXPORT_FORMATS,
                               MAX_OPSET, MIN_OPSET, MODEL_OUTPUTS)

# The parser is torch-free (names from spec), so --help works and a missing training extra is one line (run_cli)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.export",
        description="Export the best LeNet-5 checkpoint to ONNX / TorchScript / torch.export and verify each file "
        "against the eager model on the MNIST test set.",
    )
    parser.add_argument("--format", default="onnx", choices=[*EXPORT_FORMATS, "all"],
                        help="what to export; 'all' writes every format (default: %(default)s)")
    parser.add_argument("--checkpoint", default=str(Path(DEFAULT_RUN_DIR) / BEST_MODEL), metavar="PATH",
                        help="best-model checkpoint written by ignite_lenet.train, or its run directory "
                        "(default: %(default)s)")
    parser.add_argument("--output-dir", type=output_dir, default=DEFAULT_EXPORT_DIR, metavar="DIR",
                        help="where the exported files go (default: %(default)s)")
    parser.add_argument("--opset", type=int_range(MIN_OPSET, MAX_OPSET), default=None, metavar="N",
                        help=f"ONNX opset version, {MIN_OPSET} to {MAX_OPSET} (default: the exporter's)")
    parser.add_argument("--output", default="logits", choices=MODEL_OUTPUTS,
                        help="model output: raw logits, or probabilities (a softmax inside the graph) "
                        "(default: %(default)s)")
    parser.add_argument("--raw-input", action="store_true",
                        help=f"also write {EXPORT_FILES['raw']}: uint8 [batch, 28, 28] input (MNIST's IDX layout), the "
                        "scaling and 28->32 resize of training inside the graph")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help=f"also write {EXPORT_FILES['int8']} by ONNX Runtime static quantization (QDQ, calibrated on "
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
    formats = EXPORT_FORMATS if args.format == "all" else (args.format,)

    def work() -> None:
        from ignite_lenet.export.exporter import export  # torch

        export(args.checkpoint, args.output_dir, formats, args.output, args.opset, args.quantize,
               args.data_dir, args.download, log=print, raw_input=args.raw_input)

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
