"""Predictors over exported models: ONNX Runtime (``OnnxClassifier``), TorchScript and torch.export.

    from ignite_lenet.inference import OnnxClassifier
    clf = OnnxClassifier("exports/lenet5.onnx")          # or lenet5.raw.onnx (uint8 [batch, 28, 28] input)
    labels, probs = clf.predict(images)   # images: (N, 1, 32, 32) / (N, 32, 32) / (N, 28, 28), uint8 or float

The ONNX path imports numpy, Pillow (for image files) and onnxruntime only: no torch. ``TorchScriptClassifier``
and ``ExportedProgramClassifier`` (in ``torch_inference``, imported on first use) load torch when asked for.
28x28 MNIST-style arrays are resized exactly as in training (``preprocessing``); the model's own input
signature says what it takes, its metadata the class names and output kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import zip_has_folder
from .preprocessing import IMAGE_SUFFIXES, SOURCE_SIZE, load_digit, load_image, to_model_input  # noqa: F401

DEFAULT_CLASS_NAMES = tuple(str(digit) for digit in range(10))
ONNX_FILE_NAMES = ("lenet5.onnx", "lenet5.raw.onnx")  # what a directory given as --model is searched for
_TORCH_CLASSIFIERS = ("TorchScriptClassifier", "ExportedProgramClassifier")


def __getattr__(name: str) -> Any:  # PEP 562: the torch classifiers without importing torch up front
    if name in _TORCH_CLASSIFIERS:
        from . import torch_inference

        return getattr(torch_inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_array(images: Any) -> np.ndarray:
    if hasattr(images, "detach") and hasattr(images, "cpu"):  # a torch tensor, without importing torch
        images = images.detach().cpu().numpy()
    return np.asarray(images)


class _Classifier:
    """Shared preprocessing and post-processing; subclasses implement ``_run(x) -> outputs``.

    ``input_size`` is the model's (H, W); ``raw_input`` models take uint8 ``(N, 28, 28)`` and do the resize and
    scaling inside the graph.
    """

    metadata: dict[str, str]
    raw_input: bool = False

    def __init__(self, metadata: dict[str, str], input_size: tuple[int, int] | None = None, source: str = "") -> None:
        self.metadata = metadata
        self.source = source
        self.output_kind = metadata.get("output", "logits")
        if self.output_kind not in ("logits", "probabilities"):
            raise ValueError(f"{source}: metadata 'output' is {self.output_kind!r}, not logits or probabilities")
        self.class_names = DEFAULT_CLASS_NAMES
        if "class_names" in metadata:
            try:
                names = json.loads(metadata["class_names"])
            except json.JSONDecodeError:
                names = None
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{source}: metadata 'class_names' is not a JSON list of strings")
            self.class_names = tuple(names)
        if input_size is None:
            try:
                shape = json.loads(metadata.get("input_shape", '["batch", 1, 32, 32]'))
                input_size = (int(shape[-2]), int(shape[-1]))
            except (json.JSONDecodeError, TypeError, ValueError, IndexError, KeyError):
                raise ValueError(f"{source}: metadata 'input_shape' is not a shape like "
                                 f"[\"batch\", 1, 32, 32]") from None
        self.input_size = input_size

    def accepted_shapes(self) -> str:
        """The image batch shapes ``predict`` takes, in words."""
        if self.raw_input:
            return "(N, 28, 28) or (N, 1, 28, 28) (a raw-input model: MNIST's 28x28 images)"
        h, w = self.input_size
        return f"(N, 1, {h}, {w}), (N, {h}, {w}), (N, 28, 28) or (N, 1, 28, 28)"

    def prepare(self, images: Any) -> np.ndarray:
        """The model's input batch; raises ``ValueError`` for other shapes, dtypes or non-finite values."""
        array = _as_array(images)
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {array.dtype}")
        shape = array.shape
        spatial = tuple(shape[-2:]) if array.ndim in (3, 4) else None
        if (array.ndim == 4 and shape[1] != 1) or spatial not in (self.input_size, (SOURCE_SIZE, SOURCE_SIZE)):
            raise ValueError(f"images must have shape {self.accepted_shapes()}, got {shape}")
        if array.dtype != np.uint8 and array.size:
            if not np.isfinite(array).all():
                raise ValueError("images contain non-finite values (NaN or infinity)")
            if array.min() < 0 or array.max() > 1:
                raise ValueError(f"float images must be scaled to [0, 1] (got values in [{array.min():.3g}, "
                                 f"{array.max():.3g}]); pass uint8 arrays for 0-255 pixels")
        if array.ndim == 4:
            array = array[:, 0]
        if self.raw_input:
            if array.dtype != np.uint8:
                array = np.rint(array * 255).astype(np.uint8)
            return np.ascontiguousarray(array)
        return np.ascontiguousarray(to_model_input(array, self.input_size))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities ``(N, classes)`` float32; an empty batch gives ``(0, classes)``."""
        x = self.prepare(images)
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        outputs = np.asarray(self._run(x))
        if outputs.ndim != 2 or outputs.shape != (len(x), len(self.class_names)):
            raise ValueError(f"{self.source}: the model returned shape {outputs.shape} for {len(x)} images; "
                             f"expected ({len(x)}, {len(self.class_names)}) scores for its classes")
        if not np.isfinite(outputs).all():
            raise ValueError(f"{self.source}: the model returned non-finite scores (NaN or infinity)")
        probs = outputs if self.output_kind == "probabilities" else softmax(outputs)
        return probs.astype(np.float32, copy=False)

    def predict(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (N,) int64, probabilities (N, classes) float32)`` for a batch of images."""
        probs = self.predict_proba(images)
        return probs.argmax(axis=1).astype(np.int64), probs


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


