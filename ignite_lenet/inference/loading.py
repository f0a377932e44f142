"""The classifier for a path: ``.onnx`` (ONNX Runtime), ``.pt2`` (torch.export) or TorchScript ``.pt``, a
directory holding ``lenet5.onnx``; training files are refused with the command that exports them.
"""

from __future__ import annotations

from pathlib import Path

from ignite_lenet.files import model_file_kind
from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.inference.onnx_runtime import OnnxClassifier
from ignite_lenet.mnist.digits import IMAGE_SUFFIXES
from ignite_lenet.spec import (BEST_MODEL, DEFAULT_EXPORT_DIR, DEFAULT_MODEL, MODEL_FILES, ONNX_FILE_NAMES,
                               TRITON_CONFIG, TRITON_MODEL_FILE)


def _export_hint(path: Path) -> str:
    return (f"export it first: python -m ignite_lenet.export --checkpoint {path} --output-dir {DEFAULT_EXPORT_DIR} "
            f"(then --model {DEFAULT_MODEL})")


def load_classifier(path: str | Path, provider: str = "cpu", threads: int | None = None) -> Classifier:
    """The classifier for an exported file: ``.onnx`` (ONNX Runtime), ``.pt2`` (torch.export) or TorchScript
    ``.pt``; a directory holding ``lenet5.onnx`` is taken as that file.

    A training checkpoint or run directory is refused with the command that exports it.
    """
    path = Path(path)
    if path.is_dir():
        for name in ONNX_FILE_NAMES:
            if (path / name).is_file():
                return OnnxClassifier(path / name, provider=provider, threads=threads)
        repository_model = triton_model_file(path)
        if repository_model is not None:
            return OnnxClassifier(repository_model, provider=provider, threads=threads)
        if (path / BEST_MODEL).is_file():
            raise ValueError(f"{path}: a training run directory, not an exported model; {_export_hint(path)}")
        raise FileNotFoundError(f"{path}: a directory without {' or '.join(ONNX_FILE_NAMES)}")
    kind = model_file_kind(path)
    if kind is None and path.suffix.lower() == ".pt":  # no zip archive: TorchScript's loader says why in one line
        kind = "torchscript"
    if kind == "checkpoint":
        raise ValueError(f"{path}: a training checkpoint, not an exported model; {_export_hint(path)}")
    entry = MODEL_FILES.get(kind or "")
    if entry is None or entry.classifier is None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        raise ValueError(f"{path}: expected an exported model: .onnx, .pt2 (torch.export) or TorchScript .pt")
    return entry.load("classifier").from_file(path, provider, threads)  # torch_runtime imports torch


def triton_model_file(path: Path) -> Path | None:
    """The ONNX file of a Triton model repository (``python -m ignite_lenet.export --format triton``):
    ``path/NAME/VERSION/model.onnx`` beside ``path/NAME/config.pbtxt``, or ``path`` the model directory itself; the
    highest version. ``None`` when ``path`` is no such repository; ``ValueError`` when it holds several models."""
    models = [path] if (path / TRITON_CONFIG).is_file() else sorted(
        d for d in path.iterdir() if d.is_dir() and (d / TRITON_CONFIG).is_file())
    if not models:
        return None
    if len(models) > 1:
        raise ValueError(f"{path}: a Triton model repository of {len(models)} models ("
                         f"{', '.join(d.name for d in models[:5])}); the service serves one: give its directory")
    versions = sorted((d for d in models[0].iterdir() if d.name.isdigit() and (d / TRITON_MODEL_FILE).is_file()),
                      key=lambda d: int(d.name))
    if not versions:
        raise FileNotFoundError(f"{models[0]}: a Triton model directory without VERSION/{TRITON_MODEL_FILE}")
    return versions[-1] / TRITON_MODEL_FILE


def image_files(paths: list[str | Path]) -> list[Path]:
    """Expand directories into their image files (sorted); files are kept as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this directory")
            files.extend(found)
        else:
            files.append(p)
    return files
