"""The compile steps: float model in, artifact directory `engines/<name>/` out.

Each step is a function run under `step()`, which logs one uniform line with its outcome and
duration (`compile: calibrate ✓ 41.2s 331 frames`). The INT8 gate: quantize with the YOLO head
tail in float, score the CPU encoding against float on held-out frames, and while it is below
the floor keep the most sensitive conv groups in float, one at a time, up to `max_float_steps`;
every step (agreement and speed) is recorded in the manifest's accuracy report.

The floor applies to the agreement mAP50 over the classes with at least 20 reference boxes
(`map50_min20`; the all-class mAP50 when no class has 20, with a note in the log): on a few
hundred frames the all-class mean is decided by classes with 1 to 5 boxes. Every encoding is
scored (min20, all-class, class-agnostic mAP50, mAP50-95) and its manifest entry records that
`gate:` (with `floor` and `below_floor`) and its `recipe:` (calibration, what stays in float,
the tool and its versions). The primary encoding (`int8-cpu`) below the floor fails the
compile unless `mark_below_floor`; any other encoding below it is written and marked, with a
WARNING, and the daemon warns before it runs a marked one. The TensorRT encoding
(`int8-device`) is written by `device_int8.py`, not by ONNX Runtime's quantizer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_edge.artifact import Artifact, describe_onnx, load_artifact, write_manifest
from lepton_edge.compiler import accuracy, device_int8, fp16, trt_calib_cache, validate
from lepton_edge.compiler.calibration import DEFAULT_COUNT, Frames, FrameSet, load_frames
from lepton_edge.compiler.quantize import (
    QuantSettings,
    Ranges,
    collect_ranges,
    node_names,
    quantize_model,
)
from lepton_edge.errors import CompileError

log = logging.getLogger("lepton_edge.compile")

FILES = {"fp32": "model.onnx", "int8-cpu": "model.int8-cpu.onnx",
         "int8-device": "model.int8-device.onnx"}
CACHE_FILE = "calibration.cache"
# YOLOv8's head tail: everything in the Detect module but its two conv branches (the DFL box
# decode, the per-scale and final Concat, the Sigmoid). Quantized, the model detects nothing.
YOLO_TAIL = r"^/model\.\d+/(?!cv2|cv3)"


@dataclass(frozen=True)
class CompileOptions:
    """Everything `lepton-edge compile` was asked to do."""

    model: Path
    calib: Path
    name: str
    out_root: Path = Path("engines")
    eval_path: Path | None = None
    count: int = DEFAULT_COUNT
    quant: QuantSettings = field(default_factory=QuantSettings)
    floor: float = 0.95
    max_float_steps: int = 6
    mark_below_floor: bool = False  # int8-cpu below the floor: write and mark it, not fail
    float_tail: bool = True
    sensitivity_frames: int = 32
    device: bool = True  # also write (and score) the TensorRT-shaped encoding
    device_float_stem: int = device_int8.FLOAT_STEM  # first convs the device encoding keeps float
    openvino_float_stem: int = device_int8.FLOAT_STEM  # and the OpenVINO encoding
    fp16: bool = True  # also write (and score) the float16 model TensorRT's fp16 runs
    openvino: bool = True
    openvino_overflow_fix: str = "disable"  # NNCF OverflowFix: see compiler/openvino_int8.py
    plan: bool = False
    state_dir: Path | None = None
    plan_input_size: int | None = None  # the daemon's input_size (default: the model's)
    plan_max_batch: int = 1
    trt_version: int = trt_calib_cache.DEFAULT_VERSION
    progress: bool = True


@dataclass
class GateStep:
    kept_in_float: list[str]
    map50: float
    map50_95: float
    ms_per_frame: float
    restricted: dict[str, Any] = field(default_factory=dict)  # Score.restricted()
    gate_metric: str = "map50"
    gate_value: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The manifest's entry: scores only. Speeds are logged, not recorded: they vary with
        the machine and its load, and the rebuilt artifact must equal the committed one."""
        return {"kept_in_float": list(self.kept_in_float), "map50": round(self.map50, 4),
                "map50_95": round(self.map50_95, 4), **self.restricted}