class OnnxClassifier(_Classifier):
    """An exported ``lenet5.onnx`` (float ``[batch, 1, 32, 32]``) or ``lenet5.raw.onnx`` (uint8 ``[batch, 28, 28]``)
    served by ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``"cpu"`` or ``"cuda"`` (needs an onnxruntime build with the CUDA execution provider).
        threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per core).

    Raises ``FileNotFoundError`` or ``ValueError`` (not loadable, or not an image classifier this package can feed).
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
        if threads is not None and not 1 <= threads <= 1024:
            raise ValueError(f"threads must be from 1 to 1024, got {threads}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: a refused model is reported below in one line
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers[provider])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            first = " ".join(str(e).split())[:200]
            raise ValueError(f"{path}: not a loadable ONNX model ({first})") from None
        self.path = path
        input_size = self._check_signature(path)
        super().__init__(dict(self.session.get_modelmeta().custom_metadata_map), input_size, str(path))
        classes = self.session.get_outputs()[0].shape[1]
        if isinstance(classes, int) and classes != len(self.class_names):
            raise ValueError(f"{path}: the model has {classes} outputs but {len(self.class_names)} class names "
                             f"({'from its metadata' if 'class_names' in self.metadata else 'the digits 0-9'})")

    def _check_signature(self, path: Path) -> tuple[int, int]:
        """The input (H, W), after checking the model takes one image batch and returns one score matrix."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ValueError(f"{path}: takes {len(inputs)} inputs and returns {len(outputs)} outputs; a LeNet-5 "
                             f"export takes one image batch and returns one score matrix")
        (inp,), out = inputs, outputs[0]
        if len(out.shape) != 2 or out.type != "tensor(float)":
            raise ValueError(f"{path}: its output {out.name!r} is {out.type} {out.shape}, not [batch, classes] "
                             f"float scores")
        self.input_name, dtype, shape = inp.name, _ONNX_TYPES.get(inp.type), list(inp.shape)
        if dtype is np.uint8 and len(shape) == 3 and shape[1:] == [SOURCE_SIZE, SOURCE_SIZE]:
            self.raw_input = True
            return (SOURCE_SIZE, SOURCE_SIZE)
        if dtype is not np.float32 or len(shape) != 4 or shape[1] != 1 or not all(
                isinstance(d, int) and 0 < d <= 1024 for d in shape[2:]):
            raise ValueError(f"{path}: its input {inp.name!r} is {inp.type} {shape}, not an image batch "
                             f"(float [batch, 1, H, W], or uint8 [batch, 28, 28] for a raw-input model)")
        return (shape[2], shape[3])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def _export_hint(path: Path) -> str:
    return (f"export it first: python -m ignite_lenet.export --checkpoint {path} --output-dir exports "
            f"(then --model exports/lenet5.onnx)")


def load_classifier(path: str | Path, provider: str = "cpu", threads: int | None = None) -> _Classifier:
    """The classifier for an exported file: ``.onnx`` (ONNX Runtime), ``.pt2`` (torch.export) or TorchScript
    ``.pt``; a directory holding ``lenet5.onnx`` is taken as that file.

    A training checkpoint or run directory is refused with the command that exports it.
    """
    path = Path(path)
    if path.is_dir():
        for name in ONNX_FILE_NAMES:
            if (path / name).is_file():
                return OnnxClassifier(path / name, provider=provider, threads=threads)
        if (path / "best_model.pt").is_file():
            raise ValueError(f"{path}: a training run directory, not an exported model; {_export_hint(path)}")
        raise FileNotFoundError(f"{path}: a directory without {' or '.join(ONNX_FILE_NAMES)}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxClassifier(path, provider=provider, threads=threads)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    device = "cuda" if provider == "cuda" else "cpu"
    if suffix == ".pt2":
        from .torch_inference import ExportedProgramClassifier

        return ExportedProgramClassifier(path, device=device)
    if suffix == ".pt":
        kind = zip_has_folder(path, "code")
        if kind is False:  # a torch.save archive without TorchScript code: a checkpoint
            raise ValueError(f"{path}: a training checkpoint, not an exported model; {_export_hint(path)}")
        from .torch_inference import TorchScriptClassifier

        return TorchScriptClassifier(path, device=device)
    raise ValueError(f"{path}: expected an exported model: .onnx, .pt2 (torch.export) or TorchScript .pt")


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
