"""Classify MNIST's test IDX file with lenet5.raw.onnx: numpy and onnxruntime only, no ignite_lenet, no torch.

    python examples/classify_idx.py exports/lenet5.raw.onnx data/MNIST/raw/t10k-images-idx3-ubyte data/MNIST/raw/t10k-labels-idx1-ubyte
"""

import gzip
import sys

import numpy as np
import onnxruntime as ort


def read_idx(path: str) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's images or labels, plain or .gz) as a numpy array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    ndim = data[3]  # magic: 0, 0, 0x08 (unsigned byte), number of dimensions; then the big-endian sizes
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


model, images_file, labels_file = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
images = read_idx(images_file)  # (10000, 28, 28) uint8, exactly as stored: the model scales and resizes
logits = session.run(None, {"image": images})[0]  # (10000, 10)
predicted = logits.argmax(axis=1)
accuracy = (predicted == read_idx(labels_file)).mean()
print(f"{len(images)} images, accuracy {100 * accuracy:.2f}%, first ten predicted {predicted[:10].tolist()}")
