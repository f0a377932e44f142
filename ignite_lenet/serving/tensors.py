"""Open Inference Protocol v2 tensors <-> numpy: pure functions, no HTTP, no model (easy to test and fuzz).

    request = parse_request(body, header_length)         # the body of POST /v2/models/NAME/infer
    array = decode_tensor(request.inputs[0], body, model_input)  # numpy, checked against the model's input
    body, header_length = encode_response(header, [(output, array, binary)])

A request is a JSON header (the whole body, or its first ``Inference-Header-Content-Length`` bytes) and, with
the binary tensor data extension (Triton's, what ``tritonclient.http`` sends by default), the raw bytes of the
tensors that declare ``parameters.binary_data_size``, one after the other in input order, after the header.
Binary tensors become arrays by ``np.frombuffer`` on the body (no copy); JSON ``data`` (flat or nested to the
shape) by ``np.asarray``. Everything a client sends is checked before memory is allocated for it: the shape
against the model and the body's size, the data's types (no booleans, strings or nulls for numbers), NaN and
infinity (a JSON response could not carry what the model makes of them), the binary ranges against the body.
Every refusal is a ``BadRequest`` naming the field.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ignite_lenet.serving.errors import BadRequest

try:  # 5x faster than json.loads on a tensor of 262,144 floats (9 ms against 53 ms); the serving extra has it
    import orjson
except ImportError:  # pragma: no cover - the standard library parses the same requests, slower
    orjson = None

# OIP datatypes with a fixed size (BYTES, strings, has none: no model here takes or returns it)
DATATYPES: dict[str, np.dtype] = {name: np.dtype(kind) for name, kind in (
    ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64),
    ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64), ("FP16", np.float16),
    ("FP32", np.float32), ("FP64", np.float64))}
OIP_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
KNOWN_DATATYPES = (*DATATYPES, "BYTES", "BF16")  # recognised, so that a refusal can say "not this model's"
MAX_DIMS = 16  # dimensions of a tensor's shape
MAX_NAME = 200  # characters of a client's tensor name quoted in an error


@dataclass(frozen=True)
class TensorSpec:
    """A model's input or output as OIP describes it: ``shape`` with ``-1`` for the batch."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InputTensor:
    """One entry of a request's ``inputs``, parsed and shape-checked but not yet read."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # the JSON ``data`` (a list), or None for binary data
    binary: tuple[int, int] | None = None  # (offset into the body, size in bytes) with the binary extension


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's binary_data_output decides


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: the tensors' places in the body, the outputs asked for (empty: all)."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    binary_output: bool = False  # the request's parameters.binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)


def _refuse_constant(name: str) -> float:
    raise BadRequest(f"the request holds {name}: JSON tensors must be finite numbers")


def _loads(text: bytes) -> Any:
    """The JSON header; NaN and infinity refused (Python's json accepts them), deep nesting too, in one line."""
    if orjson is not None:
        try:
            return orjson.loads(text)  # strict JSON: no NaN, 1024 levels at most
        except orjson.JSONDecodeError:
            pass  # malformed: the standard library's parser says why, in its words (NaN, nesting, the position)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadRequest("the inference header is not UTF-8 JSON") from None
    except RecursionError:
        raise BadRequest("the inference header is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"the inference header is not valid JSON: {e.msg} at character {e.pos}") from None


def _quoted(name: Any) -> str:
    return repr(name if not isinstance(name, str) else name[:MAX_NAME])


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{where} must be true or false, got {str(value)[:40]!r}")
    return value


def _parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    params = entry.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters must be an object")
    return params


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{where} must be a non-negative integer, got {str(value)[:40]!r}")
    return value


def parse_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """The inference request in ``body``: JSON, or a JSON header of ``header_length`` bytes followed by binary
    tensor data. Checks the structure and the binary ranges against the body, not the model (``decode_tensor``).

    Unknown ``parameters`` are ignored, as Triton's HTTP endpoint does; known ones of the wrong type are refused.
    """
    if header_length is None:
        header_length = len(body)
    elif header_length > len(body):
        raise BadRequest(f"Inference-Header-Content-Length is {header_length:,} but the body is only {len(body):,} "
                         f"bytes")
    header = _loads(body[:header_length])
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object with 'inputs'")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string")
    params = _parameters(header, "request")
    binary_output = _flag(params.get("binary_data_output", False), "parameters.binary_data_output")
    if "classification" in params:
        raise BadRequest("the classification extension is not supported: ask for the 'label' output")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    inputs, offset = [], header_length
    for i, entry in enumerate(raw_inputs):
        tensor, offset = _parse_input(entry, f"inputs[{i}]", offset, len(body))
        inputs.append(tensor)
    if offset != len(body):
        raise BadRequest(f"the body has {len(body) - offset:,} bytes after the header and binary tensors that no "
                         f"input's binary_data_size accounts for")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise BadRequest("inputs: the same tensor name appears twice")
    outputs = header.get("outputs", [])
    if not isinstance(outputs, list):
        raise BadRequest("outputs must be a list")
    requested = tuple(_parse_output(entry, f"outputs[{i}]") for i, entry in enumerate(outputs))
    if len({o.name for o in requested}) != len(requested):
        raise BadRequest("outputs: the same output name appears twice")
    return InferRequest(request_id, tuple(inputs), requested, binary_output, params)


def _parse_input(entry: Any, where: str, offset: int, body_length: int) -> tuple[InputTensor, int]:
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} must be an object with name, datatype, shape and data")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be a non-empty string")
    where = f"input {_quoted(name)}"
    if not isinstance(datatype, str) or datatype not in KNOWN_DATATYPES:
        raise BadRequest(f"{where}: datatype {str(datatype)[:40]!r} is not an OIP datatype "
                         f"({', '.join(KNOWN_DATATYPES)})")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers, got "
                         f"{str(shape)[:80]}")
    params = _parameters(entry, where)
    if "binary_data_size" in params:
        if "data" in entry:
            raise BadRequest(f"{where}: has both data and parameters.binary_data_size")
        size = _count(params["binary_data_size"], f"{where}: parameters.binary_data_size")
        if offset + size > body_length:
            raise BadRequest(f"{where}: binary_data_size {size:,} reaches past the end of the body (its data would "
                             f"start at byte {offset:,} of {body_length:,})")
        return InputTensor(name, datatype, tuple(shape), binary=(offset, size)), offset + size
    if "data" not in entry:
        raise BadRequest(f"{where}: no data and no parameters.binary_data_size")
    if not isinstance(entry["data"], list):
        raise BadRequest(f"{where}: data must be a list of numbers (flat, or nested to the shape)")
    return InputTensor(name, datatype, tuple(shape), data=entry["data"]), offset


