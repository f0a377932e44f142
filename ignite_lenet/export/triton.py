"""A Triton Inference Server model repository: ``DIR/lenet5/config.pbtxt`` and ``DIR/lenet5/1/model.onnx``.

    python -m ignite_lenet.export --format triton --output-dir model_repository
    tritonserver --model-repository=$PWD/model_repository          # or: python -m ignite_lenet.serve --model ...

``model.onnx`` is ``lenet5.onnx`` (written and verified the same way); ``config.pbtxt`` is generated from the ONNX
graph itself (its input and output names, types and dims; ``max_batch_size``; dynamic batching on), written as
text here (deterministic, no dependency on tritonclient) and checked against the graph. The whole model directory
is written beside its place, verified, then renamed into place (``replace_repository``): a failed check leaves
nothing behind. The tests parse the config with Triton's own schema (``tritonclient.grpc.model_config_pb2``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ignite_lenet.export.verify import ExportMismatch
from ignite_lenet.files import WriteError, make_dirs, write_synced
from ignite_lenet.spec import TRITON_CONFIG

T = TypeVar("T")
MAX_BATCH_SIZE = 1024  # the largest batch Triton's dynamic batcher forms (and a client may send)
# ONNX TensorProto element types -> Triton's DataType names (model_config.proto)
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                13: "TYPE_UINT64"}


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as Triton's config declares it: the batch dimension left out of ``dims``."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def graph_tensors(proto: Any) -> tuple[list[Tensor], list[Tensor]]:
    """The inputs and outputs of an ONNX model whose first dimension is the (dynamic) batch."""

    def tensors(values: Any) -> list[Tensor]:
        found = []
        for value in values:
            kind = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            if not dims or dims[0] != -1 or any(d <= 0 for d in dims[1:]):
                raise ExportMismatch(f"triton: {value.name!r} has shape {dims}: expected a dynamic batch first and "
                                     f"fixed sizes after it")
            if kind.elem_type not in TRITON_TYPES:
                raise ExportMismatch(f"triton: {value.name!r} has ONNX element type {kind.elem_type}, which Triton's "
                                     f"config cannot declare here")
            found.append(Tensor(value.name, TRITON_TYPES[kind.elem_type], tuple(dims[1:])))
        return found

    initializers = {t.name for t in proto.graph.initializer}
    return tensors(v for v in proto.graph.input if v.name not in initializers), tensors(proto.graph.output)


def config_text(name: str, inputs: list[Tensor], outputs: list[Tensor], max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) for an ONNX model."""

    def block(kind: str, tensors: list[Tensor]) -> list[str]:
        entries = [f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ '
                   f'{", ".join(map(str, t.dims))} ]\n  }}' for t in tensors]
        return [f"{kind} [", ",\n".join(entries), "]"]

    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}",
             *block("input", inputs), *block("output", outputs),
             "dynamic_batching { }",  # Triton gathers concurrent requests into one model call (as our Batcher)
             'version_policy: { latest: { num_versions: 1 } }']
    return "\n".join(lines) + "\n"


def model_config(model_file: Path) -> str:
    """``config.pbtxt`` for ``DIR/NAME/VERSION/model.onnx``, from its graph."""
    import onnx

    inputs, outputs = graph_tensors(onnx.load(str(model_file), load_external_data=False))
    return config_text(model_file.parent.parent.name, inputs, outputs)


def check_repository_config(model_file: Path) -> None:
    """``ExportMismatch`` unless ``config.pbtxt`` beside the model's version directory agrees with the graph."""
    config = model_file.parent.parent / TRITON_CONFIG
    if not config.is_file() or config.read_text(encoding="utf-8") != model_config(model_file):
        raise ExportMismatch(f"triton: {config} is missing or does not agree with the graph of {model_file}")


def replace_repository(path: Path, write: Callable[[Path], None], check: Callable[[Path], T] | None = None) -> T | None:
    """``files.replace_checked`` for a whole model directory: ``path`` is ``DIR/NAME/VERSION/model.onnx``;
    ``DIR/NAME/`` is written in a hidden temporary directory of ``DIR``, checked, then renamed into place (the
    previous one, if any, removed only then). A failed write or check leaves the previous directory (or none)
    and nothing else behind."""
    model_dir = path.parent.parent
    make_dirs(model_dir.parent)
    try:
        staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.", suffix=".tmp"))
    except OSError as e:
        raise WriteError.of(e, model_dir) from None
    try:
        tmp = staging / model_dir.name / path.parent.name / path.name
        try:
            tmp.parent.mkdir(parents=True)
            write(tmp)
        except OSError as e:
            raise WriteError.of(e, path) from None
        result = check(tmp) if check is not None else None
        previous = staging / "previous"
        try:
            if model_dir.exists():
                os.replace(model_dir, previous)
            try:
                os.replace(staging / model_dir.name, model_dir)
            except OSError:
                if previous.exists():
                    os.replace(previous, model_dir)
                raise
        except OSError as e:
            raise WriteError.of(e, model_dir) from None
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_config(model_path: Path) -> None:
    """``NAME/config.pbtxt`` beside ``NAME/1/model.onnx`` (``model_path``), from that graph."""
    config = model_path.parent.parent / TRITON_CONFIG
    write_synced(config, lambda f: f.write(model_config(model_path).encode()))
