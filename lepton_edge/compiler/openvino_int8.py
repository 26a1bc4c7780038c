"""The OpenVINO INT8 encoding (`int8-openvino`): NNCF post-training quantization of the float
ONNX model, from the same calibration frames as the ONNX Runtime and TensorRT encodings.

The recipe measured in ../shared/INT8-NOTES.md (OpenVINO section): `openvino.convert_model`
(not `read_model`, which leaves conv biases unfused so bias correction does nothing), the MIXED
preset (symmetric weights, asymmetric activations), the YOLO head tail kept in float, full
bias correction. The IR keeps the model's dynamic H and W, so one file serves every letterbox
shape.

Two changes over that recipe, measured on the bundled YOLOv8n (NNCF 3.4, OpenVINO 2026.4,
agreement with float through the daemon's OpenVINO backend; "val": calibrated on 169 of the
331 calibration frames, scored on the other 162, which no recipe sees; "held-out": calibrated
on all 331, scored on the 323 frames of `evaluate:`). mAP50 all classes / classes with >= 20
reference boxes, then mAP50-95 all classes:

| recipe (shapes fed; NNCF overflow fix) | val | held-out |
|---|---|---|
| most common shape; first layer (the old default) | 0.966 / 0.996, 0.943 | 0.886 / 0.937, 0.864 |
| every frame at its own shape; first layer | 0.956 / 0.996, 0.937 | 0.891 / 0.956, 0.870 |
| most common shape; `OverflowFix.DISABLE` | 0.966 / 0.992, 0.936 | |
| every frame at its shape; `DISABLE` | 0.975 / 0.993, 0.965 | 0.909 / 0.953, 0.892 |
| the same, the first conv (`/model.0`) float | | 0.911 / 0.953, 0.937 (min20 mAP50-95) |
| the same, the first three convs float (now, 2026-12-02) | | 0.961 / 0.978 |

The committed `engines/yolov8n/openvino-int8` (an earlier build, 330 frames per its rt_info)
scores 0.918 / 0.967, 0.892 held-out; the old default, rerun today, does not reproduce it.

- Every calibration frame, each at its own letterbox shape: the most common shape of
  `calibration/yolov8n.yaml` is vtest's 640x512, so the old default never saw the street scene
  (bikes.mp4, 640x288) nor the photos, where most of the rarer classes are.
- `OverflowFix.DISABLE`: weights use the full 8-bit range instead of 7 bits on the first
  layer. NNCF's fix is for CPUs without VNNI (SSE, AVX2, AVX-512 without VNNI), whose 8-bit
  multiply can saturate; CPUs with AVX512_VNNI / AVX_VNNI / AMX (the measuring machine has
  AVX512_VNNI) do not need it. Pass `overflow_fix="first_layer_only"` for older targets.
- The stem in float (the first three convs, as the TensorRT encoding keeps them, see
  `compiler/device_int8.py`): they see the image, whose unsigned 0..1 range 8-bit activations
  cover worst, and they are narrow (3->16, 16->32, 32->32 channels), so INT8 gains little
  there. It lifts the held-out score most of all recipes tried (above); the speed is in
  calibration/README.md.
- Same graph (66 FakeQuantize either way), so the same speed: benchmark_app, throughput hint,
  640x512, 2 shared cores, alternating: committed model 71.9 / 70.1 fps, this recipe 71.8 /
  69.1 fps.

Tried and not kept: also keeping the class branch's final 1x1 convs (`cv3.i.2`), and those
and the box branch's (`cv2.i.2`), in float (val 0.955 and 0.955: no gain; speed not
measured), the MINMAX activation range estimator (val 0.889),
`AdvancedBiasCorrectionParameters(apply_for_all_nodes=True)` (not supported by NNCF 3.4), and
`nncf.quantize_with_accuracy_control` validated on those 162 calibration frames (max_drop
0.01, 10 revert steps, 59 FakeQuantize left: validation mAP50 0.962 -> 0.965, the target never
reached; held-out 0.923 / 0.955, 0.901 at 55.8 / 66.0 fps vs 71.9 / 70.1, 420 s to build).
The error is spread over the network, as calibration/README.md found for ONNX Runtime.
All-class mAP50 on 323 frames is dominated by 11 classes with fewer than 20 boxes (skateboard
has 1: its AP alone moves the mean by up to 0.06), so differences under ~0.03 are noise; 0.95
all-class on the held-out frames was not reached by any recipe tried.

`nncf` and `openvino` are imported inside `quantize_openvino` only.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lepton_edge.errors import CompileError

log = logging.getLogger(__name__)

SUBDIR = "openvino-int8"
# Every node under /model.22/ except the cv2/cv3 branches: the DFL box decode, final Concat
# and Sigmoid. Quantizing them drops mAP50-95 to 0.56..0.68 (INT8-NOTES.md).
HEAD_TAIL = r"/model\.22/(?!cv2|cv3)"
# nncf.OverflowFix values (a bad one is refused before the model is converted)
OVERFLOW_FIX = ("disable", "first_layer_only", "enable")


def available() -> tuple[bool, str]:
    """Whether nncf and openvino import here; never raises."""
    try:
        import nncf
        import openvino
    except Exception as err:  # ImportError, or a broken install raising anything else
        return False, (f"OpenVINO INT8 needs nncf and openvino ({type(err).__name__}: {err}); "
                       f"install them: pip install 'lepton-edge[openvino]'")
    return True, f"nncf {nncf.__version__}, openvino {openvino.__version__}"


def quantize_openvino(
    float_onnx: Path,
    calibration: Sequence[np.ndarray],
    out_dir: Path,
    *,
    ignored_patterns: Sequence[str] = (HEAD_TAIL,),
    subset_size: int | None = None,
    fast_bias_correction: bool = False,
    one_shape: bool = False,
    overflow_fix: str = "disable",
) -> list[str]:
    """Quantize `float_onnx` with NNCF and write `out_dir/openvino-int8/model.xml` and `.bin`.

    `calibration`: letterboxed (1,3,H,W) float32 tensors from
    `lepton_edge.pipeline.preprocess`; H and W may differ and every frame is fed at its own
    shape (`one_shape=True`: only the frames of the most common shape, the old default).
    `subset_size` defaults to all of them.
    `overflow_fix`: NNCF's `OverflowFix` value, "disable" (full 8-bit weights, for CPUs with
    VNNI or AMX), "first_layer_only" (NNCF's default) or "enable" (see the module docstring).
    Returns the two file paths relative to `out_dir`. Raises CompileError saying what to fix.

    On the bundled YOLOv8n this recipe scores agreement mAP50 0.909 (all classes) / 0.953
    (classes with >= 20 boxes), mAP50-95 0.892, on the 323 held-out frames, against 0.886 /
    0.937 / 0.864 for the old default; one quantization of the 331 frames takes about 65 s on
    2 CPU cores. Bare throughput is unchanged (same graph).
    """
    ok, why = available()
    if not ok:
        raise CompileError(why)
    import nncf
    import openvino as ov

    if overflow_fix not in OVERFLOW_FIX:
        raise CompileError(f"overflow_fix {overflow_fix!r}: expected one of "
                           f"{', '.join(OVERFLOW_FIX)}")
    frames = _check_calibration(calibration)
    if one_shape:
        frames = _one_shape(frames)
    started = time.monotonic()
    try:
        model = ov.convert_model(str(float_onnx))
    except Exception as err:  # OpenVINO's conversion errors have several types
        raise CompileError(f"{float_onnx}: OpenVINO cannot convert this model ({err})") from err
    input_name = model.inputs[0].get_any_name()
    dataset = nncf.Dataset(frames, lambda x: {input_name: x})
    missing = [p for p in ignored_patterns if not _matches(model, p)]
    if missing:
        raise CompileError(f"{float_onnx}: no node matches the ignored pattern(s) {missing}; "
                           f"this is not a YOLOv8-style head: pass ignored_patterns for it")
    try:
        quantized = nncf.quantize(
            model, dataset, preset=nncf.QuantizationPreset.MIXED,
            subset_size=subset_size or len(frames), fast_bias_correction=fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(patterns=list(ignored_patterns)),
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix(overflow_fix)),
        )
    except Exception as err:  # nncf raises RuntimeError/ValueError/its own errors
        raise CompileError(f"NNCF could not quantize {float_onnx.name} "
                           f"({type(err).__name__}: {err})") from err
    target = Path(out_dir) / SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    xml = target / "model.xml"
    # compress_to_fp16=False: the float parts (head tail, biases) stay f32 on disk; the
    # runtime's inference precision decides how they run.
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    log.info("openvino int8: %d calibration frames (%s), %s bias correction, overflow fix %s, "
             "%.1f s -> %s", min(subset_size or len(frames), len(frames)),
             ", ".join(sorted({f"{x.shape[3]}x{x.shape[2]}" for x in frames})),
             "fast" if fast_bias_correction else "full", overflow_fix,
             time.monotonic() - started, xml)
    return [f"{SUBDIR}/model.xml", f"{SUBDIR}/model.bin"]


def module_pattern(conv: str) -> str:
    """The ignored-scope pattern of the module a Conv node belongs to (YOLOv8's Conv module:
    Conv, BatchNorm folded, SiLU): `/model.2/cv1/conv/Conv` -> everything under
    `/model.2/cv1/`, so its activation stays float too."""
    prefix = conv.rsplit("/conv/", 1)[0] if "/conv/" in conv else conv.rsplit("/", 1)[0]
    return "^" + re.escape(prefix + "/")


def recipe(frames: int, float_tail: bool, overflow_fix: str,
           stem: Sequence[str] = ()) -> dict[str, object]:
    """The manifest's `recipe:` of what `quantize_openvino` (as the compile calls it) did."""
    from lepton_edge.compiler.build import versions

    return {
        "tool": "NNCF (nncf.quantize on openvino.convert_model)",
        "calibration": "NNCF's default range estimators, every frame at its own shape",
        "frames": frames,
        "kept_in_float": (["head tail"] if float_tail else []) + list(stem),
        "activations": "uint8 asymmetric (MIXED preset)",
        "weights": "int8 symmetric per-channel (MIXED preset)",
        "bias_correction": "full (fast_bias_correction=False)",
        "overflow_fix": overflow_fix,
        "placement": "NNCF's default for the CPU target, head tail in the ignored scope",
        "versions": versions("openvino", "nncf", "numpy", "lepton-edge"),
    }


def _check_calibration(calibration: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = list(calibration)
    if not frames:
        raise CompileError("the calibration set is empty; give it frames (a folder of images or "
                           "a video) representative of the cameras")
    for i, x in enumerate(frames):
        if x.ndim != 4 or x.shape[:2] != (1, 3) or x.dtype != np.float32:
            raise CompileError(f"calibration frame {i} is {x.dtype} {x.shape}; expected float32 "
                               f"(1, 3, H, W) from lepton_edge.pipeline.preprocess.letterbox")
    return frames


def _one_shape(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames at the most common letterbox shape (`one_shape=True`). An earlier measurement
    (520 held-out frames of two scenes, agreement mAP50 all classes / 5 classes with >= 20
    reference boxes) had these 201 frames at 640x512 0.94 / 0.95; all 269 padded to 640x512
    0.86 / 0.96; mixed shapes as they are 0.87. On `calibration/yolov8n.yaml` with the
    full-range weights, mixed shapes are better on both splits (module docstring)."""
    shapes = [x.shape[2:] for x in frames]
    common = max(set(shapes), key=shapes.count)
    kept = [x for x in frames if x.shape[2:] == common]
    if len(kept) < len(frames):
        log.info("openvino int8: calibrating on the %d of %d frames at %dx%d (the most common "
                 "letterbox shape)", len(kept), len(frames), common[1], common[0])
    return kept


def _matches(model: object, pattern: str) -> bool:
    rx = re.compile(pattern)  # NNCF matches ignored-scope patterns with re.match too
    return any(rx.match(op.get_friendly_name()) for op in model.get_ops())  # type: ignore[attr-defined]