@contextmanager
def step(name: str) -> Iterator[list[str]]:
    """Log `compile: <name> ✓ <seconds>s <details>` or `✗` with the error; details are what the
    step appends to the yielded list."""
    details: list[str] = []
    t0 = time.perf_counter()
    try:
        yield details
    except Exception as err:
        log.error("compile: %s ✗ %.1fs %s", name, time.perf_counter() - t0, err)
        raise
    log.info("compile: %s ✓ %.1fs %s", name, time.perf_counter() - t0, " ".join(details))


def compile_model(opts: CompileOptions) -> Path:
    """Run every step; return the artifact directory. Raises CompileError or ModelError."""
    with step("model") as d:
        out, base = prepare_output(opts)
        d.append(f"{opts.model} -> {out}")
    with step("frames") as d:
        frames = load_frames(opts.calib, count=opts.count, size=base.input.default_size,
                             eval_path=opts.eval_path)
        frames = Frames(_geometry(frames.calibrate, base), _geometry(frames.evaluate, base),
                        frames.source)
        d.append(f"{len(frames.calibrate)} to calibrate, {len(frames.evaluate)} held out")
    with step("calibrate") as d:
        ranges = collect_ranges(out / FILES["fp32"], frames.calibrate, opts.quant,
                                progress=_progress(opts, "calibrate"))
        d.append(f"{ranges.frames} frames, {len(ranges.ranges)} tensors, {opts.quant.method}")
    with step("float reference") as d:
        reference = accuracy.detect(base, frames.evaluate, settings=accuracy.REFERENCE)
        d.append(f"{reference.ms_per_frame:.1f} ms/frame")
    with step("int8-cpu gate") as d:
        kept, steps = gate(opts, out, base, frames, ranges, reference)
        best = steps[-1]
        d.append(f"{best.gate_metric} {best.gate_value:.3f} mAP50 {best.map50:.3f} "
                 f"mAP50-95 {best.map50_95:.3f} {len(kept)} nodes in float")
    report: dict[str, Any] = {
        "method": "agreement with fp32 (reference score >= 0.25; candidate score >= 0.001, "
                  "NMS IoU 0.7), faster-coco-eval bbox; *_min20: classes with >= 20 "
                  "reference boxes only; map50_agnostic: every class merged into one",
        "gate_metric": best.gate_metric,
        "floor": opts.floor,
        "min_class_boxes": accuracy.MIN_CLASS_BOXES,
        "frames": len(frames.evaluate),
        "evaluation_set": frames.evaluate.describe(),
        "reference_boxes": best_boxes(reference, frames),
        "int8-cpu": steps[-1].as_dict(),
        "curve": [s.as_dict() for s in steps],
    }
    models: dict[str, dict[str, Any]] = {
        "fp32": {"file": FILES["fp32"], "precision": "fp32"},
        "int8-cpu": {"file": FILES["int8-cpu"], "precision": "int8",
                     "encoding": "qdq-u8s8", "activations": "uint8 asymmetric",
                     "bias": "int32",
                     "recipe": ort_recipe(opts, ranges, "int8-cpu", best.kept_in_float)},
    }
    if opts.device:
        with step("int8-device") as d:
            plan = device_int8.quantize_device(out / FILES["fp32"], frames.calibrate,
                                               out / FILES["int8-device"], exclude=kept,
                                               float_stem=opts.device_float_stem,
                                               progress=_progress(opts, "int8-device"))
            checked = check_device_encoding(out / FILES["int8-device"],
                                            tail=tail_nodes(out / FILES["fp32"]))
            d.append(f"{checked} Q/DQ nodes TensorRT-shaped")
            score = _score(base, out, "int8-device", frames, reference)
            report["int8-device"] = {**score.as_dict(),
                                     "note": "run by ONNX Runtime on CPU; TensorRT consumes it"}
            models["int8-device"] = {"file": FILES["int8-device"], "precision": "int8",
                                     "encoding": "qdq-s8s8", "activations": "int8 symmetric",
                                     "bias": "float",
                                     "recipe": device_int8.recipe(
                                         len(frames.calibrate), best.kept_in_float,
                                         plan["float_stem"])}
            d.append(f"{score.gate_metric} {score.gate_value:.3f} mAP50 {score.map50:.3f} "
                     f"mAP50-95 {score.map50_95:.3f} {score.ms_per_frame:.1f} ms/frame "
                     f"(fp32 {reference.ms_per_frame:.1f})")
    if opts.fp16:
        with step("fp16") as d:
            models["fp16"], report["fp16"] = fp16.write_and_score(out, base, frames.evaluate,
                                                                  reference)
            models["fp16"]["recipe"] = fp16_recipe()
            d.append(f"mAP50 {report['fp16']['map50']:.3f}")
    if opts.openvino:
        openvino_step(opts, out, base, frames, reference, kept, models, report)
    with step("calibration cache") as d:
        scales = trt_calib_cache.scales_from_ranges(ranges.ranges)
        trt_calib_cache.write_cache(out / CACHE_FILE, scales, version=opts.trt_version)
        owner = models.get("int8-device", models["int8-cpu"])  # so the manifest hashes it
        owner.setdefault("extra_files", []).append(CACHE_FILE)
        d.append(f"{len(scales)} tensors, TRT-{opts.trt_version}")
    if opts.plan:
        plan_step(opts, out, base)
    for encoding, entry in models.items():
        if encoding in report:
            entry["gate"] = gate_record(encoding, report[encoding], opts.floor)
    with step("manifest") as d:
        manifest = dict(base.manifest)
        manifest.update({
            "name": opts.name,
            "models": models,
            "precisions": sorted({m["precision"] for m in models.values()}),
            "calibration": {"source": frames.source, "frames": len(frames.calibrate),
                            "sha256": frames.calibrate.sha256(),
                            "sets": frames.calibrate.describe()},
            "quantization": {**opts.quant.as_dict(), "float_tail": opts.float_tail,
                             "kept_in_float": kept},
            "accuracy": report,
        })
        path = write_manifest(out, manifest)
        load_artifact(out)  # what the daemon will do: refuse it now, not on the camera
        d.append(str(path))
    return out


