"""The export formats: how each file is written from the eager model and reloaded the way a user would.

``FORMATS`` is the registry ``python -m ignite_lenet.export --format`` chooses from; ``exporter.export`` writes,
verifies and renames every entry the same way. The ONNX graph surgery (padded channels, the raw-input model,
int8) lives in ``onnx_graph``.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ignite_lenet.checkpoints import load_exported_program, load_torchscript
from ignite_lenet.export import triton
from ignite_lenet.export.onnx_graph import pad_conv_channels
from ignite_lenet.export.verify import ExportMismatch
from ignite_lenet.files import replace_checked, write_synced
from ignite_lenet.model import probabilities
from ignite_lenet.spec import EXPORT_FILES, INPUT_NAME, INPUT_SHAPE, METADATA_FILE, RAW_INPUT_NAME

Runner = Callable[[np.ndarray], np.ndarray]


class WithSoftmax(nn.Module):
    """``model`` followed by a softmax, for exports whose output is ``probabilities``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.model(x))


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1)


def write_onnx(model: nn.Module, path: Path, metadata: dict[str, str], opset: int | None = None) -> None:
    """Self-contained ONNX (weights inside, not external data), dynamic ``batch``, conv channels padded for
    ONNX Runtime's blocked layout, metadata, full checker pass."""
    import onnx

    example = torch.zeros(2, *INPUT_SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=[metadata["output"]], opset_version=opset,
            dynamic_shapes={"x": {0: _batch_dim()}},
        )
    proto = program.model_proto
    if pad_conv_channels(proto):
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ExportMismatch(f"onnx: asked for opset {opset}, the exporter wrote opset {written}")
    onnx.checker.check_model(proto, full_check=True)
    write_synced(path, lambda f: onnx.save_model(proto, f))  # a file object: weights inside, no external data


def write_torchscript(model: nn.Module, path: Path, metadata: dict[str, str]) -> list[str]:
    """``torch.jit.script`` with the metadata as the extra file ``metadata.json``; returns torch's deprecation notes.

    TorchScript is deprecated in torch 2.14: ``torch.jit`` emits FutureWarnings, which are collected here (not
    silenced) and reported in one line. ``lenet5.pt2`` (torch.export) is the format PyTorch recommends now.
    """
    buffer = io.BytesIO()  # torch's file writer would report a full disk as a RuntimeError: write it with Python's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category=FutureWarning)
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    write_synced(path, lambda f: f.write(buffer.getbuffer()))
    return sorted({str(w.message) for w in caught if issubclass(w.category, FutureWarning)})


def _deprecation_note(warnings_seen: list[str]) -> list[str]:
    """``write_torchscript``'s FutureWarnings as the one note the export reports (none when torch warned nothing)."""
    if not warnings_seen:
        return []
    return [f"torch {torch.__version__} deprecates TorchScript ({warnings_seen[0]}); prefer "
            f"{EXPORT_FILES['torch-export']} (torch.export) or {EXPORT_FILES['onnx']}"]


def write_torch_export(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """``torch.export.export`` with a dynamic ``batch`` dimension, saved with ``torch.export.save``."""
    program = torch.export.export(model, (torch.zeros(2, *INPUT_SHAPE),), dynamic_shapes={"x": {0: _batch_dim()}})
    buffer = io.BytesIO()  # as write_torchscript: a full disk is then Python's OSError, not torch's RuntimeError
    torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(metadata)})
    write_synced(path, lambda f: f.write(buffer.getbuffer()))


def _onnx_runner(input_name: str) -> Callable[[Path], Runner]:
    def load(path: Path) -> Runner:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {input_name: x})[0]

    return load


def write_triton(model: nn.Module, path: Path, metadata: dict[str, str], opset: int | None) -> None:
    """``lenet5.onnx`` as ``NAME/1/model.onnx`` (``path``, in the repository's staging directory), and
    ``NAME/config.pbtxt`` from its graph."""
    write_onnx(model, path, metadata, opset)
    triton.write_config(path)


def _triton_runner(path: Path) -> Runner:
    """The model as Triton loads it: ``config.pbtxt`` checked against the graph, then ONNX Runtime."""
    triton.check_repository_config(path)
    return _onnx_runner(INPUT_NAME)(path)


def _torch_runner(load_module: Callable[[Path], nn.Module]) -> Callable[[Path], Runner]:
    def load(path: Path) -> Runner:
        module = load_module(path)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return run

    return load


@dataclass(frozen=True)
class Format:
    """One export format: how it is written from the eager model (returning notes to report, in full sentences),
    and how a user reloads it (``load(path)`` gives ``run(images) -> outputs``, numpy in and out); its file name
    and what serves it are its ``spec.MODEL_FILES`` entry."""

    name: str
    write: Callable[[nn.Module, Path, dict[str, str], int | None], list[str]]
    load: Callable[[Path], Runner]
    replace: Callable[..., Any] = replace_checked  # how a file is written, checked and renamed into place

    @property
    def file_name(self) -> str:
        return EXPORT_FILES[self.name]


# What ``--format`` chooses from: a new format is one entry here (its writer and its reloading for verification) and
# one in ``spec.MODEL_FILES`` (its file name and, torch-free, how it is recognised and what runs it).
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", lambda model, path, metadata, opset: write_onnx(model, path, metadata, opset) or [],
           _onnx_runner(INPUT_NAME)),
    Format("torchscript",
           lambda model, path, metadata, opset: _deprecation_note(write_torchscript(model, path, metadata)),
           _torch_runner(load_torchscript)),
    Format("torch-export", lambda model, path, metadata, opset: write_torch_export(model, path, metadata) or [],
           _torch_runner(load_exported_program)),
    Format("triton", lambda model, path, metadata, opset: write_triton(model, path, metadata, opset) or [],
           _triton_runner, triton.replace_repository),  # lenet5/{config.pbtxt,1/model.onnx}
)}
# Files derived from lenet5.onnx (``--raw-input``, ``--quantize int8``): written by ``onnx_graph``, reloaded here.
DERIVED_LOADERS: dict[str, Callable[[Path], Runner]] = {"raw": _onnx_runner(RAW_INPUT_NAME),
                                                        "int8": _onnx_runner(INPUT_NAME)}


def load_runner(fmt: str, path: Path) -> Runner:
    """Reload an exported file the way a user would and return ``run(images) -> outputs`` (numpy in and out)."""
    if fmt in FORMATS:
        return FORMATS[fmt].load(path)
    if fmt in DERIVED_LOADERS:
        return DERIVED_LOADERS[fmt](path)
    raise ValueError(f"unknown format {fmt!r}")
