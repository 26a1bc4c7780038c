"""Static INT8 quantization with ONNX Runtime: calibrate once, quantize many times.

`collect_ranges` runs the float model once over the calibration frames and keeps, for every
float activation tensor, its range (min/max, a percentile of |x|, or ORT's entropy threshold).
`quantize_model` turns those ranges into one explicitly quantized (Q/DQ) model per encoding and
exclusion set, without calibrating again:

- `int8-cpu`: unsigned asymmetric activations (U8S8), int32 bias: what ONNX Runtime's CPU
  kernels run fast (S8 activations are 3x slower there).
- `int8-device`: symmetric signed activations (zero point 0), float bias, per-channel weights
  on axis 0: what TensorRT's explicit quantization consumes (its parser rejects int32 bias).
  The compile no longer ships this one (it agreed with float at 0.916 min20): the shipped
  device encoding comes from `device_int8.py` (conv-input placement, MSE scales, bias
  correction); this mode stays for comparison.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lepton_edge.errors import CompileError

log = logging.getLogger(__name__)

METHODS = ("percentile", "minmax", "entropy")


@dataclass(frozen=True)
class QuantSettings:
    """What the quantizer does with the collected ranges (recorded in the manifest)."""

    method: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    op_types: tuple[str, ...] = ()  # empty: every op type ONNX Runtime's QDQ quantizer knows

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"tool": "onnxruntime.quantization.quantize_static",
                                "format": "QDQ", "calibration": self.method,
                                "weights": "int8 symmetric " + ("per-channel (axis 0)"
                                                                if self.per_channel
                                                                else "per-tensor")}
        if self.method == "percentile":
            d["percentile"] = self.percentile
        if self.op_types:
            d["op_types"] = list(self.op_types)
        return d


@dataclass
class Ranges:
    """Per-tensor activation ranges from one calibration: {tensor: (low, high)}."""

    method: str
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    frames: int = 0

    def amax(self, name: str) -> float:
        lo, hi = self.ranges[name]
        return max(abs(lo), abs(hi))

    def save(self, path: Path) -> None:
        """Write the ranges as an ONNX Runtime calibration cache (JSON) `quantize_static` reads
        back with `calibration_cache_path=` (skipping calibration)."""
        from onnxruntime.quantization.calibrate import (
            CalibrationMethod,
            TensorData,
            TensorsData,
            save_tensors_data,
        )

        data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                for k, (lo, hi) in self.ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def float_tensors(model_path: Path, op_types: Sequence[str] = ()) -> list[str]:
    """Names of the float activation tensors of a model (inputs and outputs of its nodes of
    `op_types`, default: those ORT's QDQ quantizer handles; initializers excluded), in graph
    order."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(op_types or {*QDQRegistry, *QLinearOpsRegistry})  # quantize_static's default

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    inits = {i.name for i in model.graph.initializer}
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in ops:
            continue
        for name in [*node.input, *node.output]:
            if name and name not in inits and types.get(name) == onnx.TensorProto.FLOAT:
                seen.setdefault(name, None)
    return list(seen)


def collect_ranges(model_path: Path, calibration: Sequence[np.ndarray], settings: QuantSettings,
                   *, progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> Ranges:
    """Run the float model over `calibration` ((1,3,H,W) float32 tensors) once and return every
    float tensor's range under `settings.method`."""
    if settings.method not in METHODS:
        raise CompileError(f"unknown calibration method {settings.method!r}; choose one of "
                           f"{', '.join(METHODS)}")
    if not len(calibration):
        raise CompileError("the calibration set is empty")
    if settings.method == "entropy":
        return _ort_entropy(model_path, calibration, progress)
    import onnx
    import onnxruntime as ort

    names = float_tensors(model_path, settings.op_types)
    model = onnx.load(str(model_path))
    outputs = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    for n in names:
        if n not in outputs and n not in inputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    in_name = sess.get_inputs()[0].name
    tail = (100.0 - settings.percentile) / 100.0
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    tails: dict[str, list[np.ndarray]] = {n: [] for n in names}
    sizes: dict[str, int] = dict.fromkeys(names, 0)
    steps: Iterable[int] = range(len(calibration))
    for i in progress(steps) if progress else steps:
        x = calibration[i]
        values = dict(zip(out_names, sess.run(out_names, {in_name: x}), strict=True))
        values[in_name] = x
        for n in names:
            v = values[n].ravel()
            if v.size == 0:
                continue
            if settings.method == "percentile" and v.size > 64:
                # Keep both tails of this frame, 8x more than the global percentile of |x|
                # needs on average, so it is exact unless one frame dominates; the largest |x|
                # are among the k smallest and the k largest values.
                k = min(v.size // 2, math.ceil(v.size * tail * 8) + 1)
                part = np.partition(v, [k, v.size - k - 1])
                ends = np.abs(np.concatenate([part[:k], part[v.size - k:]]))
                tails[n].append(ends)
                sizes[n] += v.size
                vmin, vmax = float(part[:k].min()), float(part[v.size - k:].max())
            else:
                vmin, vmax = float(v.min()), float(v.max())
                if settings.method == "percentile":
                    tails[n].append(np.abs(v))
                    sizes[n] += v.size
            lo[n] = min(lo.get(n, vmin), vmin)
            hi[n] = max(hi.get(n, vmax), vmax)
    ranges: dict[str, tuple[float, float]] = {}
    for n in lo:
        if settings.method == "percentile":
            allv = np.concatenate(tails[n])
            r = min(allv.size, max(1, math.ceil(sizes[n] * tail)))
            t = float(np.partition(allv, allv.size - r)[allv.size - r])
            ranges[n] = (max(-t, lo[n]), min(t, hi[n]))
        else:
            ranges[n] = (lo[n], hi[n])
    ranges[in_name] = (lo[in_name], hi[in_name])  # the image: never clip it
    return Ranges(settings.method, ranges, len(calibration))


def _ort_entropy(model_path: Path, calibration: Sequence[np.ndarray],
                 progress: Callable[[Iterable[int]], Iterable[int]] | None) -> Ranges:
    """ONNX Runtime's entropy calibrator, fed in chunks of 16 frames (it keeps every
    intermediate tensor of what it is fed in memory)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="lepton-calib-") as tmp:
        cal = create_calibrator(model_path, None,
                                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=CalibrationMethod.Entropy)
        cal.set_execution_providers(["CPUExecutionProvider"])
        name = cal.infer_session.get_inputs()[0].name
        chunks: Iterable[int] = range(0, len(calibration), 16)
        for start in progress(chunks) if progress else chunks:
            batch = [{name: calibration[i]}
                     for i in range(start, min(start + 16, len(calibration)))]
            cal.collect_data(_Reader(batch))
        data = cal.compute_data()
    ranges = {k: (float(v.range_value[0]), float(v.range_value[1])) for k, v in data.items()}
    return Ranges("entropy", ranges, len(calibration))


class _Reader:
    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_model(float_path: Path, ranges: Ranges, out_path: Path, *, encoding: str,
                   exclude: Sequence[str] = (), settings: QuantSettings = QuantSettings()) -> Path:
    """Write the `encoding` ("int8-cpu" or "int8-device") Q/DQ model of `float_path` to
    `out_path`, from already collected `ranges`, keeping the nodes in `exclude` in float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod

    if encoding not in ("int8-cpu", "int8-device"):
        raise ValueError(f"unknown INT8 encoding {encoding!r}")
    device = encoding == "int8-device"
    extra = {
        "ActivationSymmetric": device,
        "WeightSymmetric": True,
        # TensorRT's ONNX parser rejects int32 bias; ORT's CPU kernels want it.
        "QuantizeBias": not device,
    }
    with tempfile.TemporaryDirectory(prefix="lepton-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        ranges.save(cache)
        try:
            quantize_static(
                str(float_path), str(out_path), None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(settings.op_types) or None,
                per_channel=settings.per_channel,
                activation_type=QuantType.QInt8 if device else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=str(cache),
                extra_options=extra,
            )
        except Exception as err:  # ORT raises ValueError, RuntimeError and onnx errors alike
            raise CompileError(f"{float_path}: ONNX Runtime could not quantize the model "
                               f"({type(err).__name__}: {err})") from err
    return out_path


def node_names(model_path: Path) -> list[str]:
    """Every node name of a model, in graph order."""
    import onnx

    return [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]


def qdq_summary(model_path: Path) -> dict[str, object]:
    """What a Q/DQ model looks like: counts, activation zero-point types, bias encoding (used by
    tests and the manifest to show the device model is TensorRT-shaped)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zp_types = sorted({str(inits[n.input[2]].dtype) for n in q
                       if len(n.input) > 2 and n.input[2] in inits})
    nonzero = sum(int(np.any(inits[n.input[2]] != 0)) for n in q
                  if len(n.input) > 2 and n.input[2] in inits)
    int32 = sum(1 for a in inits.values() if a.dtype == np.int32)
    return {"quantize_nodes": len(q), "activation_zero_point_types": zp_types,
            "nonzero_activation_zero_points": nonzero, "int32_initializers": int32}
