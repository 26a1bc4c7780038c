"""The TensorRT (`int8-device`) encoding: explicit Q/DQ written here, not by ONNX Runtime.

What TensorRT takes (compiler/validate.py) is signed symmetric INT8, so every activation scale
is amax / 127 with zero point 0. Within that, three choices decide the agreement with float
(measured in calibration/README.md, "TensorRT encoding: what was tried"):

- Placement: Q/DQ only on the activation input of each quantized Conv (per tensor) and on its
  weight (per output channel, axis 0); the bias stays float. SiLU (Sigmoid, Mul), Add,
  Concat, Split, MaxPool and Resize stay unquantized: TensorRT fuses Conv+SiLU and runs the
  rest at the precision of its neighbours. (ORT's quantizer also quantizes Sigmoid, Mul,
  Add and Concat outputs: 499 Q/DQ nodes against 170 here.)
- Scales: per tensor, the amax that minimizes the quantization MSE of that tensor's values
  on the calibration frames (a strided subsample of each frame), not a percentile.
- Bias correction, per layer: each quantized Conv's float bias is shifted by the mean output
  error its own quantization causes on its actual input in the quantized network,
  `W * E[x] - Wq * E[Q(x)]` per output channel (one pass of the quantized model).

The first `float_stem` convs (graph order) stay float: they see the image (0..1, which a
signed symmetric scale covers with 7 bits) and the two widest-ranged SiLU outputs; TensorRT
runs them FP16/FP32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = 4096
MSE_STEPS = 120
FLOAT_STEM = 3


def conv_plan(float_path: Path, exclude: Iterable[str], float_stem: int = FLOAT_STEM
              ) -> tuple[list[str], list[str]]:
    """(quantized convs, convs kept float for the stem) in graph order; `exclude` (the head
    tail, groups the gate kept in float) is never quantized."""
    import onnx

    skip = set(exclude)
    convs = [n.name for n in onnx.load(str(float_path), load_external_data=False).graph.node
             if n.op_type == "Conv" and n.name not in skip]
    return convs[float_stem:], convs[:float_stem]


def _session(model: Any, extra_outputs: Sequence[str]):
    import onnx
    import onnxruntime as ort

    have = {o.name for o in model.graph.output}
    for n in extra_outputs:
        if n not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _runs(model: Any, names: Sequence[str], frames: Sequence[np.ndarray],
          progress: Callable[[Iterable[int]], Iterable[int]] | None):
    graph_in = {i.name for i in model.graph.input}
    sess = _session(model, [n for n in names if n not in graph_in])
    outs = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name
    steps: Iterable[int] = range(len(frames))
    for i in progress(steps) if progress else steps:
        x = frames[i]
        values = dict(zip(outs, sess.run(outs, {inp: x}), strict=True))
        values[inp] = x
        yield i, values


def activation_amax(float_path: Path, tensors: Sequence[str], frames: Sequence[np.ndarray],
                    *, progress: Callable[[Iterable[int]], Iterable[int]] | None = None
                    ) -> dict[str, float]:
    """The MSE-optimal symmetric INT8 amax of each tensor over `frames` (the graph input, an
    image in 0..1, keeps its full range)."""
    import onnx

    model = onnx.load(str(float_path))
    inp = model.graph.input[0].name
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    peak = dict.fromkeys(tensors, 0.0)
    for i, values in _runs(model, [t for t in tensors if t != inp], frames, progress):
        for t in tensors:
            v = np.abs(values[t].ravel())
            peak[t] = max(peak[t], float(v.max()))
            step = max(1, v.size // SAMPLES_PER_FRAME)
            samples[t].append(v[i % step::step].copy())
    amax = {t: mse_amax(np.concatenate(samples[t]), peak[t]) for t in tensors}
    if inp in amax:
        amax[inp] = max(peak[inp], 1e-8)
    return amax


def mse_amax(values: np.ndarray, peak: float, steps: int = MSE_STEPS) -> float:
    """The clip c in peak/steps, 2 peak/steps, ..., peak that minimizes the mean squared error
    of symmetric INT8 quantization (scale c / 127) of `values` (|x|)."""
    if peak <= 0:
        return 1e-8
    v = values.astype(np.float64)
    best, best_c = np.inf, peak
    for c in np.linspace(peak / steps, peak, steps):
        s = c / 127.0
        err = float(np.mean((v - np.clip(np.round(v / s), -128, 127) * s) ** 2))
        if err < best:
            best, best_c = err, float(c)
    return best_c


def weight_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (axis 0) symmetric INT8 weights: (int8 values, float32 scales)."""
    a = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    s = np.where(a > 0, a / 127.0, 1e-8).astype(np.float32)
    q = np.clip(np.round(w / s.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
    return q, s


def write_qdq(float_path: Path, out_path: Path, amax: dict[str, float], convs: Sequence[str],
              bias_delta: dict[str, np.ndarray] | None = None) -> Path:
    """Write the Q/DQ model: `convs` get their activation input (scale amax / 127) and their
    weight (per channel) quantized; `bias_delta` is added to their float bias."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(float_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    chosen = set(convs)
    conv_nodes = [n for n in g.node if n.op_type == "Conv" and n.name in chosen]
    acts = list(dict.fromkeys(n.input[0] for n in conv_nodes))
    added, qdq = [], []
    for t in acts:
        s = np.array(max(float(amax[t]), 1e-8) / 127.0, np.float32)
        added += [numpy_helper.from_array(s, f"{t}_qscale"),
                  numpy_helper.from_array(np.array(0, np.int8), f"{t}_qzp")]
        qdq += [helper.make_node("QuantizeLinear", [t, f"{t}_qscale", f"{t}_qzp"],
                                 [f"{t}_Q_out"], name=f"{t}_Q"),
                helper.make_node("DequantizeLinear", [f"{t}_Q_out", f"{t}_qscale", f"{t}_qzp"],
                                 [f"{t}_DQ_out"], name=f"{t}_DQ")]
    for n in conv_nodes:
        n.input[0] = f"{n.input[0]}_DQ_out"
        w = n.input[1]
        q, s = weight_int8(numpy_helper.to_array(inits[w]).astype(np.float32))
        added += [numpy_helper.from_array(q, f"{w}_int8"),
                  numpy_helper.from_array(s, f"{w}_wscale"),
                  numpy_helper.from_array(np.zeros_like(s, np.int8), f"{w}_wzp")]
        qdq.append(helper.make_node("DequantizeLinear", [f"{w}_int8", f"{w}_wscale", f"{w}_wzp"],
                                    [f"{w}_DQ_out"], name=f"{w}_DQ", axis=0))
        n.input[1] = f"{w}_DQ_out"
        if bias_delta and n.name in bias_delta and len(n.input) > 2:
            b = inits[n.input[2]]
            arr = numpy_helper.to_array(b).astype(np.float32) + \
                np.asarray(bias_delta[n.name], np.float32)
            b.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), b.name))
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + added)
    nodes = _toposort([*qdq, *g.node], {i.name for i in g.input} | {i.name for i in g.initializer})
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(out_path))
    return out_path


def _toposort(nodes: list[Any], available: set[str]) -> list[Any]:
    avail = set(available) | {""}
    done: list[Any] = []
    pending = nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                done.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"Q/DQ graph has a node with a missing input: {rest[0].name}")
        pending = rest
    return done


def bias_correction(float_path: Path, qdq_path: Path, convs: Sequence[str],
                    frames: Sequence[np.ndarray], *,
                    progress: Callable[[Iterable[int]], Iterable[int]] | None = None
                    ) -> dict[str, np.ndarray]:
    """Per quantized Conv, the float bias shift `W * E[x] - Wq * E[Q(x)]` (per output
    channel, means over the frames' positions) with x its input in the quantized model."""
    import onnx
    from onnx import numpy_helper

    fmodel = onnx.load(str(float_path))
    inits = {i.name: i for i in fmodel.graph.initializer}
    nodes = {n.name: n for n in fmodel.graph.node}
    ins = list(dict.fromkeys(nodes[c].input[0] for c in convs))
    names = [*ins, *(f"{t}_DQ_out" for t in ins)]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for _, values in _runs(onnx.load(str(qdq_path)), names, frames, progress):
        for n in names:
            v = values[n]
            sums[n] = sums.get(n, 0) + v.sum(axis=(0, 2, 3), dtype=np.float64)
            counts[n] = counts.get(n, 0) + v.shape[0] * v.shape[2] * v.shape[3]
    mean = {n: sums[n] / counts[n] for n in names}
    delta = {}
    for c in convs:
        node = nodes[c]
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        q, s = weight_int8(w)
        wq = q.astype(np.float64) * s.reshape(-1, 1, 1, 1)
        x = node.input[0]
        delta[c] = (w.astype(np.float64).sum(axis=(2, 3)) @ mean[x]
                    - wq.sum(axis=(2, 3)) @ mean[f"{x}_DQ_out"])
    return delta


def quantize_device(float_path: Path, frames: Sequence[np.ndarray], out_path: Path, *,
                    exclude: Iterable[str] = (), float_stem: int = FLOAT_STEM,
                    progress: Callable[[Iterable[int]], Iterable[int]] | None = None
                    ) -> dict[str, Any]:
    """Write the TensorRT encoding of `float_path` to `out_path`; returns what it did (for the
    recipe): the convs kept float and the number quantized."""
    import onnx

    convs, stem = conv_plan(float_path, exclude, float_stem)
    nodes = {n.name: n for n in onnx.load(str(float_path), load_external_data=False).graph.node}
    tensors = list(dict.fromkeys(nodes[c].input[0] for c in convs))
    amax = activation_amax(float_path, tensors, frames, progress=progress)
    write_qdq(float_path, out_path, amax, convs)
    delta = bias_correction(float_path, out_path, convs, frames, progress=progress)
    write_qdq(float_path, out_path, amax, convs, bias_delta=delta)
    log.debug("device int8: %d convs quantized, %s float", len(convs), ", ".join(stem))
    return {"quantized_convs": len(convs), "float_stem": stem}


def recipe(frames: int, kept_in_float: list[str], stem: list[str]) -> dict[str, Any]:
    """The manifest's `recipe:` of the device encoding (`kept_in_float`: the gate's labels)."""
    from lepton_edge.compiler.build import versions

    return {
        "tool": "lepton-edge Q/DQ writer (compiler/device_int8.py), ONNX Runtime CPU passes",
        "calibration": "MSE-optimal symmetric amax per tensor (strided subsample of each frame)",
        "frames": frames,
        "kept_in_float": [*kept_in_float, *stem],
        "activations": "int8 symmetric (zero point 0), per tensor",
        "weights": "int8 symmetric per-channel (axis 0)",
        "bias": "float (not quantized)",
        "bias_correction": "per layer: W*E[x] - Wq*E[Q(x)] on the quantized model's inputs",
        "placement": "Conv activation inputs and weights only (SiLU, Add, Concat, Split, "
                     "MaxPool, Resize float)",
        "versions": versions("onnx", "onnxruntime", "numpy", "lepton-edge"),
    }
