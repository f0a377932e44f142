"""Export a trained LeNet-5 to ONNX, TorchScript and torch.export, every file verified against the eager model.

    from ignite_lenet.export import export
    report = export("runs/lenet5", "exports", ("onnx",))     # an ExportReport: files, accuracies, parity

``exporter`` does the work; ``formats`` is the registry of formats (a new one is one entry); ``onnx_graph``
holds the ONNX graph surgery (padded channels, the raw-input model, int8); ``verify`` the checks against the
eager model; ``metadata`` what travels inside every file; ``__main__`` the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ExportReport", "export"]

if TYPE_CHECKING:  # pragma: no cover
    from ignite_lenet.export.exporter import ExportReport, export


def __getattr__(name: str) -> Any:  # PEP 562: ``python -m ignite_lenet.export --help`` parses without torch
    if name in __all__:
        from ignite_lenet.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
