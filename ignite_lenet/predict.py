"""Predict digits with an exported model (ONNX Runtime; ``.pt2`` and TorchScript ``.pt`` load torch when used).

    python -m ignite_lenet.predict --model exports/lenet5.onnx digit1.png photo.jpg
    python -m ignite_lenet.predict --model exports/lenet5.onnx --output-format jsonl --top-k 3 scans/
    python -m ignite_lenet.predict --model exports/lenet5.onnx --test-set --data-dir ../shared/datasets
    python -m ignite_lenet.predict --model exports/lenet5.raw.onnx --idx t10k-images-idx3-ubyte \
        --labels t10k-labels-idx1-ubyte

Image files are normalised the way MNIST was made (polarity, crop, 20x20, centre of mass) and print
``path<TAB>predicted<TAB>probability`` per line (``--output-format jsonl|csv|json`` for scripts); sets
(``--idx``, ``--test-set``) print accuracy (when labels are known) and images/s, and per-image rows with
``--top-k`` or ``--probabilities``. Exit code 0; 1 when some image files could not be predicted (unreadable,
"no digit found"; the others still are, the failures are reported on stderr); 2 for unusable input (no model,
not a model, nothing to predict). The ONNX path imports neither torch nor torchvision.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import numpy as np

from ignite_lenet.cmdline import EXIT_USAGE, ArgumentParser, int_range, run_cli
from ignite_lenet.inference.loading import image_files, load_classifier
from ignite_lenet.inference.onnx_runtime import MAX_THREADS
from ignite_lenet.inference.predict import predict_files, predict_set, prediction_rows
from ignite_lenet.mnist.idx import read_idx, read_mnist
from ignite_lenet.spec import default_data_dir

OUTPUT_FORMATS = ("text", "jsonl", "csv", "json")


MAX_BATCH = 1 << 20  # images per ONNX Runtime call (not training's MAX_BATCH: inference holds no gradients)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.predict",
        description="Classify handwritten digits with an exported LeNet-5: image files, an IDX file, or the MNIST "
        "test set.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (PNG, JPEG, TIFF, ...; any size and mode, transparency honoured) or "
                        "directories of them")
    parser.add_argument("--model", default="exports/lenet5.onnx", metavar="PATH",
                        help="exported model: .onnx (ONNX Runtime, no torch), .pt2 (torch.export) or TorchScript .pt; "
                        "a directory holding lenet5.onnx (default: %(default)s)")
    parser.add_argument("--idx", metavar="FILE",
                        help="an IDX image file (N x 28 x 28 uint8, like MNIST's), .gz allowed")
    parser.add_argument("--labels", metavar="FILE", help="IDX labels for --idx, to report accuracy")
    parser.add_argument("--test-set", action="store_true", help="predict the 10,000 MNIST test images")
    parser.add_argument("--data-dir", default=default_data_dir(), metavar="DIR",
                        help="MNIST directory for --test-set (default: $IGNITE_LENET_DATA_DIR or ./data, now "
                        "%(default)s)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="with --test-set, never download MNIST")
    parser.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=1024, metavar="N",
                        help="images per inference call (default: %(default)s)")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"],
                        help="ONNX Runtime execution provider (default: %(default)s)")
    parser.add_argument("--threads", type=int_range(1, MAX_THREADS), default=None, metavar="N",
                        help="ONNX Runtime intra-op threads (default: one per core)")
    invert = parser.add_mutually_exclusive_group()
    invert.add_argument("--invert", dest="invert", action="store_const", const=True, default=None,
                        help="image files are dark digits on a light background: invert them (default: detect "
                        "from the border pixels, and say so)")
    invert.add_argument("--no-invert", dest="invert", action="store_const", const=False,
                        help="never invert image files")
    parser.add_argument("--output-format", default="text", choices=OUTPUT_FORMATS,
                        help="text (tab-separated), jsonl (one JSON object per image), csv, or json (one document) "
                        "(default: %(default)s)")
    parser.add_argument("--json", dest="output_format", action="store_const", const="json",
                        help="the same as --output-format json")
    parser.add_argument("--top-k", type=int_range(1, 1000), default=1, metavar="K",
                        help="also report the K most probable classes per image (default: %(default)s)")
    parser.add_argument("--probabilities", action="store_true",
                        help="report every class probability per image (for sets too)")
    return parser


def _read_set(args) -> tuple[str, np.ndarray, np.ndarray | None]:
    if args.test_set:
        images, labels = read_mnist(args.data_dir, "test", args.download)
        return "MNIST test set", images, labels
    images = read_idx(args.idx)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{args.idx}: expected N x H x W uint8 images, got {images.dtype} shape {images.shape}")
    labels = None
    if args.labels:
        labels = read_idx(args.labels)
        if labels.ndim != 1 or labels.shape[0] != len(images):
            raise ValueError(f"{args.labels}: {labels.shape[0] if labels.ndim else 0} labels for {len(images)} images")
        labels = labels.astype(np.int64)
    return str(args.idx), images, labels


def _columns(top_k: int, with_probs: bool, classes: int) -> list[str]:
    columns = ["label", "probability"]
    for k in range(2, top_k + 1):
        columns += [f"label_{k}", f"probability_{k}"]
    if with_probs:
        columns += [f"p{i}" for i in range(classes)]
    return columns


def _flat(row: dict[str, Any], top_k: int, with_probs: bool) -> list[Any]:
    values = [row["label"], f"{row['probability']:.6f}"]
    for label, p in row.get("top_k", [])[1:top_k]:
        values += [label, f"{p:.6f}"]
    if with_probs:
        values += [f"{p:.6f}" for p in row["probabilities"]]
    return values


def _print_rows(key: str, rows: list[dict[str, Any]], args, classes: int) -> None:
    """Per-image rows in the chosen format: ``key`` is ``path`` (files) or ``index`` (sets)."""
    if args.output_format == "jsonl":
        for row in rows:
            print(json.dumps(row))
    elif args.output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([key, *_columns(args.top_k, args.probabilities, classes)])
        for row in rows:
            writer.writerow([row[key], *_flat(row, args.top_k, args.probabilities)])
    else:  # text: tab-separated, so paths with spaces stay one field
        for row in rows:
            print("\t".join(map(str, [row[key], *_flat(row, args.top_k, args.probabilities)])))


def _run_files(args, clf) -> int:
    paths = image_files(args.images)
    results, errors = predict_files(clf, paths, args.invert, args.batch_size, args.top_k,
                                    with_probs=args.probabilities or args.output_format == "json")
    for error in errors:
        print(f"error: {error['error']}", file=sys.stderr)
    if args.invert is None:
        for r in results:
            if r["inverted"]:
                print(f"note: {r['path']} looks like a dark digit on a light background: inverted it "
                      f"(--no-invert to keep it as it is)", file=sys.stderr)
    if args.output_format == "json":
        print(json.dumps({"model": str(args.model), "predictions": results, "errors": errors}, indent=2))
    else:
        _print_rows("path", results, args, len(clf.class_names))
    if not results:
        if len(errors) == 1:
            return EXIT_USAGE  # its one line is already printed
        raise ValueError(f"none of the {len(errors)} images could be predicted")
    return 1 if errors else 0


def _run_set(args, clf) -> int:
    name, images, labels = _read_set(args)
    summary = predict_set(clf, images, labels, args.batch_size)
    probs = summary.pop("probs")
    per_image = args.top_k > 1 or args.probabilities or (labels is None and args.output_format == "text")
    if args.output_format == "json":
        if args.probabilities:
            summary["probabilities"] = np.round(probs.astype(np.float64), 6).tolist()
        print(json.dumps({"model": str(args.model), "source": name, **summary}))
        return 0
    accuracy = f"accuracy {100 * summary['accuracy']:.2f}% on " if "accuracy" in summary else ""
    line = (f"{name}: {accuracy}{summary['images']:,} images, {summary['images_per_s']:,.0f} images/s "
            f"(batch {args.batch_size}, {args.provider})")
    if per_image or args.output_format != "text":
        predictions = np.asarray(summary["predictions"], np.int64)
        rows = prediction_rows(clf, predictions, probs, args.top_k, args.probabilities)
        for i, row in enumerate(rows):
            row["index"] = i
            if labels is not None:
                known = 0 <= labels[i] < len(clf.class_names)
                row["true_label"] = clf.class_names[labels[i]] if known else str(labels[i])
        _print_rows("index", rows, args, len(clf.class_names))
        print(line, file=sys.stderr if args.output_format != "text" else sys.stdout)
    else:
        print(line)
    return 0


def run(args) -> int:
    sources = bool(args.images) + bool(args.idx) + bool(args.test_set)
    if sources != 1:
        raise ValueError("give image files, or --idx FILE, or --test-set (exactly one of them)")
    if args.labels and not args.idx:
        raise ValueError("--labels goes with --idx")
    clf = load_classifier(args.model, provider=args.provider, threads=args.threads)
    if args.top_k > len(clf.class_names):
        raise ValueError(f"--top-k {args.top_k} is more than the model's {len(clf.class_names)} classes")
    return _run_files(args, clf) if args.images else _run_set(args, clf)


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    return run_cli(parser.prog, lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
