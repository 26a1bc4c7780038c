"""The TensorRT encoding's own Q/DQ writer (compiler/device_int8.py) on the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from lepton_edge.compiler import device_int8, validate
from lepton_edge.compiler.build import tail_nodes
from tests.compiler.conftest import MODEL


def test_mse_clip_cuts_a_rare_outlier_and_keeps_a_uniform_range() -> None:
    rng = np.random.default_rng(0)
    bulk = np.abs(rng.normal(0.0, 1.0, 1_000_000))
    assert device_int8.mse_amax(np.append(bulk, 400.0), 400.0) < 80.0  # 63: the peak is cut
    flat = rng.uniform(0.0, 1.0, 100_000)
    assert device_int8.mse_amax(flat, float(flat.max())) > 0.95


def test_weights_are_per_channel_int8_within_half_a_step() -> None:
    w = np.random.default_rng(1).normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    w[2] *= 100.0
    q, s = device_int8.weight_int8(w)
    assert q.dtype == np.int8 and s.shape == (4,) and np.abs(q).max() == 127
    assert np.all(np.abs(q * s.reshape(-1, 1, 1, 1) - w) <= s.reshape(-1, 1, 1, 1) / 2 + 1e-6)


def test_written_model_quantizes_conv_inputs_only_and_bias_correction_cuts_the_shift(
        tmp_path: Path) -> None:
    convs, stem = device_int8.conv_plan(MODEL, tail_nodes(MODEL))
    assert stem == ["/model.0/conv/Conv", "/model.1/conv/Conv", "/model.2/cv1/conv/Conv"]
    assert len(convs) == 60
    rng = np.random.default_rng(2)
    frames = [rng.uniform(0, 1, (1, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    nodes = {n.name: n for n in onnx.load(str(MODEL)).graph.node}
    amax = {nodes[c].input[0]: 4.0 for c in convs}
    out = device_int8.write_qdq(MODEL, tmp_path / "q.onnx", amax, convs)
    assert validate.validate(out, tail=tail_nodes(MODEL)) == 170
    g = onnx.load(str(out)).graph
    consumers = {i: n for n in g.node for i in n.input}
    for q in (n for n in g.node if n.op_type == "QuantizeLinear"):
        dq = consumers[q.output[0]]
        assert all(n.op_type == "Conv" for n in g.node if dq.output[0] in n.input)
    delta = device_int8.bias_correction(MODEL, out, convs, frames)
    assert set(delta) == set(convs) and any(np.abs(d).max() > 1e-3 for d in delta.values())
    fixed = device_int8.write_qdq(MODEL, tmp_path / "qb.onnx", amax, convs, bias_delta=delta)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fixed)).graph.initializer}
    bias = nodes[convs[0]].input[2]
    base = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(MODEL)).graph.initializer}
    np.testing.assert_allclose(inits[bias], base[bias] + delta[convs[0]], rtol=1e-5, atol=1e-6)
    ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])  # it loads and runs
