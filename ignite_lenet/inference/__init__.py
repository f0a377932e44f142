"""Inference on exported models, with no torch on the ONNX path.

    from ignite_lenet.inference import OnnxClassifier, load_classifier
    clf = load_classifier("exports/lenet5.onnx")     # .onnx: ONNX Runtime; .pt2 / TorchScript .pt load torch
    labels, probs = clf.predict(images)               # (N, 28, 28) or (N, 1, 32, 32), uint8 or float in [0, 1]

``classifier`` holds what every classifier shares (input checks, preprocessing, class names, softmax);
``onnx_runtime`` the ONNX Runtime one; ``torch_runtime`` the TorchScript and torch.export ones (they import
torch); ``loading`` picks one for a path; ``predict`` turns predictions into records for the CLI and the server.
"""

from ignite_lenet.inference.loading import load_classifier
from ignite_lenet.inference.onnx_runtime import OnnxClassifier

__all__ = ["OnnxClassifier", "load_classifier"]