def _parse_output(entry: Any, where: str) -> RequestedOutput:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BadRequest(f"{where} must be an object with a name")
    params = _parameters(entry, where)
    if "classification" in params:
        raise BadRequest(f"{where}: the classification extension is not supported: ask for the 'label' output")
    binary = params.get("binary_data")
    return RequestedOutput(entry["name"], None if binary is None else _flag(binary, f"{where}.parameters.binary_data"))


def check_shape(tensor: InputTensor, spec: TensorSpec) -> None:
    """``BadRequest`` unless ``tensor`` is ``spec``'s datatype and shape (``-1``: any size, at least 1)."""
    where = f"input {_quoted(tensor.name)}"
    if tensor.datatype != spec.datatype:
        raise BadRequest(f"{where}: datatype {tensor.datatype} but the model takes {spec.datatype}")
    if len(tensor.shape) != len(spec.shape) or any(
            want != got if want >= 0 else got < 1 for want, got in zip(spec.shape, tensor.shape)):
        wanted = ", ".join("N" if d < 0 else str(d) for d in spec.shape)
        raise BadRequest(f"{where}: shape {list(tensor.shape)} but the model takes [{wanted}] (N >= 1)")


def decode_tensor(tensor: InputTensor, body: bytes | memoryview, spec: TensorSpec) -> np.ndarray:
    """``tensor`` as a C-contiguous array of ``spec``'s dtype and ``tensor.shape``; binary data without a copy.

    Floating-point data must be finite, integer data within the datatype's range.
    """
    check_shape(tensor, spec)
    dtype, count = DATATYPES[spec.datatype], math.prod(tensor.shape)
    where = f"input {_quoted(tensor.name)}"
    if tensor.binary is not None:
        offset, size = tensor.binary
        if size != count * dtype.itemsize:
            raise BadRequest(f"{where}: binary_data_size is {size:,} bytes but shape {list(tensor.shape)} of "
                             f"{tensor.datatype} needs {count * dtype.itemsize:,}")
        array = np.frombuffer(body, dtype, count, offset).reshape(tensor.shape)
        if not array.flags.aligned:  # an odd-sized header before it; ONNX Runtime wants aligned data
            array = array.copy()
    else:
        array = _from_json(tensor.data, tensor.shape, dtype, count, where)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"{where}: holds NaN or infinity; send finite numbers")
    return array


