"""Predictors over exported models: ONNX Runtime (``OnnxClassifier``) and TorchScript (``TorchScriptClassifier``).

    from ignite_lenet.inference import OnnxClassifier
    clf = OnnxClassifier("exports/lenet5.onnx")
    labels, probs = clf.predict(images)   # images: (N, 1, 32, 32) / (N, 32, 32) / (N, 28, 28), uint8 or float

Preprocessing follows the metadata stored in the exported file (input size, scaling), so a model and its
input pipeline cannot drift apart; 28x28 MNIST-style arrays are resized exactly as in training.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .data import preprocess
from .model import CLASS_NAMES

ACCEPTED_SHAPES = "(N, 1, 32, 32), (N, 32, 32), (N, 28, 28) or (N, 1, 28, 28)"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class _Classifier:
    """Shared preprocessing and post-processing; subclasses implement ``_run(x) -> outputs``."""

    metadata: dict[str, str]

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        self.output_kind = metadata.get("output", "logits")
        self.class_names = tuple(json.loads(metadata["class_names"])) if "class_names" in metadata else CLASS_NAMES
        shape = json.loads(metadata.get("input_shape", '["batch", 1, 32, 32]'))
        self.input_size = (int(shape[-2]), int(shape[-1]))

    def prepare(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Model input ``(N, 1, H, W)`` float32 in [0, 1]; raises ``ValueError`` for other shapes or dtypes."""
        array = np.asarray(images)
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {array.dtype}")
        shape = array.shape
        spatial = shape[-2:] if array.ndim in (3, 4) else None
        if (array.ndim == 4 and shape[1] != 1) or spatial not in (self.input_size, (28, 28)):
            raise ValueError(f"images must have shape {ACCEPTED_SHAPES}, got {shape}")
        if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(f"float images must be scaled to [0, 1] (got values in [{array.min():.3g}, "
                             f"{array.max():.3g}]); pass uint8 arrays for 0-255 pixels")
        return preprocess(torch.from_numpy(np.ascontiguousarray(array)), self.input_size).numpy()

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities ``(N, 10)``."""
        outputs = self._run(self.prepare(images))
        return outputs if self.output_kind == "probabilities" else softmax(outputs)

    def predict(self, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (N,) int64, probabilities (N, 10) float32)`` for a batch of images."""
        probs = self.predict_proba(images)
        return probs.argmax(axis=1), probs


class OnnxClassifier(_Classifier):
    """An exported ``lenet5.onnx`` served by ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``"cpu"`` or ``"cuda"`` (needs an onnxruntime build with the CUDA execution provider).
        threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per core).
    """

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
        if provider not in providers:
            raise ValueError(f"provider must be cpu or cuda, got {provider!r}")
        if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                "--provider cuda: this onnxruntime has no CUDA execution provider "
                f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
            )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers[provider])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            first = " ".join(str(e).split())[:200]
            raise ValueError(f"{path}: not a loadable ONNX model ({first})") from None
        self.input_name = self.session.get_inputs()[0].name
        super().__init__(dict(self.session.get_modelmeta().custom_metadata_map))
        self.path = path

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TorchScriptClassifier(_Classifier):
    """An exported ``lenet5.torchscript.pt`` run by ``torch.jit.load`` (same interface as ``OnnxClassifier``)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        extra = {"metadata.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit's deprecation notice
            try:
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
            except Exception as e:
                raise ValueError(f"{path}: not a loadable TorchScript model ({type(e).__name__})") from None
        self.device = device
        super().__init__(json.loads(extra["metadata.json"] or "{}"))
        self.path = path

    def _run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).cpu().numpy()


def load_classifier(path: str | Path, provider: str = "cpu", threads: int | None = None) -> _Classifier:
    """``OnnxClassifier`` for ``.onnx`` files, ``TorchScriptClassifier`` for ``.pt`` TorchScript files."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxClassifier(path, provider=provider, threads=threads)
    if suffix == ".pt":
        return TorchScriptClassifier(path, device="cuda" if provider == "cuda" else "cpu")
    raise ValueError(f"{path}: expected an .onnx or TorchScript .pt model")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def load_image(path: str | Path, size: tuple[int, int] = (32, 32), invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """One image file as model input ``(1, H, W)`` float32 in [0, 1] (white digit on black), and whether it was
    inverted.

    Any size, grayscale or RGB (converted to grayscale), resized bilinearly (antialiased) like training.
    ``invert=None`` detects a dark digit on a light background from the border pixels and inverts it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__})") from None
    array = np.array(gray, dtype=np.uint8)  # a writable copy
    if invert is None:
        border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
        invert = bool(border.mean() > 127)
    if invert:
        array = 255 - array
    return preprocess(torch.from_numpy(array)[None], size)[0].numpy(), invert  # training's resize and scaling


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
