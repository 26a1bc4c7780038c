"""Check an explicitly quantized (Q/DQ) ONNX graph against what TensorRT's explicit
quantization takes, before it ships as the `int8-device` encoding.

TensorRT builds a plan from such a graph only when every QuantizeLinear / DequantizeLinear is
signed INT8 and symmetric (zero point 0), its scales are positive and finite constants,
activations are quantized per tensor, and per-channel weight scales run along the output
channels of the layer that consumes the weight:

| consumer (weight input) | weight layout | output-channel axis |
|---|---|---|
| Conv (input 1) | (K, C/g, kH, kW) | 0 |
| ConvTranspose (input 1) | (C, K/g, kH, kW) | 1 |
| Gemm (input 1), transB=0 / transB=1 | (C, K) / (K, C) | 1 / 0 |
| MatMul (input 1) | (..., C, K) | last |

The YOLO head tail (`build.YOLO_TAIL` in the head module) must stay float: no node of it
may have its output quantized or take a quantized constant. `validate()` raises CompileError
naming the first offending node and saying how to fix it; a graph without Q/DQ passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from lepton_edge.errors import CompileError

QDQ = ("QuantizeLinear", "DequantizeLinear")
# Which axis of the weight (input 1) holds the output channels, per consumer.
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
HINT = ("re-quantize with `lepton-edge compile` (int8-device: symmetric signed activations, "
        "per-channel weights on the output channels)")


def validate(model: onnx.ModelProto | str | Path, *, tail: Iterable[str] | None = None,
             tail_pattern: str | None = None, where: str = "") -> int:
    """Raise CompileError naming the first node TensorRT would refuse; return the number of
    Q/DQ nodes checked. `tail`: names of the nodes that must stay float (default: the nodes
    that match `tail_pattern`, by default `build.YOLO_TAIL`, in the module of the graph's
    last non-Q/DQ node)."""
    if not isinstance(model, onnx.ModelProto):
        where = where or str(model)
        model = onnx.load(str(model), load_external_data=False)
    where = where or model.graph.name or "model"
    g = model.graph
    consts = _constants(g)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    checked = 0
    for node in g.node:
        if node.op_type in QDQ:
            _check_qdq(node, consts, producers, consumers, where)
            checked += 1
    for name in _tail(g, tail, tail_pattern):
        node = next((n for n in g.node if n.name == name), None)
        if node is not None:
            _check_float(node, consts, producers, consumers, where)
    return checked


def _fail(where: str, node: onnx.NodeProto, problem: str, fix: str = HINT) -> CompileError:
    return CompileError(f"{where}: {node.op_type} {node.name or node.output[0]!r}: {problem}; "
                        f"TensorRT refuses it: {fix}")


def _constants(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _check_qdq(node: onnx.NodeProto, consts: dict[str, np.ndarray],
               producers: dict[str, onnx.NodeProto],
               consumers: dict[str, list[tuple[onnx.NodeProto, int]]], where: str) -> None:
    scale_name = node.input[1] if len(node.input) > 1 else ""
    if scale_name not in consts:
        raise _fail(where, node, f"scale {scale_name!r} is not a constant")
    scale = np.asarray(consts[scale_name], np.float64)
    if scale.size == 0 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        bad = scale.ravel()[~(np.isfinite(scale.ravel()) & (scale.ravel() > 0))]
        shown = ", ".join(f"{v:g}" for v in bad[:3].tolist())
        raise _fail(where, node, f"scale {scale_name!r} is not positive and finite "
                                 f"([{shown}])",
                    "recalibrate: a zero, negative or NaN scale comes from an empty or "
                    "broken range (check the calibration frames)")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if zp_name:
        if zp_name not in consts:
            raise _fail(where, node, f"zero point {zp_name!r} is not a constant")
        zp = consts[zp_name]
        if zp.dtype != np.int8:
            raise _fail(where, node, f"zero point {zp_name!r} is {zp.dtype.name.upper()}, not "
                                     f"INT8")
        if np.any(zp != 0):
            raise _fail(where, node, f"zero point {zp_name!r} is not 0 "
                                     f"({sorted(set(zp.ravel().tolist()))[:3]})",
                        "quantize symmetrically (ActivationSymmetric / WeightSymmetric)")
    else:
        kind = _unnamed_zero_point_type(node, consts)
        if kind != TensorProto.INT8:
            raise _fail(where, node, f"no zero point, so its integer type is "
                                     f"{TensorProto.DataType.Name(kind)}, not INT8",
                        "give it an INT8 zero point of 0")
    if scale.size > 1:
        _check_axis(node, scale, consts, producers, consumers, where)


def _unnamed_zero_point_type(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> int:
    """The integer type of a Q/DQ without a zero point input: QuantizeLinear's
    `output_dtype` (opset 21) or UINT8; DequantizeLinear's constant input, else unknown
    (its QuantizeLinear is checked on its own)."""
    if node.op_type == "QuantizeLinear":
        return next((a.i for a in node.attribute if a.name == "output_dtype" and a.i),
                    TensorProto.UINT8)
    x = consts.get(node.input[0])
    if x is None:
        return TensorProto.INT8  # fed by a QuantizeLinear, which says its own type
    return int(onnx.helper.np_dtype_to_tensor_dtype(x.dtype))


def _check_axis(node: onnx.NodeProto, scale: np.ndarray, consts: dict[str, np.ndarray],
                producers: dict[str, onnx.NodeProto],
                consumers: dict[str, list[tuple[onnx.NodeProto, int]]], where: str) -> None:
    """Per-channel scales: only on a constant weight, along its consumer's output channels."""
    weight = consts.get(node.input[0])
    src = producers.get(node.input[0])
    if weight is None and src is not None and src.op_type == "QuantizeLinear":
        weight = consts.get(src.input[0])  # Q(float weight) -> DQ
    if weight is None:
        raise _fail(where, node, f"per-channel scales ({scale.size}) on an activation",
                    "quantize activations per tensor")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)  # ONNX's default is 1
    if axis < 0:
        axis += weight.ndim
    out = node.output[0]
    if node.op_type == "QuantizeLinear":  # Q -> DQ -> consumer: the DQ's consumers count
        dqs = [c for c, _ in consumers.get(out, []) if c.op_type == "DequantizeLinear"]
        uses = [u for dq in dqs for u in consumers.get(dq.output[0], [])]
    else:
        uses = consumers.get(out, [])
    if not uses:
        return
    for user, index in uses:
        wanted = _output_axis(user, index, weight.ndim)
        if wanted is None:
            raise _fail(where, node, f"per-channel scales feed {user.op_type} {user.name!r} "
                                     f"input {index}, not a Conv/ConvTranspose/Gemm/MatMul "
                                     f"weight", "quantize this tensor per tensor")
        if axis != wanted:
            raise _fail(where, node, f"per-channel weight scales on axis {axis}, but "
                                     f"{user.op_type} {user.name!r} has its output channels "
                                     f"on axis {wanted}",
                        f"quantize the weight per channel on axis {wanted}")
        if scale.size != weight.shape[axis]:
            raise _fail(where, node, f"{scale.size} scales for {weight.shape[axis]} channels "
                                     f"on axis {axis}")


