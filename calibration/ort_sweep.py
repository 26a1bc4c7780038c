"""ONNX Runtime int8-cpu: agreement and speed against the activation percentile (README.md).

    .venv/bin/python calibration/ort_sweep.py [--percentiles 99.98 99.99 99.999]
        [--migrate smooth|cle] [--alpha 0.5] [--calib-stride 1] [--out DIR]

One float pass over the calibration frames of `yolov8n.yaml` keeps, per tensor, its min/max and
the 0.03 % smallest and largest values of every frame, so every percentile of |x| is derived
from the same pass: exact at 99.999 and above, capped below (no frame contributes more than
0.03 % of its values to the tail; README.md). Each candidate is quantized with the
compiler's `quantize_model` (U8S8 QDQ, per-channel weights, head tail in float), scored with
the gate's functions on the held-out frames (min20 / all-class / class-agnostic mAP50) and
timed against float in one interleaved run (2 threads, the daemon's session options).

`--migrate` first moves a per-channel scale between each Conv -> SiLU -> Conv pair (29 in
YOLOv8n): activation channel c divided by s_c, the next conv's input channel c multiplied by
it. SiLU is not positive-homogeneous, so the Sigmoid branch is fed Mul(x/s, s) to keep the
function exact. `smooth`: s = amax(x)^alpha / amax(W)^(1 - alpha) (SmoothQuant);
`cle`: s = sqrt(range(W_prev) / range(W_next)) (cross-layer equalization).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lepton_edge.artifact import load_artifact  # noqa: E402
from lepton_edge.compiler import accuracy  # noqa: E402
from lepton_edge.compiler.build import Frames, _geometry, tail_nodes  # noqa: E402
from lepton_edge.compiler.calibration import FrameSet, load_frames  # noqa: E402
from lepton_edge.compiler.quantize import Ranges, float_tensors, quantize_model  # noqa: E402

KEEP = 3e-4  # fraction of each frame's values kept at each end


def session(model, *, disable_all: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if disable_all
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def with_outputs(model_path: Path, names: list[str]) -> bytes:
    import onnx

    m = onnx.load(str(model_path))
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT,
                                                                     None))
    return m.SerializeToString()


def tails(model_path: Path, calib: FrameSet) -> dict[str, dict]:
    """Per float tensor: min, max, element count and the kept ends of |x| of every frame."""
    names = float_tensors(model_path)
    sess = session(with_outputs(model_path, names), disable_all=True)
    outs = [o.name for o in sess.get_outputs()]
    image = sess.get_inputs()[0].name
    st = {n: {"lo": math.inf, "hi": -math.inf, "size": 0, "ends": []} for n in names}
    for i in range(len(calib)):
        x = calib[i]
        values = dict(zip(outs, sess.run(outs, {image: x}), strict=True))
        values[image] = x
        for n in names:
            v, d = values[n].ravel(), st[n]
            if not v.size:
                continue
            d["lo"], d["hi"] = min(d["lo"], float(v.min())), max(d["hi"], float(v.max()))
            d["size"] += v.size
            if v.size > 64:
                k = min(v.size // 2, math.ceil(v.size * KEEP) + 1)
                part = np.partition(v, [k, v.size - k - 1])
                v = np.concatenate([part[:k], part[v.size - k:]])
            d["ends"].append(np.abs(v))
    for n, d in st.items():
        d["ends"] = None if n == image else np.concatenate(d["ends"])  # never clip the image
    return st


def ranges_at(st: dict[str, dict], percentile: float, frames: int) -> Ranges:
    out = {}
    for n, d in st.items():
        if d["ends"] is None:
            out[n] = (d["lo"], d["hi"])
            continue
        r = min(d["ends"].size, max(1, math.ceil(d["size"] * (100 - percentile) / 100)))
        t = float(np.partition(d["ends"], d["ends"].size - r)[d["ends"].size - r])
        out[n] = (max(-t, d["lo"]), min(t, d["hi"]))
    return Ranges("percentile", out, frames)


def silu_pairs(m) -> list[tuple]:
    """(conv A, its Sigmoid, its Mul, conv B) where SiLU(A) feeds only B (group 1)."""
    users: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    pairs = []
    for a in m.graph.node:
        nxt = users.get(a.output[0], []) if a.op_type == "Conv" else []
        if sorted(n.op_type for n in nxt) != ["Mul", "Sigmoid"]:
            continue
        sig = next(n for n in nxt if n.op_type == "Sigmoid")
        mul = next(n for n in nxt if n.op_type == "Mul")
        b = users.get(mul.output[0], [])
        if (users.get(sig.output[0]) == [mul] and len(b) == 1 and b[0].op_type == "Conv"
                and all(at.i == 1 for at in b[0].attribute if at.name == "group")):
            pairs.append((a, sig, mul, b[0]))
    return pairs


def migrate(src: Path, dst: Path, calib: FrameSet, method: str, alpha: float) -> list[str]:
    """Write the scale-migrated (function-preserving) model; return the added Mul nodes."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    pairs = silu_pairs(m)
    amax: dict[str, np.ndarray] = {}
    if method == "smooth":
        names = [mul.output[0] for _, _, mul, _ in pairs]
        sess = session(with_outputs(src, names), disable_all=True)
        for i in range(0, len(calib), 5):
            for n, v in zip(names, sess.run(names, {sess.get_inputs()[0].name: calib[i]}),
                            strict=True):
                a = np.abs(v[0]).reshape(v.shape[1], -1).max(1)
                amax[n] = np.maximum(amax.get(n, a), a)
    added = []
    for k, (a, sig, mul, b) in enumerate(pairs):
        wa, ba, wb = (numpy_helper.to_array(inits[n]).astype(np.float64)
                      for n in (a.input[1], a.input[2], b.input[1]))
        r_next = np.abs(wb).max(axis=(0, 2, 3)) + 1e-12
        if method == "cle":
            s = np.sqrt((np.abs(wa).reshape(len(wa), -1).max(1) + 1e-12) / r_next)
        else:
            s = (amax[mul.output[0]] + 1e-6) ** alpha / r_next ** (1 - alpha)
        s = np.clip(s / np.exp(np.mean(np.log(s))), 1e-2, 1e2)
        for n, arr in ((a.input[1], wa / s[:, None, None, None]), (a.input[2], ba / s),
                       (b.input[1], wb * s[None, :, None, None])):
            inits[n].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), n))
        scale = f"migrate_scale_{k}"
        m.graph.initializer.append(numpy_helper.from_array(
            s.reshape(1, -1, 1, 1).astype(np.float32), scale))
        node = helper.make_node("Mul", [a.output[0], scale], [a.output[0] + "_rescaled"],
                                name=a.name + "_rescale")
        sig.input[0] = node.output[0]
        at = next(j for j, n in enumerate(m.graph.node) if n.name == sig.name)
        m.graph.node.insert(at, node)
        added.append(node.name)
    onnx.save(m, str(dst))
    return added


