"""The OpenVINO INT8 encoding (`int8-openvino`): NNCF post-training quantization of the float
ONNX model, from the same calibration frames as the ONNX Runtime and TensorRT encodings.

The recipe measured in ../shared/INT8-NOTES.md (OpenVINO section): `openvino.convert_model`
(not `read_model`, which leaves conv biases unfused so bias correction does nothing), the MIXED
preset (symmetric weights, asymmetric activations), the YOLO head tail kept in float, full
bias correction. The IR keeps the model's dynamic H and W, so one file serves every letterbox
shape; NNCF sees the calibration frames of the most common shape (measured best).

`nncf` and `openvino` are imported inside `quantize_openvino` only.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import CompileError

log = logging.getLogger(__name__)

SUBDIR = "openvino-int8"
# Every node under /model.22/ except the cv2/cv3 branches: the DFL box decode, final Concat
# and Sigmoid. Quantizing them drops mAP50-95 to 0.56..0.68 (INT8-NOTES.md).
HEAD_TAIL = r"/model\.22/(?!cv2|cv3)"


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
) -> list[str]:
    """Quantize `float_onnx` with NNCF and write `out_dir/openvino-int8/model.xml` and `.bin`.

    `calibration`: letterboxed (1,3,H,W) float32 tensors from `lepton_edge.preprocess`; H and W
    may differ; only the frames of the most common shape are used. `subset_size` defaults to
    all of those. Returns the two file paths relative to `out_dir`. Raises CompileError saying
    what to fix.
    """
    ok, why = available()
    if not ok:
        raise CompileError(why)
    import nncf
    import openvino as ov

    frames = _one_shape(_check_calibration(calibration))
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
    log.info("openvino int8: %d calibration frames, %s bias correction, %.1f s -> %s",
             min(subset_size or len(frames), len(frames)),
             "fast" if fast_bias_correction else "full", time.monotonic() - started, xml)
    return [f"{SUBDIR}/model.xml", f"{SUBDIR}/model.bin"]


def _check_calibration(calibration: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = list(calibration)
    if not frames:
        raise CompileError("the calibration set is empty; give it frames (a folder of images or "
                           "a video) representative of the cameras")
    for i, x in enumerate(frames):
        if x.ndim != 4 or x.shape[:2] != (1, 3) or x.dtype != np.float32:
            raise CompileError(f"calibration frame {i} is {x.dtype} {x.shape}; expected float32 "
                               f"(1, 3, H, W) from lepton_edge.preprocess.letterbox")
    return frames


def _one_shape(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames at the most common letterbox shape. Measured on YOLOv8n against float (520
    held-out frames of two scenes, agreement mAP50 over all classes / over the 5 classes with
    >= 20 reference boxes): these 201 frames at 640x512 0.94 / 0.95; all 269 with the smaller
    ones padded to 640x512 0.86 / 0.96; mixed shapes fed as they are 0.87 / (not scored). No
    better, so the simplest. The IR keeps dynamic H and W for the other shapes."""
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