def _from_json(data: list, shape: tuple[int, ...], dtype: np.dtype, count: int, where: str) -> np.ndarray:
    """JSON ``data``, flat or nested exactly to ``shape``, as an array of ``dtype``."""
    if count > 0 and not data:
        raise BadRequest(f"{where}: data is empty but shape {list(shape)} holds {count:,} values")
    try:
        array = np.asarray(data)  # floats and ints give a number dtype; strings, nulls, objects and ragged do not
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{where}: data is not a regular array of numbers (ragged nesting, or mixed types)") from None
    if array.ndim == 1:
        values = data
    elif array.shape == shape:
        values = list(itertools.chain.from_iterable(data))
        for _ in range(array.ndim - 2):
            values = list(itertools.chain.from_iterable(values))
    else:
        raise BadRequest(f"{where}: data nested as {list(array.shape)} but shape is {list(shape)}: nest it exactly "
                         f"to the shape, or send it flat")
    if array.size != count:
        raise BadRequest(f"{where}: data holds {array.size:,} values but shape {list(shape)} needs {count:,}")
    if array.dtype.kind not in "iuf" and not (array.dtype.kind == "b" and dtype.kind == "b"):
        raise BadRequest(f"{where}: data must hold only numbers, got {_first_non_number(values)}")
    if dtype.kind != "b" and bool in set(map(type, values)):  # numpy turns true into 1 beside numbers
        raise BadRequest(f"{where}: data holds true/false; send numbers")
    if dtype.kind in "iu":
        if array.dtype.kind == "f" and not np.array_equal(array, np.floor(array)):
            raise BadRequest(f"{where}: {OIP_NAMES[dtype]} data holds non-integers")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise BadRequest(f"{where}: values out of the range of {OIP_NAMES[dtype]} ({info.min} to {info.max})")
    with np.errstate(over="ignore"):  # FP32 beyond 3.4e38 becomes infinity: refused by the finite check
        return np.ascontiguousarray(array.astype(dtype, copy=False).reshape(shape))


def _first_non_number(values: Sequence[Any]) -> str:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{type(value).__name__} {str(value)[:40]!r}"
    return "values numpy cannot hold"  # integers beyond 64 bits


def json_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """An output tensor with its data inline (flat, row-major)."""
    return {"name": name, "datatype": OIP_NAMES[array.dtype], "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


def encode_response(header: dict[str, Any], outputs: Sequence[tuple[str, np.ndarray, bool]]
                    ) -> tuple[bytes, int | None]:
    """The response body for ``outputs`` (name, array, binary?) and the JSON header's length when any output is
    binary (for ``Inference-Header-Content-Length``; ``None``: the body is all JSON)."""
    tensors, blobs = [], []
    for name, array, binary in outputs:
        if binary:
            blob = np.ascontiguousarray(array).tobytes()
            blobs.append(blob)
            tensors.append({"name": name, "datatype": OIP_NAMES[array.dtype], "shape": list(array.shape),
                            "parameters": {"binary_data_size": len(blob)}})
        else:
            tensors.append(json_tensor(name, array))
    text = json.dumps({**header, "outputs": tensors}, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
