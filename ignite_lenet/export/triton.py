"""A Triton Inference Server model repository: ``DIR/lenet5/config.pbtxt`` and ``DIR/lenet5/1/model.onnx``.

    python -m ignite_lenet.export --format triton --output-dir model_repository
    tritonserver --model-repository=$PWD/model_repository          # or: python -m ignite_lenet.serve --model ...

``model.onnx`` is ``lenet5.onnx`` (written and verified the same way); ``config.pbtxt`` is generated from the ONNX
graph itself (its input and output names, types and dims; ``max_batch_size``; dynamic batching on), written as
text here (deterministic, no dependency on tritonclient) and checked against the graph before the model file is
renamed into place. The tests parse it with Triton's own schema (``tritonclient.grpc.model_config_pb2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite_lenet.export.verify import ExportMismatch
from ignite_lenet.files import replace_checked
from ignite_lenet.spec import TRITON_CONFIG

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
    """``config.pbtxt`` for ``DIR/NAME/VERSION/model.onnx`` (perhaps under a temporary name), from its graph."""
    import onnx

    inputs, outputs = graph_tensors(onnx.load(str(model_file), load_external_data=False))
    return config_text(model_file.parent.parent.name, inputs, outputs)


def write_repository_config(model_file: Path) -> Path:
    """Write ``config.pbtxt`` for ``model_file`` (``DIR/NAME/VERSION/model.onnx``) into ``DIR/NAME/``,
    atomically, read back; returns its path."""
    config = model_file.parent.parent / TRITON_CONFIG
    text = model_config(model_file)

    def check(tmp: Path) -> None:
        if tmp.read_text(encoding="utf-8") != text:
            raise ExportMismatch(f"triton: {config} does not read back as written")

    replace_checked(config, lambda tmp: tmp.write_text(text, encoding="utf-8"), check)
    return config


def check_repository_config(model_file: Path) -> None:
    """``ExportMismatch`` unless ``config.pbtxt`` beside the model's version directory agrees with the graph."""
    config = model_file.parent.parent / TRITON_CONFIG
    if not config.is_file() or config.read_text(encoding="utf-8") != model_config(model_file):
        raise ExportMismatch(f"triton: {config} is missing or does not agree with the graph of {model_file}")


# --- the format's entry in export.formats.FORMATS: lenet5.onnx, written as NAME/1/model.onnx, plus the config -------

def write(model: Any, path: Path, metadata: dict[str, str], opset: int | None) -> list[str]:
    """``lenet5.onnx`` at ``path`` (``DIR/lenet5/1/model.onnx``) and ``DIR/lenet5/config.pbtxt`` from its graph."""
    from ignite_lenet.export.formats import write_onnx  # formats imports this module for its registry entry

    write_onnx(model, path, metadata, opset)
    write_repository_config(path)
    return []


def load(path: Path) -> Any:
    """The model as Triton loads it: ``config.pbtxt`` checked against the graph, then ONNX Runtime's runner."""
    from ignite_lenet.export.formats import _onnx_runner
    from ignite_lenet.spec import INPUT_NAME

    check_repository_config(path)
    return _onnx_runner(INPUT_NAME)(path)
