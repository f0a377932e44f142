"""``OnnxClassifier``: an exported ``lenet5.onnx`` or ``lenet5.raw.onnx`` served by ONNX Runtime (no torch).

    from ignite_lenet.inference import OnnxClassifier
    clf = OnnxClassifier("exports/lenet5.onnx")          # or lenet5.raw.onnx (uint8 [batch, 28, 28] input)
    labels, probs = clf.predict(images)   # images: (N, 1, 32, 32) / (N, 32, 32) / (N, 28, 28), uint8 or float
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.spec import SOURCE_SIZE

MAX_THREADS = 1024  # ONNX Runtime intra-op threads at most: a fuse against a typo, far beyond any machine here

_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


class OnnxClassifier(Classifier):
    """An exported ``lenet5.onnx`` (float ``[batch, 1, 32, 32]``) or ``lenet5.raw.onnx`` (uint8 ``[batch, 28, 28]``)
    served by ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``"cpu"`` or ``"cuda"`` (needs an onnxruntime build with the CUDA execution provider).
        threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per core).

    Raises ``FileNotFoundError`` or ``ValueError`` (not loadable, or not an image classifier this package can feed).
    """

    @classmethod
    def from_file(cls, path: str | Path, provider: str = "cpu", threads: int | None = None) -> OnnxClassifier:
        """What ``inference.load_classifier`` calls for every kind of model file (``spec.MODEL_FILES``)."""
        return cls(path, provider=provider, threads=threads)

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
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be from 1 to {MAX_THREADS}, got {threads}")
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
        self.output_name = out.name  # "logits", or "probabilities" for an export with --output probabilities
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

    def run_model(self, x: np.ndarray) -> np.ndarray:
        """The graph's output (``output_name``, float32 ``(N, classes)``) for a batch already in the model's input
        layout and dtype (float32 ``(N, 1, H, W)``, or uint8 ``(N, 28, 28)`` when ``raw_input``): no preprocessing,
        no checks (the Open Inference Protocol path checks tensors itself)."""
        return self._run(x)
