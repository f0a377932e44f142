"""Export a trained LeNet-5 to ONNX, TorchScript and torch.export, every file verified against the eager model.

    from ignite_lenet.export import export
    report = export("runs/lenet5", "exports", ("onnx",))     # an ExportReport: files, accuracies, parity

``exporter`` does the work; ``formats`` is the registry of formats (a new one is one entry); ``onnx_graph``
holds the ONNX graph surgery (padded channels, the raw-input model, int8); ``verify`` the checks against the
eager model; ``metadata`` what travels inside every file; ``__main__`` the command line.
"""

from ignite_lenet.export.exporter import ExportReport, export

__all__ = ["ExportReport", "export"]
