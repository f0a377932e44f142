"""ONNX graph surgery on an exported LeNet-5: conv channels padded for ONNX Runtime's blocked layout, the
raw-input model (training's preprocessing inside the graph), and int8 static quantization.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ignite_lenet.mnist.resize import fixed_point_weights
from ignite_lenet.spec import INPUT_NAME, INPUT_SHAPE, PREPROCESSING, RAW_INPUT_NAME, SOURCE_SIZE

NCHWC_BLOCK = 8  # ONNX Runtime's blocked conv layout on AVX2 CPUs groups channels by 8


def pad_conv_channels(proto: Any, multiple: int = NCHWC_BLOCK) -> int:
    """Pad convolutions whose channel count is not a multiple of ``multiple`` with zero filters, in place.

    ONNX Runtime runs convolutions in a blocked layout (NCHWc) only when the channels come in blocks of 8;
    LeNet-5's conv1 has 6 filters, so its output went back to NCHW for a slow generic average pooling (a
    quarter of the batch-1024 time). Two zero filters on conv1 (bias 0) and two zero input channels on conv2
    keep the whole convolution stack blocked and change no output: the extra channels are multiplied by zero
    weights. Only a Conv whose output reaches the next Conv through channel-wise ops (activations, pooling)
    is padded. Returns how many convolutions were padded.
    """
    import numpy as np
    from onnx import numpy_helper

    channelwise = {"Tanh", "Relu", "Sigmoid", "AveragePool", "MaxPool"}
    initializers = {t.name: t for t in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_conv(node: Any) -> Any:
        while True:
            users = consumers.get(node.output[0], [])
            if len(users) != 1:
                return None
            node = users[0]
            if node.op_type == "Conv":
                return node
            if node.op_type not in channelwise:
                return None

    def pad(name: str, axis: int, size: int) -> None:
        array = numpy_helper.to_array(initializers[name])
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, size - array.shape[axis])
        initializers[name].CopyFrom(numpy_helper.from_array(np.pad(array, widths), name))

    padded = 0
    for node in [n for n in proto.graph.node if n.op_type == "Conv"]:
        following = next_conv(node)
        weight = initializers.get(node.input[1])
        if following is None or weight is None or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        channels = weight.dims[0]
        size = -(-channels // multiple) * multiple
        if size == channels or following.input[1] not in initializers:
            continue
        pad(node.input[1], 0, size)
        pad(node.input[2], 0, size)
        pad(following.input[1], 1, size)
        padded += 1
    if padded:
        del proto.graph.value_info[:]  # intermediate shapes changed; let shape inference redo them
    return padded


def raw_input_model(proto: Any) -> Any:
    """``proto`` (float ``[batch, 1, 32, 32]`` input) behind training's preprocessing, in the graph: input
    ``image`` uint8 ``[batch, 28, 28]`` (MNIST's IDX layout).

    The 28->32 resize is Pillow's fixed-point bilinear resampling as two constant matrix products, each
    followed by the rounding and clamping to uint8 that Pillow does between and after its passes; the
    coefficients are sixteenths, so float32 holds every product and sum exactly and the pixels are
    bit-identical to ``preprocessing.to_model_input`` (then the same division by 255).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kh, bits_h = fixed_point_weights(SOURCE_SIZE, INPUT_SHAPE[2])
    kv, bits_v = fixed_point_weights(SOURCE_SIZE, INPUT_SHAPE[1])
    for k, bits in ((kh, bits_h), (kv, bits_v)):
        if 255 * int(k.sum(axis=1).max()) + (1 << bits) >= 1 << 24:
            raise ValueError("the resize coefficients do not fit float32 exactly")  # not for 28 -> 32
    graph = proto.graph
    float_input = graph.input[0].name

    def const(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value), f"preprocess/{name}")

    constants = [
        const("resize_x", kh.T.astype(np.float32)),  # (28, 32): image @ resize_x resizes the rows
        const("resize_y", kv.astype(np.float32)),  # (32, 28): resize_y @ image resizes the columns
        const("half_x", np.float32(1 << (bits_h - 1))), const("scale_x", np.float32(1 / (1 << bits_h))),
        const("half_y", np.float32(1 << (bits_v - 1))), const("scale_y", np.float32(1 / (1 << bits_v))),
        const("zero", np.float32(0)), const("max", np.float32(255)), const("axes", np.array([1], np.int64)),
    ]
    names = [c.name for c in constants]
    rx, ry, hx, sx, hy, sy, zero, top, axes = names
    p = "preprocess/"
    nodes = [
        helper.make_node("Cast", [RAW_INPUT_NAME], [p + "pixels"], to=TensorProto.FLOAT),
        *_resampling_pass("x", [p + "pixels", rx], hx, sx, zero, top),  # (B, 28, 32)
        *_resampling_pass("y", [ry, p + "x_uint8"], hy, sy, zero, top),  # (B, 32, 32)
        helper.make_node("Div", [p + "y_uint8", top], [p + "scaled"]),  # ToTensor's / 255
        helper.make_node("Unsqueeze", [p + "scaled", axes], [float_input]),  # (B, 1, 32, 32)
    ]
    image = helper.make_tensor_value_info(RAW_INPUT_NAME, TensorProto.UINT8, ["batch", SOURCE_SIZE, SOURCE_SIZE])
    new_graph = helper.make_graph([*nodes, *graph.node], graph.name, [image], list(graph.output),
                                  [*constants, *graph.initializer])
    model = helper.make_model(new_graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version,
                              producer_name=proto.producer_name, producer_version=proto.producer_version)
    model.functions.extend(proto.functions)
    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata.update(input_name=RAW_INPUT_NAME, input_shape=json.dumps(["batch", SOURCE_SIZE, SOURCE_SIZE]),
                    input_dtype="uint8", preprocessing=json.dumps({"inside the graph": PREPROCESSING}))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _resampling_pass(axis: str, product: list[str], half: str, scale: str, zero: str, top: str) -> list[Any]:
    """One of Pillow's resampling passes as nodes: the weighted sums (``product``'s MatMul), then Pillow's rounding
    (``+ half``, ``>> bits`` as a multiplication by a power of two: exact) and its clamp to uint8, into
    ``preprocess/{axis}_uint8``."""
    from onnx import helper

    p = f"preprocess/{axis}_"
    return [helper.make_node("MatMul", product, [p + "sum"]),
            helper.make_node("Add", [p + "sum", half], [p + "rounded"]),
            helper.make_node("Mul", [p + "rounded", scale], [p + "shifted"]),
            helper.make_node("Floor", [p + "shifted"], [p + "floor"]),
            helper.make_node("Clip", [p + "floor", zero, top], [p + "uint8"])]


def quantize_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime static quantization, QDQ format, calibrated on training images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i : i + 100] for i in range(0, len(calibration), 100))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        prepared.unlink(missing_ok=True)
