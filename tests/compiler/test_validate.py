"""The TensorRT Q/DQ validator on small graphs built with onnx.helper (each broken in one way,
each must fail naming its node) and on the shipped device encoding (must pass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lepton_edge.compiler.build import FILES, check_device_encoding
from lepton_edge.compiler.validate import validate
from lepton_edge.errors import CompileError
from tests.compiler.conftest import REPO_ROOT

SIGNED_ZERO = np.int8(0)
SHIPPED = REPO_ROOT / "engines" / "yolov8n" / FILES["int8-device"]


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def qdq_conv(*, in_zp: np.generic | None = SIGNED_ZERO, in_scale: float = 1 / 127,
             w_scale: np.ndarray | None = None, w_axis: int = 0, op: str = "Conv",
             conv_name: str = "/model.0/conv/Conv", quantize_output: bool = False,
             gemm_trans_b: int = 0) -> onnx.ModelProto:
    """images -> Q -> DQ -> op(DQ(int8 weight)) -> the head's float Sigmoid -> y:
    TensorRT-shaped unless told."""
    k, c = 4, 3
    inits = [_init("x_scale", np.float32(in_scale))]
    q_in = ["images", "x_scale"]
    if in_zp is not None:
        inits.append(_init("x_zp", in_zp))
        q_in.append("x_zp")
    nodes = [helper.make_node("QuantizeLinear", q_in, ["x_q"], name="images_QuantizeLinear"),
             helper.make_node("DequantizeLinear", ["x_q", *q_in[1:]], ["x_dq"],
                              name="images_DequantizeLinear")]
    if op == "Conv":
        w = np.arange(k * c * 9, dtype=np.int8).reshape(k, c, 3, 3) % 50
        x_shape, out_shape, kw = [1, c, 8, 8], [1, k, 6, 6], {}
    elif op == "ConvTranspose":
        w = np.arange(c * k * 9, dtype=np.int8).reshape(c, k, 3, 3) % 50
        x_shape, out_shape, kw = [1, c, 8, 8], [1, k, 10, 10], {}
    else:  # Gemm
        w = (np.arange(c * k, dtype=np.int8).reshape((k, c) if gemm_trans_b else (c, k)))
        x_shape, out_shape, kw = [1, c], [1, k], {"transB": gemm_trans_b}
    channels = w.shape[w_axis]
    scale = np.full(channels, 0.01, np.float32) if w_scale is None else w_scale
    inits += [_init("w_q", w), _init("w_scale", scale),
              _init("w_zp", np.zeros(scale.shape, np.int8))]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"],
                                  axis=w_axis, name="w_DequantizeLinear"))
    conv_out = "conv" if not quantize_output else "conv_float"
    nodes.append(helper.make_node(op, ["x_dq", "w"], [conv_out], name=conv_name, **kw))
    if quantize_output:
        inits += [_init("y_scale", np.float32(0.1)), _init("y_zp", np.int8(0))]
        nodes += [helper.make_node("QuantizeLinear", ["conv_float", "y_scale", "y_zp"],
                                   ["conv_q"], name="y_QuantizeLinear"),
                  helper.make_node("DequantizeLinear", ["conv_q", "y_scale", "y_zp"], ["conv"],
                                   name="y_DequantizeLinear")]
    # the Detect module's tail (float): the head module is the last node's
    nodes.append(helper.make_node("Sigmoid", ["conv"], ["y"], name="/model.22/Sigmoid"))
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("images", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_a_tensorrt_shaped_graph_passes_and_runs() -> None:
    model = qdq_conv()
    assert validate(model) == 3
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"images": np.ones((1, 3, 8, 8), np.float32)})[0].shape == (1, 4, 6, 6)


@pytest.mark.parametrize(("model", "node", "problem"), [
    (lambda: qdq_conv(in_zp=np.uint8(0)), "images_QuantizeLinear",
     "zero point 'x_zp' is UINT8, not INT8"),
    (lambda: qdq_conv(in_zp=None), "images_QuantizeLinear",
     "no zero point, so its integer type is UINT8"),
    (lambda: qdq_conv(in_zp=np.int8(3)), "images_QuantizeLinear",
     "zero point 'x_zp' is not 0 ([3])"),
    (lambda: qdq_conv(w_axis=1), "w_DequantizeLinear",
     "per-channel weight scales on axis 1, but Conv '/model.0/conv/Conv' has its output "
     "channels on axis 0"),
    (lambda: qdq_conv(in_scale=0.0), "images_QuantizeLinear",
     "scale 'x_scale' is not positive and finite ([0])"),
    (lambda: qdq_conv(in_scale=float("nan")), "images_QuantizeLinear",
     "scale 'x_scale' is not positive and finite ([nan])"),
    (lambda: qdq_conv(w_scale=np.array([0.01, 0.01, -0.01, 0.01], np.float32)),
     "w_DequantizeLinear", "scale 'w_scale' is not positive and finite ([-0.01"),
    (lambda: qdq_conv(op="ConvTranspose", w_axis=0), "w_DequantizeLinear",
     "ConvTranspose '/model.0/conv/Conv' has its output channels on axis 1"),
    (lambda: qdq_conv(op="Gemm", w_axis=0), "w_DequantizeLinear",
     "Gemm '/model.0/conv/Conv' has its output channels on axis 1"),
    (lambda: qdq_conv(conv_name="/model.22/dfl/conv/Conv"), "/model.22/dfl/conv/Conv",
     "in the YOLO head tail, but it takes the quantized constant 'w_q'"),
    (lambda: qdq_conv(conv_name="/model.22/Conv_9", quantize_output=True),
     "/model.22/Conv_9", "in the YOLO head tail, but its output is quantized"),
])
def test_each_broken_graph_fails_naming_its_node(model, node: str, problem: str) -> None:
    with pytest.raises(CompileError) as info:
        validate(model(), where="broken.onnx")
    message = str(info.value)
    assert message.startswith("broken.onnx: ") and f"'{node}'" in message
    assert problem in message and "TensorRT refuses it" in message
    assert "\n" not in message


@pytest.mark.parametrize(("op", "axis", "trans_b"), [("ConvTranspose", 1, 0), ("Gemm", 1, 0),
                                                     ("Gemm", 0, 1)])
def test_output_channel_axes_of_other_weighted_ops_pass(op: str, axis: int,
                                                        trans_b: int) -> None:
    assert validate(qdq_conv(op=op, w_axis=axis, gemm_trans_b=trans_b)) == 3


def test_the_branch_convs_of_the_head_may_be_quantized() -> None:
    """cv2/cv3 (the box and class branches) are not the tail: quantized is right there."""
    assert validate(qdq_conv(conv_name="/model.22/cv2.0/cv2.0.2/Conv",
                             quantize_output=True)) == 5


def test_the_shipped_device_encoding_passes() -> None:
    assert validate(SHIPPED) == 170  # every Q/DQ: 55 activation Q/DQ pairs, 60 weight DQs


def test_the_compile_check_refuses_a_broken_device_encoding(tmp_path: Path) -> None:
    """What the compile runs on the device encoding it wrote (build.check_device_encoding)."""
    bad = tmp_path / FILES["int8-device"]
    onnx.save(qdq_conv(in_zp=np.uint8(0)), str(bad))
    with pytest.raises(CompileError, match=r"model\.int8-device\.onnx: QuantizeLinear "
                                           r"'images_QuantizeLinear': zero point .* UINT8"):
        check_device_encoding(bad)
    assert check_device_encoding(SHIPPED) == 170
