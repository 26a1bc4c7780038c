"""The `compile` and `eval` subcommands (wired into `lepton-edge` by lepton_edge.cli).

Errors are CompileError / ModelError with one clear line; the CLI prints it and exits with its
`exit_code`. Both check for the `[compile]` extra before doing anything, and a failed `compile`
removes the artifact directory it created (a directory that existed before is left as it was).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
from pathlib import Path

from lepton_edge.compiler.calibration import DEFAULT_COUNT, DEFAULT_EVAL_COUNT
from lepton_edge.compiler.device_int8 import FLOAT_STEM
from lepton_edge.compiler.openvino_int8 import OVERFLOW_FIX
from lepton_edge.compiler.quantize import METHODS, QuantSettings
from lepton_edge.compiler.trt_calib_cache import DEFAULT_VERSION
from lepton_edge.errors import CompileError

log = logging.getLogger("lepton_edge.compile")

# What the [compile] extra installs (import names): the accuracy gate's COCO evaluation, the
# progress bars, and sympy for ONNX Runtime's quantization tools.
COMPILE_EXTRA = ("faster_coco_eval", "tqdm", "sympy")


def require_compile_extra(command: str) -> None:
    """Refuse to start `command` when a package of the [compile] extra is missing, instead of
    an ImportError halfway (with a half-written artifact behind)."""
    missing = [m for m in COMPILE_EXTRA if not _importable(m)]
    if missing:
        raise CompileError(f"{command} needs the compile extra ({', '.join(missing)} not "
                           f"installed): pip install 'lepton-edge[compile]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return False


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="float ONNX model (an Ultralytics export)")
    parser.add_argument("--calib", type=Path, required=True,
                        help="calibration frames: an image folder, a video, or a YAML spec "
                             "(calibration/yolov8n.yaml) that also names held-out frames")
    parser.add_argument("--name", required=True, help="artifact name: writes engines/NAME/")
    parser.add_argument("--out", type=Path, default=Path("engines"),
                        help="folder the artifact directory goes in (default: engines)")
    parser.add_argument("--eval", dest="eval_path", type=Path, default=None,
                        help="held-out frames for the accuracy gate (default: from --calib)")
    parser.add_argument("--calib-count", type=int, default=DEFAULT_COUNT,
                        help=f"frames sampled from a video or folder (default {DEFAULT_COUNT})")
    parser.add_argument("--calib-method", choices=METHODS, default="percentile",
                        help="activation range calibration (default percentile)")
    parser.add_argument("--percentile", type=float, default=QuantSettings.percentile,
                        help="percentile of |x| kept by --calib-method percentile")
    parser.add_argument("--floor", type=float, default=0.95,
                        help="minimum agreement mAP50 with float over the classes with >= 20 "
                             "reference boxes (all classes when none has 20) (default 0.95)")
    parser.add_argument("--mark-below-floor", action="store_true",
                        help="write int8-cpu even when it stays below --floor, marked "
                             "below_floor in the manifest (the daemon warns before running "
                             "it), instead of failing; other encodings are always marked")
    parser.add_argument("--max-float-steps", type=int, default=6,
                        help="conv groups the gate may keep in float, one per step (default 6)")
    parser.add_argument("--no-float-tail", action="store_true",
                        help="quantize the YOLO head tail too (the gate will refuse it)")
    parser.add_argument("--no-device", action="store_true",
                        help="skip the TensorRT-shaped (symmetric) encoding")
    parser.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO encoding")
    parser.add_argument("--no-fp16", action="store_true",
                        help="skip the float16 model (TensorRT's precision: fp16)")
    parser.add_argument("--openvino-overflow-fix", default="disable",
                        choices=OVERFLOW_FIX,
                        help="NNCF weight range: disable = full 8 bits, for CPUs with VNNI/AMX "
                             "(default); first_layer_only or enable for older x86 CPUs")
    parser.add_argument("--float-stem", type=int, default=FLOAT_STEM, metavar="N",
                        help="the first N convs stay float in the TensorRT and OpenVINO INT8 "
                             f"encodings (they see the image; default {FLOAT_STEM}, 0 "
                             "quantizes them)")
    parser.add_argument("--plan", action="store_true",
                        help="also build the TensorRT plan (needs TensorRT and a GPU)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="engine cache for --plan (default: ARTIFACT/cache; the daemon's "
                             "is its state_dir)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="--plan: the input_size the daemon runs at (default: the model's "
                             "default size); the plan is the one the daemon looks up")
    parser.add_argument("--trt-version", type=int, default=DEFAULT_VERSION,
                        help=f"version in the calibration cache header (default {DEFAULT_VERSION})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_compile(args: argparse.Namespace) -> int:
    _logging()
    require_compile_extra("compile")
    from lepton_edge.compiler.build import CompileOptions, compile_model

    if not 0.0 <= args.floor <= 1.0:
        raise CompileError(f"--floor must be between 0 and 1, got {args.floor}")
    if args.float_stem < 0:
        raise CompileError(f"--float-stem must be >= 0, got {args.float_stem}")
    if not 0.0 < args.percentile <= 100.0:
        raise CompileError(f"--percentile must be in (0, 100], got {args.percentile}")
    opts = CompileOptions(
        model=args.model, calib=args.calib, name=args.name, out_root=args.out,
        eval_path=args.eval_path, count=args.calib_count,
        quant=QuantSettings(method=args.calib_method, percentile=args.percentile),
        floor=args.floor, max_float_steps=args.max_float_steps,
        mark_below_floor=args.mark_below_floor,
        float_tail=not args.no_float_tail, device=not args.no_device,
        openvino=not args.no_openvino, fp16=not args.no_fp16,
        openvino_overflow_fix=args.openvino_overflow_fix,
        device_float_stem=args.float_stem, openvino_float_stem=args.float_stem,
        plan=args.plan, state_dir=args.state_dir, plan_input_size=args.input_size,
        trt_version=args.trt_version, progress=not args.no_progress,
    )
    target = args.out / args.name
    fresh = not target.exists()
    try:
        out = compile_model(opts)
    except BaseException:
        if fresh and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)  # no half-written artifact left behind
            log.error("compile: removed the incomplete %s", target)
        raise
    print(f"compiled {out}")
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", type=Path, help="artifact directory (engines/NAME)")
    parser.add_argument("--data", type=Path, required=True,
                        help="frames: image folder, video, or YAML spec (its evaluate section)")
    parser.add_argument("--coco", type=Path, default=None,
                        help="COCO-format annotations for --data images: score against ground "
                             "truth instead of against the float model")
    parser.add_argument("--count", type=int, default=DEFAULT_EVAL_COUNT,
                        help=f"frames sampled from a video (default {DEFAULT_EVAL_COUNT})")
    parser.add_argument("--backend", default="onnxruntime",
                        help="backend that runs the encodings (default onnxruntime)")
    parser.add_argument("--precision", action="append", default=None,
                        help="precision to score (repeatable; default: every one in the artifact)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def run_eval(args: argparse.Namespace) -> int:
    _logging()
    require_compile_extra("eval")
    from lepton_edge.artifact import check_runnable, load_artifact
    from lepton_edge.compiler import accuracy
    from lepton_edge.compiler.calibration import load_frames_only

    art = load_artifact(args.artifact)
    check_runnable(art)  # the daemon's check: decoder family, input spec
    frames = load_frames_only(args.data, count=args.count)
    if not len(frames):
        raise CompileError(f"{args.data}: no frames to evaluate")
    precisions = args.precision or sorted({m["precision"] for m in art.models.values()})
    truth = None
    if args.coco is not None:
        if not args.coco.is_file():
            raise CompileError(f"{args.coco}: annotations file not found")
        try:
            annotations = json.loads(args.coco.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CompileError(f"{args.coco}: not COCO JSON ({err})") from err
        truth = accuracy.coco_truth(annotations, frames.origins, art.classes)
    else:
        reference = accuracy.detect(art, frames, backend=args.backend, precision="fp32",
                                    settings=accuracy.REFERENCE)
    rows = {}
    for precision in precisions:
        run = accuracy.detect(art, frames, backend=args.backend, precision=precision)
        score = (accuracy.coco_map(truth, run.detections) if truth is not None
                 else accuracy.agreement(reference.detections, run.detections))
        rows[precision] = {**score.as_dict(), "ms_per_frame": round(run.ms_per_frame, 2)}
    against = "COCO ground truth" if truth is not None else "fp32 detections (agreement)"
    if args.json:
        print(json.dumps({"against": against, "scores": rows}, indent=2))
    else:
        print(f"{art.root} on {len(frames)} frames of {args.data}, against {against}:")
        for p, r in rows.items():
            n = accuracy.MIN_CLASS_BOXES
            frequent = r[f"map50_min{n}"]
            print(f"  {p:6s} mAP50 {r['map50']:.3f}  mAP50-95 {r['map50_95']:.3f}  "
                  f"({r['classes_scored']} classes; mAP50 "
                  f"{'n/a' if frequent is None else f'{frequent:.3f}'} over the "
                  f"{r[f'classes_scored_min{n}']} with >= {n} boxes)  "
                  f"{r['ms_per_frame']:.1f} ms/frame")
    return 0


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