def time_models(paths: list[Path], frame: np.ndarray, rounds: int = 7) -> list[float]:
    sessions = [session(p) for p in paths]
    for s in sessions:
        for _ in range(3):
            s.run(None, {s.get_inputs()[0].name: frame})
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for s, t in zip(sessions, times, strict=True):
            t0 = time.perf_counter()
            for _ in range(10):
                s.run(None, {s.get_inputs()[0].name: frame})
            t.append(100 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--percentiles", type=float, nargs="+", default=[99.98, 99.99, 99.999])
    p.add_argument("--migrate", choices=["smooth", "cle"])
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--calib-stride", type=int, default=1, help="every n-th calibration frame")
    p.add_argument("--out", type=Path, help="keep the candidate models here")
    args = p.parse_args()

    engines = ROOT / "engines" / "yolov8n"
    fp = engines / "model.onnx"
    base = load_artifact(engines)
    f = load_frames(ROOT / "calibration" / "yolov8n.yaml", size=base.input.default_size)
    fr = Frames(_geometry(f.calibrate, base), _geometry(f.evaluate, base), f.source)
    c = fr.calibrate
    idx = range(0, len(c), args.calib_stride)
    calib = FrameSet([c.frames[i] for i in idx], [c.origins[i] for i in idx], c.size, c.fixed,
                     c.stride)
    reference = accuracy.detect(base, fr.evaluate, settings=accuracy.REFERENCE, threads=2)
    out = args.out or Path(tempfile.mkdtemp(prefix="ort-sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    exclude = tail_nodes(fp)
    model = fp
    if args.migrate:
        model = out / f"float-{args.migrate}.onnx"
        exclude += migrate(fp, model, calib, args.migrate, args.alpha)
    st = tails(model, calib)
    rows, paths = [], []
    for pct in args.percentiles:
        path = out / f"int8-cpu-p{pct}{'-' + args.migrate if args.migrate else ''}.onnx"
        quantize_model(model, ranges_at(st, pct, len(calib)), path, encoding="int8-cpu",
                       exclude=exclude)
        art = dataclasses.replace(base, root=out, models={
            **base.models, "int8-cpu": {"file": path.name, "precision": "int8"}})
        run = accuracy.detect(art, fr.evaluate, precision="int8", threads=2)
        s = accuracy.agreement(reference.detections, run.detections)
        rows.append({"percentile": pct, "migrate": args.migrate, "min20": round(s.map50_min, 4),
                     "all": round(s.map50, 4), "agnostic": round(s.map50_agnostic, 4),
                     "map50_95": round(s.map50_95, 4)})
        paths.append(path)
    ms = time_models([fp, *paths], fr.evaluate.tensor(0)[0])
    print(json.dumps({"float_ms": round(ms[0], 1)}))
    for row, m in zip(rows, ms[1:], strict=True):
        print(json.dumps({**row, "ms": round(m, 1), "speedup": round(ms[0] / m, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
