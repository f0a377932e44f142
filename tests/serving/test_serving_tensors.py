"""``serving.tensors``: Open Inference Protocol JSON and binary tensors <-> numpy, without HTTP or a model.

Tables of good and hostile requests: every refusal is a ``BadRequest`` naming the problem, and nothing is
allocated from a shape before it is checked against the body.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ignite_lenet.serving.errors import BadRequest
from ignite_lenet.serving.tensors import TensorSpec, decode_tensor, encode_response, parse_request

FLOAT = TensorSpec("input", "FP32", (-1, 1, 32, 32))
RAW = TensorSpec("image", "UINT8", (-1, 28, 28))


def json_body(tensor: dict, **extra) -> bytes:
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_body(array: np.ndarray, name: str, datatype: str, size: int | None = None, **extra) -> tuple[bytes, int]:
    blob = array.tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape),
                                     "parameters": {"binary_data_size": len(blob) if size is None else size}}],
                         **extra}).encode()
    return header + blob, len(header)


def decode(body: bytes, spec: TensorSpec, header_length: int | None = None) -> np.ndarray:
    request = parse_request(body, header_length)
    return decode_tensor(request.inputs[0], body, spec)


def test_json_flat_and_nested_data_give_the_same_array():
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    flat = decode(json_body({"name": "input", "datatype": "FP32", "shape": [3, 1, 32, 32],
                             "data": x.reshape(-1).tolist()}), FLOAT)
    nested = decode(json_body({"name": "input", "datatype": "FP32", "shape": [3, 1, 32, 32], "data": x.tolist()}),
                    FLOAT)
    np.testing.assert_array_equal(flat, x)
    np.testing.assert_array_equal(nested, x)
    assert flat.dtype == np.float32 and flat.flags.c_contiguous


def test_binary_data_is_read_in_place_without_a_copy():
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    body, length = binary_body(x, "image", "UINT8", id="r1")
    request = parse_request(body, length)
    array = decode_tensor(request.inputs[0], body, RAW)
    np.testing.assert_array_equal(array, x)
    assert request.id == "r1" and array.base is not None  # a view of the body, not a copy
    floats = np.random.default_rng(1).random((4, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(decode(*binary_body(floats, "input", "FP32")[:1], FLOAT,
                                         binary_body(floats, "input", "FP32")[1]), floats)


def test_requested_outputs_and_binary_flags():
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0] * 1024}],
                       "parameters": {"binary_data_output": True, "unknown": {"ignored": 1}},
                       "outputs": [{"name": "label"}, {"name": "logits", "parameters": {"binary_data": False}}]})
    request = parse_request(body.encode())
    assert request.binary_output is True
    assert [(o.name, o.binary) for o in request.outputs] == [("label", None), ("logits", False)]


ONE = {"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32]}
HOSTILE_JSON = [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"inputs": []}', "non-empty list"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json_body({**ONE, "data": [float("nan")] + [0] * 1023}), "NaN"),
    (json_body({**ONE, "data": [0] * 1023 + ["Infinity"]}), "only numbers"),
    (json_body({**ONE, "data": [True] + [0] * 1023}), "true/false"),
    (json_body({**ONE, "data": [None] * 1024}), "only numbers"),
    (json_body({**ONE, "data": ["0.5"] * 1024}), "only numbers"),
    (json_body({**ONE, "data": [{"a": 1}] * 1024}), "only numbers"),
    (json_body({**ONE, "data": [10 ** 40] * 1024}), "NaN or infinity"),  # a float as parsed: beyond FP32
    (json_body({**ONE, "data": [1e39] * 1024}), "NaN or infinity"),
    (json_body({**ONE, "data": [0] * 1023}), "1,023 values"),
    (json_body({**ONE, "data": [[0] * 1024]}), "nested as [1, 1024]"),
    (json_body({**ONE, "data": [[[0] * 32] * 32]}), "nested as [1, 32, 32]"),
    (json_body({**ONE, "data": [[0] * 1024, [0]]}), "ragged"),
    (json_body({**ONE, "data": []}), "empty"),
    (json_body({**ONE, "data": "AAAA"}), "must be a list"),
    (json_body({**ONE}), "no data"),
    (json_body({**ONE, "datatype": "FP64", "data": [0] * 1024}), "takes FP32"),
    (json_body({**ONE, "datatype": "FLOAT", "data": [0] * 1024}), "not an OIP datatype"),
    (json_body({**ONE, "shape": [1, 1, 28, 28], "data": [0] * 784}), "shape [1, 1, 28, 28]"),
    (json_body({**ONE, "shape": [0, 1, 32, 32], "data": []}), "N >= 1"),
    (json_body({**ONE, "shape": [-1, 1, 32, 32], "data": [0] * 1024}), "non-negative integers"),
    (json_body({**ONE, "shape": [True, 1, 32, 32], "data": [0] * 1024}), "non-negative integers"),
    (json_body({**ONE, "shape": [1.0, 1, 32, 32], "data": [0] * 1024}), "non-negative integers"),
    (json_body({**ONE, "shape": [2 ** 62, 1, 32, 32], "data": [0] * 1024}), "needs"),
    (json_body({**ONE, "shape": [10 ** 30, 1, 32, 32], "data": [0] * 1024}), "shape"),  # beyond 64 bits
    (json_body({**ONE, "shape": [1] * 17, "data": [0]}), "at most 16"),
    (json_body({**ONE, "parameters": "x", "data": [0] * 1024}), "parameters must be an object"),
    (json_body({**ONE, "data": [0] * 1024}, parameters={"binary_data_output": "yes"}), "true or false"),
    (json_body({**ONE, "data": [0] * 1024}, parameters={"classification": 3}), "classification"),
    (json_body({**ONE, "data": [0] * 1024}, outputs=[{"name": "label"}, {"name": "label"}]), "appears twice"),
    (json_body({**ONE, "data": [0] * 1024}, outputs={"name": "label"}), "outputs must be a list"),
    (json_body({**ONE, "data": [0] * 1024}, id=5), "id must be a string"),
    (json_body({"datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0] * 1024}), "name must be"),
]


@pytest.mark.parametrize("body, problem", HOSTILE_JSON, ids=range(len(HOSTILE_JSON)))
def test_hostile_json_is_refused_naming_the_problem(body, problem):
    with pytest.raises(BadRequest, match=None) as refused:
        decode(body, FLOAT)
    assert problem in refused.value.message, refused.value.message
    assert refused.value.status == 400


def test_hostile_binary_is_refused_before_anything_is_allocated():
    x = np.zeros((2, 28, 28), np.uint8)
    body, length = binary_body(x, "image", "UINT8")
    cases = [
        ((body, len(body) + 1), "only"),  # the header length past the body
        (binary_body(x, "image", "UINT8", size=len(body))[:2], "past the end"),  # binary_data_size past the body
        ((body[:-1], length), "past the end"),  # a truncated tensor
        ((body + b"x", length), "after the header"),  # bytes nobody declared
        (binary_body(x, "image", "UINT8", size=100)[:2], "after the header"),
        (binary_body(np.zeros((2, 28, 28), np.uint16), "image", "UINT8")[:2], "needs 1,568"),
        (binary_body(x, "image", "INT8")[:2], "takes UINT8"),
        (binary_body(np.zeros((2, 1, 32, 32), np.float32), "image", "FP32")[:2], "takes UINT8"),
    ]
    huge = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [2 ** 62, 28, 28],
                                   "parameters": {"binary_data_size": 1568}}]}).encode()
    cases.append(((huge + x.tobytes(), len(huge)), "needs"))
    nan = np.full((1, 1, 32, 32), np.nan, np.float32)
    for (data, header_length), problem in cases:
        with pytest.raises(BadRequest) as refused:
            decode(data, RAW, header_length)
        assert problem in refused.value.message, (problem, refused.value.message)
    with pytest.raises(BadRequest, match="NaN"):
        decode(*binary_body(nan, "input", "FP32")[:1], FLOAT, binary_body(nan, "input", "FP32")[1])


def test_uint8_json_must_be_integers_in_range():
    good = decode(json_body({"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [255] * 784}), RAW)
    assert good.dtype == np.uint8 and good.max() == 255
    for data, problem in (([256] * 784, "out of the range"), ([-1] * 784, "out of the range"),
                          ([0.5] * 784, "non-integers")):
        with pytest.raises(BadRequest, match=problem):
            decode(json_body({"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": data}), RAW)


def test_responses_round_trip_json_and_binary():
    logits = np.random.default_rng(2).standard_normal((3, 10)).astype(np.float32)
    labels = logits.argmax(1).astype(np.int64)
    body, length = encode_response({"model_name": "m", "id": "7"}, [("logits", logits, False), ("label", labels, True)])
    header = json.loads(body[:length])
    assert header["id"] == "7" and header["outputs"][0]["shape"] == [3, 10]
    np.testing.assert_array_equal(np.array(header["outputs"][0]["data"], np.float32).reshape(3, 10), logits)
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 24} and "data" not in header["outputs"][1]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.int64), labels)
    text, none = encode_response({"model_name": "m"}, [("label", labels, False)])
    assert none is None and json.loads(text)["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [3],
                                                                "data": labels.tolist()}