def prepare_output(opts: CompileOptions) -> tuple[Path, Artifact]:
    """Check the model, create `engines/<name>/` and put the float model in it (byte-identical)."""
    src = opts.model
    if not src.is_file():
        raise CompileError(f"{src}: model file not found")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", opts.name):
        raise CompileError(f"--name {opts.name!r}: use letters, digits, '.', '_' or '-' only")
    describe = describe_onnx(src)  # raises ModelError "not a valid ONNX model"
    out = opts.out_root / opts.name
    out.mkdir(parents=True, exist_ok=True)
    dst = out / FILES["fp32"]
    if not (dst.exists() and dst.resolve() == src.resolve()):
        shutil.copyfile(src, dst)
    describe["name"] = opts.name
    describe["models"] = {"fp32": {"file": FILES["fp32"], "precision": "fp32"}}
    if describe["family"] != "yolov8":
        raise CompileError(f"{src}: model family {describe['family']!r} has no decoder for the "
                           f"accuracy gate; only YOLOv8-style detect models compile for now")
    base = _artifact(out, describe)
    return out, base


def _artifact(root: Path, manifest: dict[str, Any]) -> Artifact:
    from lepton_edge.artifact import InputInfo

    inp = manifest["input"]
    info = InputInfo(name=inp["name"], shape=tuple(inp["shape"]), stride=int(inp["stride"]),
                     default_size=int(inp["default_size"]))
    return Artifact(root=root, name=manifest["name"], family=manifest["family"], input=info,
                    classes=tuple(manifest["classes"]), models=manifest["models"],
                    manifest=manifest)


def _with_model(base: Artifact, root: Path, encoding: str, file: str) -> Artifact:
    models = {**base.models, encoding: {"file": file, "precision": "int8"}}
    return dataclasses.replace(base, root=root, models=models)


def _geometry(frames: FrameSet, base: Artifact) -> FrameSet:
    return frames.with_input(base.input.default_size, base.input.fixed_hw, base.input.stride)


def _progress(opts: CompileOptions, desc: str):
    if not opts.progress:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=f"compile: {desc}", unit="frame", leave=False)


