"""The names training, export, inference and serving share, written once and without torch.

What a LeNet-5 input is, what its classes are called, how pixels become an input, which files a run directory
and an export hold, and where they go by default. Other tools depend on these file names.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

# --- the model's input and output ------------------------------------------------------------------------------
SOURCE_SIZE = 28  # MNIST digits are 28x28
IMAGE_SIZE = 32  # LeNet-5 takes 32x32
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # (C, H, W) of one image
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
PREPROCESSING = {
    "resize": [IMAGE_SIZE, IMAGE_SIZE],
    "interpolation": "bilinear, antialiased (torchvision Resize((32, 32)) on PIL)",
    "scale": "pixel / 255 -> [0, 1], float32",
    "polarity": "white digit on black background",
    "layout": "NCHW [batch, 1, 32, 32]",
}

# --- a run directory (python -m ignite_lenet.train) ------------------------------------------------------------
BEST_MODEL = "best_model.pt"
TRAINING_CHECKPOINT = "training_checkpoint.pt"
HISTORY = "history.json"
CURVES = "curves.png"
METRICS = "metrics.json"
CONFIG = "config.json"
CONFUSION_MATRIX = "confusion_matrix.png"
TENSORBOARD_DIR = "tensorboard"  # --tensorboard's event files
RUN_FILES = (BEST_MODEL, TRAINING_CHECKPOINT, HISTORY, CURVES, METRICS, CONFIG, CONFUSION_MATRIX)  # all but tensorboard/
RUN_LOCK = ".lock"  # held (flock) by the process writing the run directory; names it for the ones refused
BEST_MODEL_KEYS = ("model", "config", "epoch", "val_loss", "val_accuracy")  # what a best_model.pt holds

# --- exports (python -m ignite_lenet.export) -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFile:
    """A kind of model file export writes: its name in the export directory, how a path is known to be one
    (``files.model_file_kind``), and what runs it: the classifier of ``inference.load_classifier`` and the torch
    module of ``checkpoints.load_model``, as ``"module:attribute"`` (imported when asked, so this stays torch-free).

    Its writer is its entry in ``export.formats.FORMATS``. ``exported=False``: not a ``--format`` choice but
    derived from ``lenet5.onnx`` by an option (``--raw-input``, ``--quantize``).
    """

    kind: str
    file_name: str
    suffix: str | None = None  # known by its suffix...
    zip_folder: str | None = None  # ...or by a folder inside its zip archive (TorchScript's code/)
    classifier: str | None = None
    module: str | None = None
    exported: bool = True

    def load(self, what: str) -> Any:
        """The object ``self.classifier`` or ``self.module`` names, imported."""
        module, _, name = getattr(self, what).partition(":")
        return getattr(importlib.import_module(module), name)


MODEL_FILES: dict[str, ModelFile] = {m.kind: m for m in (
    ModelFile("onnx", "lenet5.onnx", suffix=".onnx",
              classifier="ignite_lenet.inference.onnx_runtime:OnnxClassifier"),
    ModelFile("torchscript", "lenet5.torchscript.pt", zip_folder="code",
              classifier="ignite_lenet.inference.torch_runtime:TorchScriptClassifier",
              module="ignite_lenet.checkpoints:load_torchscript"),
    ModelFile("torch-export", "lenet5.pt2", suffix=".pt2",
              classifier="ignite_lenet.inference.torch_runtime:ExportedProgramClassifier",
              module="ignite_lenet.checkpoints:load_exported_program"),
    # a Triton model repository (with lenet5/config.pbtxt): lenet5.onnx inside
    ModelFile("triton", "lenet5/1/model.onnx"),
    # derived ONNX files, known (and served) as "onnx" by their suffix:
    ModelFile("raw", "lenet5.raw.onnx", exported=False),  # uint8 [batch, 28, 28] input, the preprocessing inside
    ModelFile("int8", "lenet5.int8.onnx", exported=False),  # static QDQ quantization of lenet5.onnx
)}
EXPORT_FILES = {kind: m.file_name for kind, m in MODEL_FILES.items()}
EXPORT_FORMATS = tuple(kind for kind, m in MODEL_FILES.items() if m.exported)  # --format's choices
# torch.onnx's dynamo exporter writes these opsets as asked; older ones need the deprecated TorchScript exporter
# (the onnx version converter fails on this graph below 16), newer ones are untested
MIN_OPSET, MAX_OPSET = 18, 25
MODEL_OUTPUTS = ("logits", "probabilities")  # what an exported model returns (--output)
ONNX_FILE_NAMES = (EXPORT_FILES["onnx"], EXPORT_FILES["raw"])  # what a directory given as a model is searched for
INPUT_NAME = "input"  # the float input of lenet5.onnx
RAW_INPUT_NAME = "image"  # the uint8 input of lenet5.raw.onnx
METADATA_FILE = "metadata.json"  # the extra file holding the metadata in TorchScript and torch.export archives
TRITON_CONFIG = "config.pbtxt"  # a Triton model directory: NAME/config.pbtxt and NAME/VERSION/model.onnx
TRITON_MODEL_FILE = "model.onnx"

# --- default places --------------------------------------------------------------------------------------------
DATA_DIR_ENV = "IGNITE_LENET_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEFAULT_RUN_DIR = "runs/lenet5"
DEFAULT_EXPORT_DIR = "exports"
DEFAULT_MODEL = f"{DEFAULT_EXPORT_DIR}/{EXPORT_FILES['onnx']}"


def default_data_dir() -> str:
    """``$IGNITE_LENET_DATA_DIR`` when set, else ``./data``."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
