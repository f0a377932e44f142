"""Predict digits with an exported model (ONNX Runtime, or TorchScript for ``.pt`` files).

    python -m ignite_lenet.predict --model exports/lenet5.onnx digit1.png digit2.jpg
    python -m ignite_lenet.predict --model exports/lenet5.onnx --test-set --data-dir ../shared/datasets
    python -m ignite_lenet.predict --model exports/lenet5.onnx --idx t10k-images-idx3-ubyte --labels t10k-labels-idx1-ubyte

Image files print ``path  predicted  probability`` per line; sets (``--idx``, ``--test-set``) print accuracy
(when labels are known) and images/s. Exit code 0; 1 when some image files could not be read (the others are
still predicted and the bad ones reported on stderr); 2 for unusable input (no model, not a model, nothing to
predict).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cli import ArgumentParser, run_cli
from .config import default_data_dir
from .data import load_mnist, read_idx
from .inference import image_files, load_classifier, load_image


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.predict",
        description="Classify handwritten digits with an exported LeNet-5: image files, an IDX file, or the MNIST "
        "test set.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...; any size, grayscale or RGB) or directories of them")
    parser.add_argument("--model", default="exports/lenet5.onnx", metavar="PATH",
                        help="exported model: .onnx (ONNX Runtime) or TorchScript .pt (default: %(default)s)")
    parser.add_argument("--idx", metavar="FILE", help="an IDX image file (N x H x W uint8, like MNIST's), .gz allowed")
    parser.add_argument("--labels", metavar="FILE", help="IDX labels for --idx, to report accuracy")
    parser.add_argument("--test-set", action="store_true", help="predict the 10,000 MNIST test images")
    parser.add_argument("--data-dir", default=default_data_dir(), metavar="DIR",
                        help="MNIST directory for --test-set (default: $IGNITE_LENET_DATA_DIR or ./data, now %(default)s)")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="with --test-set, never download MNIST")
    parser.add_argument("--batch-size", type=int, default=1024, metavar="N",
                        help="images per inference call for sets (default: %(default)s)")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"],
                        help="ONNX Runtime execution provider (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="ONNX Runtime intra-op threads (default: one per core)")
    invert = parser.add_mutually_exclusive_group()
    invert.add_argument("--invert", dest="invert", action="store_const", const=True, default=None,
                        help="image files are dark digits on a light background: invert them (default: detect "
                        "from the border pixels, and say so)")
    invert.add_argument("--no-invert", dest="invert", action="store_const", const=False,
                        help="never invert image files")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    return parser


def predict_files(clf, paths: list[Path], invert: bool | None, batch_size: int) -> tuple[list[dict], list[dict]]:
    """Predictions for the readable files and ``{"path", "error"}`` for the others."""
    loaded, errors = [], []
    for path in paths:
        try:
            image, inverted = load_image(path, clf.input_size, invert)
            loaded.append((path, image, inverted))
        except (OSError, ValueError) as e:
            errors.append({"path": str(path), "error": str(e)})
    results = []
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        labels, probs = clf.predict(np.stack([image for _, image, _ in chunk]))
        for (path, _, inverted), label, p in zip(chunk, labels, probs):
            results.append({"path": str(path), "label": clf.class_names[label], "probability": float(p[label]),
                            "inverted": inverted, "probabilities": [round(float(v), 6) for v in p]})
    return results, errors


def predict_set(clf, images: np.ndarray, labels: np.ndarray | None, batch_size: int) -> dict[str, Any]:
    """Predict a whole array in batches; accuracy when labels are given, and images/s."""
    clf.predict(images[:1])  # warm-up, not timed
    start = time.perf_counter()
    predictions = np.concatenate([clf.predict(images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)])
    elapsed = time.perf_counter() - start
    summary: dict[str, Any] = {"images": int(len(images)), "images_per_s": len(images) / elapsed,
                               "predictions": predictions.tolist()}
    if labels is not None:
        summary["accuracy"] = float((predictions == labels).mean())
    return summary


def _read_set(args) -> tuple[str, np.ndarray, np.ndarray | None]:
    if args.test_set:
        images, labels = load_mnist(args.data_dir, "test", args.download)
        return "MNIST test set", images.numpy(), labels.numpy()
    images = read_idx(args.idx)
    if images.ndim != 3:
        raise ValueError(f"{args.idx}: expected N x H x W images, got shape {images.shape}")
    labels = None
    if args.labels:
        labels = read_idx(args.labels).astype(np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"{args.labels}: {labels.shape[0] if labels.ndim else 0} labels for {len(images)} images")
    return str(args.idx), images, labels


def run(args) -> int:
    sources = bool(args.images) + bool(args.idx) + bool(args.test_set)
    if sources != 1:
        raise ValueError("give image files, or --idx FILE, or --test-set (exactly one of them)")
    if args.labels and not args.idx:
        raise ValueError("--labels goes with --idx")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    clf = load_classifier(args.model, provider=args.provider, threads=args.threads)

    if args.images:
        results, errors = predict_files(clf, image_files(args.images), args.invert, args.batch_size)
        for error in errors:
            print(f"error: {error['error']}", file=sys.stderr)
        for r in results:
            if r["inverted"] and args.invert is None:
                print(f"note: {r['path']} looks like a dark digit on a light background: inverted it "
                      f"(--no-invert to keep it as it is)", file=sys.stderr)
        if args.json:
            print(json.dumps({"model": str(args.model), "predictions": results, "errors": errors}, indent=2))
        else:
            width = max((len(r["path"]) for r in results), default=0)
            for r in results:
                print(f"{r['path']:<{width}}  {r['label']}  {r['probability']:.4f}")
        if not results:
            raise ValueError("no image could be read")
        return 1 if errors else 0

    name, images, labels = _read_set(args)
    summary = predict_set(clf, images, labels, args.batch_size)
    if args.json:
        print(json.dumps({"model": str(args.model), "source": name, **summary}))
        return 0
    if labels is None:
        for i, label in enumerate(summary["predictions"]):
            print(f"{i}  {label}")
    accuracy = f"accuracy {100 * summary['accuracy']:.2f}% on " if "accuracy" in summary else ""
    print(f"{name}: {accuracy}{summary['images']:,} images, {summary['images_per_s']:,.0f} images/s "
          f"(batch {args.batch_size}, {args.provider})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    return run_cli(parser.prog, lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