def _score(base: Artifact, out: Path, encoding: str, frames: Frames,
           reference: accuracy.Run) -> GateStep:
    art = _with_model(base, out, encoding, FILES[encoding])
    run = accuracy.detect(art, frames.evaluate, precision="int8")
    s = accuracy.agreement(reference.detections, run.detections)
    return GateStep([], s.map50, s.map50_95, run.ms_per_frame, s.restricted(), s.gate_metric,
                    s.gate_value)


def check_device_encoding(path: Path, tail: list[str] | None = None) -> int:
    """Refuse a device encoding TensorRT would not build (compiler/validate.py), naming the
    node; returns the number of Q/DQ nodes checked."""
    return validate.validate(path, tail=tail, where=str(path))


def gate_record(encoding: str, scores: dict[str, Any], floor: float) -> dict[str, Any]:
    """The manifest's `gate:` of one encoding from its accuracy report entry: the score the
    floor applies to (min20, or all classes with a logged note when no class has 20 boxes),
    the other scores, the floor and whether it is below; a WARNING when it is."""
    n = accuracy.MIN_CLASS_BOXES
    min20 = scores.get(f"map50_min{n}")
    metric = f"map50_min{n}" if min20 is not None else "map50"
    if min20 is None:
        log.info("compile: %s: no class has %d reference boxes; its gate score is the "
                 "all-class mAP50", encoding, n)
    value = float(scores[metric])
    below = value < floor
    if below:
        log.warning("compile: %s is below the floor: %s %.3f < %g (all-class mAP50 %.3f); "
                    "written and marked below_floor", encoding, metric, value, floor,
                    scores["map50"])
    return {"metric": metric, "score": value, "floor": floor, "below_floor": below,
            f"map50_min{n}": min20, "map50": scores["map50"],
            "map50_agnostic": scores.get("map50_agnostic"), "map50_95": scores["map50_95"]}


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of `packages` (distribution names), for a recipe."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def ort_recipe(opts: CompileOptions, ranges: Ranges, encoding: str,
               kept_in_float: list[str]) -> dict[str, Any]:
    """How ONNX Runtime's quantizer made `encoding` (int8-cpu or int8-device)."""
    q = opts.quant
    device = encoding == "int8-device"
    method = f"percentile {q.percentile}" if q.method == "percentile" else q.method
    return {
        "tool": "ORT quantizer (onnxruntime.quantization.quantize_static, QDQ)",
        "calibration": f"{method} of the activations",
        "frames": ranges.frames,
        "kept_in_float": list(kept_in_float),
        "activations": "int8 symmetric (zero point 0)" if device else "uint8 asymmetric",
        "weights": "int8 symmetric " + ("per-channel (axis 0)" if q.per_channel
                                         else "per-tensor"),
        "bias": "float (not quantized)" if device else "int32 (quantized)",
        "bias_correction": "none",
        "placement": ("op types: " + ", ".join(q.op_types) if q.op_types
                      else "every op type ORT's QDQ quantizer handles"),
        "versions": versions("onnx", "onnxruntime", "numpy", "lepton-edge"),
    }


def fp16_recipe() -> dict[str, Any]:
    return {"tool": "onnxconverter-common float16 converter (compiler/fp16.py)",
            "calibration": "none", "kept_in_float": ["head tail"],
            "versions": versions("onnx", "onnxconverter-common", "numpy", "lepton-edge")}


def best_boxes(reference: accuracy.Run, frames: Frames) -> int:
    return int(sum(int((d.score >= accuracy.REFERENCE.score).sum())
                   for d in reference.detections))


def tail_nodes(model: Path) -> list[str]:
    """The YOLO head tail's node names (kept in float from the start)."""
    return [n for n in node_names(model) if re.match(YOLO_TAIL, n) and _in_head(n, model)]


def _in_head(name: str, model: Path, _cache: dict[Path, str] = {}) -> bool:  # noqa: B006
    if model not in _cache:
        # the Detect module is the one that makes the last node
        _cache[model] = node_names(model)[-1].split("/")[1]
    return name.split("/")[1] == _cache[model]