def _output_axis(user: onnx.NodeProto, index: int, ndim: int) -> int | None:
    if index != 1 or user.op_type not in WEIGHT_OPS:
        return None
    if user.op_type == "Conv":
        return 0
    if user.op_type == "ConvTranspose":
        return 1
    if user.op_type == "Gemm":
        trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return ndim - 1  # MatMul: (..., C, K)


def _tail(g: onnx.GraphProto, tail: Iterable[str] | None, pattern: str | None) -> list[str]:
    if tail is not None:
        return list(tail)
    if pattern is None:
        from lepton_edge.compiler.build import YOLO_TAIL

        pattern = YOLO_TAIL
    compute = [n.name for n in g.node if n.op_type not in QDQ and n.name.startswith("/")]
    if not compute:
        return []
    head = compute[-1].split("/")[1]
    return [n for n in compute if re.match(pattern, n) and n.split("/")[1] == head]


def _check_float(node: onnx.NodeProto, consts: dict[str, np.ndarray],
                 producers: dict[str, onnx.NodeProto],
                 consumers: dict[str, list[tuple[onnx.NodeProto, int]]], where: str) -> None:
    """A head tail node: its outputs are not quantized and it takes no quantized constant."""
    fix = ("keep the YOLO head tail in float (build.YOLO_TAIL: exclude its nodes from "
           "quantization); quantized, the box decode and scores break")
    for out in node.output:
        q = next((c for c, _ in consumers.get(out, []) if c.op_type == "QuantizeLinear"), None)
        if q is not None:
            raise _fail(where, node, f"in the YOLO head tail, but its output is quantized by "
                                     f"{q.name!r}", fix)
    for name in node.input:
        src = producers.get(name)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in consts:
            raise _fail(where, node, f"in the YOLO head tail, but it takes the quantized "
                                     f"constant {src.input[0]!r}", fix)
