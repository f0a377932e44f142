"""The names training, export, inference and serving share, written once and without torch.

What a LeNet-5 input is, what its classes are called, how pixels become an input, which files a run directory
and an export hold, and where they go by default. Other tools depend on these file names.
"""

from __future__ import annotations

import os

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
EXPORT_FILES = {
    "onnx": "lenet5.onnx",
    "torchscript": "lenet5.torchscript.pt",
    "torch-export": "lenet5.pt2",
    "raw": "lenet5.raw.onnx",  # uint8 [batch, 28, 28] input, the preprocessing inside the graph
    "int8": "lenet5.int8.onnx",  # static QDQ quantization of lenet5.onnx
    "triton": "lenet5/1/model.onnx",  # a Triton model repository (with lenet5/config.pbtxt): lenet5.onnx inside
}
# --format's choices; export.formats.FORMATS writes each
EXPORT_FORMATS = ("onnx", "torchscript", "torch-export", "triton")
ONNX_OPSETS = (18, 25)  # the ONNX opsets export takes, lowest and highest
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