def conv_groups(model: Path, exclude: set[str]) -> dict[str, list[str]]:
    """Quantizable groups: each Conv with its activation (`/model.2/cv1/` -> conv, Sigmoid,
    Mul), keyed by the group prefix; nodes already excluded are left out."""
    names = node_names(model)
    groups: dict[str, list[str]] = {}
    for n in names:
        if n.endswith("/Conv") and n not in exclude:
            key = n.rsplit("/", 2)[0] + "/" if n.endswith("/conv/Conv") else n
            groups[key] = [m for m in names if m.startswith(key) and m not in exclude] \
                if key.endswith("/") else [n]
    return groups


def gate(opts: CompileOptions, out: Path, base: Artifact, frames: Frames, ranges: Ranges,
         reference: accuracy.Run) -> tuple[list[str], list[GateStep]]:
    """Quantize the CPU encoding and gate it; returns the nodes kept in float and the curve."""
    fp = out / FILES["fp32"]
    kept = tail_nodes(fp) if opts.float_tail else []
    steps: list[GateStep] = []

    def attempt(exclude: list[str], label: list[str]) -> GateStep:
        quantize_model(fp, ranges, out / FILES["int8-cpu"], encoding="int8-cpu",
                       exclude=exclude, settings=opts.quant)
        s = _score(base, out, "int8-cpu", frames, reference)
        s.kept_in_float = label
        log.info("compile: gate step %d: %s in float: %s %.3f mAP50 %.3f mAP50-95 %.3f, "
                 "%.1f ms/frame", len(steps), ", ".join(label) or "nothing", s.gate_metric,
                 s.gate_value, s.map50, s.map50_95, s.ms_per_frame)
        steps.append(s)
        return s

    head = ["head tail"] if opts.float_tail else []
    current = attempt(kept, head)
    if current.gate_metric == "map50":
        log.info("compile: no class has %d reference boxes on the held-out frames; the gate "
                 "scores the all-class mAP50", accuracy.MIN_CLASS_BOXES)
    if current.gate_value >= opts.floor or opts.max_float_steps <= 0:
        return _verdict(opts, kept, steps)
    ranking = sensitivity(opts, out, base, frames, ranges, kept)
    label = list(head)
    for key, nodes in ranking[: opts.max_float_steps]:
        kept = kept + nodes
        label = [*label, key]
        current = attempt(kept, label)
        if current.gate_value >= opts.floor:
            break
    return _verdict(opts, kept, steps)


def _verdict(opts: CompileOptions, kept: list[str],
             steps: list[GateStep]) -> tuple[list[str], list[GateStep]]:
    last = steps[-1]
    if last.gate_value >= opts.floor:
        return kept, steps
    tried = "; ".join(f"{', '.join(s.kept_in_float) or 'nothing'} in float -> "
                      f"{s.gate_value:.3f}" for s in steps)
    if opts.mark_below_floor:
        return kept, steps  # gate_record() warns and marks it below_floor
    raise CompileError(
        f"INT8 accuracy gate failed: agreement {last.gate_metric} {last.gate_value:.3f} "
        f"(all-class mAP50 {last.map50:.3f}) < floor {opts.floor} after {len(steps)} "
        f"step(s) ({tried}); allow more layers in float with --max-float-steps, try "
        f"--calib-method, lower --floor, or write it marked below_floor with "
        f"--mark-below-floor")


def sensitivity(opts: CompileOptions, out: Path, base: Artifact, frames: Frames,
                ranges: Ranges, kept: list[str]) -> list[tuple[str, list[str]]]:
    """Rank conv groups by how much keeping each one alone in float brings the CPU model's raw
    outputs closer to float's, on a few held-out frames (most helpful first)."""
    fp = out / FILES["fp32"]
    n = min(opts.sensitivity_frames, len(frames.evaluate))
    idx = [round(i * (len(frames.evaluate) - 1) / max(1, n - 1)) for i in range(n)]
    sub = FrameSet([frames.evaluate.frames[i] for i in idx],
                   [frames.evaluate.origins[i] for i in idx],
                   frames.evaluate.size, frames.evaluate.fixed, frames.evaluate.stride)
    ref = accuracy.raw_outputs(base, sub)
    probe = out / "sensitivity.onnx"
    art = _with_model(base, out, "int8-cpu", probe.name)
    scores: list[tuple[float, str, list[str]]] = []
    groups = conv_groups(fp, set(kept))
    wrap = _progress(opts, "sensitivity")
    items = list(groups.items())
    try:
        for k in wrap(range(len(items))) if wrap else range(len(items)):
            key, nodes = items[k]
            quantize_model(fp, ranges, probe, encoding="int8-cpu", exclude=kept + nodes,
                           settings=opts.quant)
            err = accuracy.output_error(ref, accuracy.raw_outputs(art, sub, precision="int8"))
            scores.append((err, key, nodes))
    finally:
        probe.unlink(missing_ok=True)
    scores.sort(key=lambda t: t[0])
    log.info("compile: most sensitive: %s",
             ", ".join(f"{k} ({e:.4f})" for e, k, _ in scores[:8]))
    return [(k, nodes) for _, k, nodes in scores]


def openvino_step(opts: CompileOptions, out: Path, base: Artifact, frames: Frames,
                  reference: accuracy.Run, kept: list[str], models: dict[str, Any],
                  report: dict[str, Any]) -> None:
    """The OpenVINO engineer's NNCF encoding, when that module is present and can run."""
    try:
        from lepton_edge.compiler import openvino_int8  # type: ignore[attr-defined]
    except ImportError:
        log.info("compile: int8-openvino skipped (lepton_edge.compiler.openvino_int8 missing)")
        return
    ok, why = openvino_int8.available()
    if not ok:
        log.info("compile: int8-openvino skipped (%s)", why)
        return
    with step("int8-openvino") as d:
        patterns = [YOLO_TAIL.replace(r"\d+", base_head(out))] if opts.float_tail else []
        stem = device_int8.conv_plan(out / FILES["fp32"], (), opts.openvino_float_stem)[1]
        patterns += [openvino_int8.module_pattern(conv) for conv in stem]
        files = openvino_int8.quantize_openvino(out / FILES["fp32"], frames.calibrate, out,
                                                ignored_patterns=patterns,
                                                overflow_fix=opts.openvino_overflow_fix)
        models["int8-openvino"] = {"file": files[0], "extra_files": list(files[1:]),
                                   "precision": "int8", "encoding": "openvino-nncf",
                                   "overflow_fix": opts.openvino_overflow_fix,
                                   "recipe": openvino_int8.recipe(
                                       len(frames.calibrate), opts.float_tail,
                                       opts.openvino_overflow_fix, stem)}
        art = dataclasses.replace(base, root=out, models={**base.models, **models})
        run = accuracy.detect(art, frames.evaluate, backend="openvino", precision="int8")
        s = accuracy.agreement(reference.detections, run.detections)
        report["int8-openvino"] = {"map50": round(s.map50, 4), "map50_95": round(s.map50_95, 4),
                                   **s.restricted(), "backend": "openvino"}
        d.append(f"{s.gate_metric} {s.gate_value:.3f} mAP50 {s.map50:.3f} "
                 f"mAP50-95 {s.map50_95:.3f} {run.ms_per_frame:.1f} ms/frame")


def base_head(out: Path) -> str:
    return re.escape(node_names(out / FILES["fp32"])[-1].split("/")[1].split(".")[-1])


def plan_step(opts: CompileOptions, out: Path, base: Artifact, plans: Any = None) -> None:
    """Build the TensorRT plan of the device encoding into the engine cache (`--plan`), with
    the settings the daemon derives for the same input size (`plan.plan_settings`). `plans`
    is a `backends.tensorrt.plan.TensorRtPlans` (default: this machine's)."""
    from lepton_edge.backends.tensorrt import plan as trt_plan

    if plans is None:
        ok, why = trt_plan.available()
        if not ok:
            raise CompileError(f"--plan: TensorRT cannot build here ({why}); install "
                               f"'lepton-edge[tensorrt]' on a machine with an NVIDIA GPU, or "
                               f"drop --plan (the daemon builds the plan on first start)")
    with step("tensorrt plan") as d:
        settings = trt_plan.plan_settings(opts.plan_input_size or base.input.default_size,
                                          base.input.stride, opts.plan_max_batch)
        state = opts.state_dir or out / "cache"
        built = trt_plan.build_plan(out / FILES["int8-device"], state, settings, plans)
        d.append(str(built.path))
