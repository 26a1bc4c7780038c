"""Accuracy of a quantized encoding: agreement with the float model, or COCO ground truth.

Models run through the daemon's own backends (`create_backend` + the artifact's decoder), so
the gate measures what the daemon will run. Agreement: the float model's detections with score
>= 0.25 are the reference boxes; the candidate's detections (score >= 0.001, NMS IoU 0.7, at
most 300, as COCO evaluation is done) are scored against them with faster-coco-eval
(mAP50, mAP50-95). 1.0 means the candidate finds what float finds, ranked alike.

COCO mAP averages classes with equal weight, so on a few hundred frames it is dominated by
classes with 2 to 5 reference boxes (their AP is 0, 0.5 or 1). Every score therefore also
carries the same evaluation restricted to classes with at least `min_class_boxes` (20)
reference boxes (`map50_min20`), which is what the gate's floor applies to (`gate_value`:
the all-class mAP50 when no class has that many boxes), and a class-agnostic mAP50
(`map50_agnostic`: every class merged into one, so a box found with the wrong class still
counts; how far the encoding moves boxes, apart from how it moves class scores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_edge.artifact import Artifact
from lepton_edge.backends import BackendOptions, create_backend
from lepton_edge.backends.base import TensorSpec
from lepton_edge.compiler.calibration import FrameSet
from lepton_edge.detections import Detections
from lepton_edge.errors import CompileError
from lepton_edge.pipeline.decode import DecodeSettings, get_decoder
from lepton_edge.pipeline.preprocess import pixels_from_tensor

log = logging.getLogger(__name__)

REFERENCE = DecodeSettings(score=0.25, iou=0.7, max_detections=300)
CANDIDATE = DecodeSettings(score=0.001, iou=0.7, max_detections=300)
MIN_CLASS_BOXES = 20


@dataclass(frozen=True)
class Score:
    """mAP50 and mAP50-95 of one candidate, over `frames` frames and `boxes` reference boxes in
    `classes` classes; `*_min` are the same over the `classes_min` classes that have at least
    `min_class_boxes` reference boxes (None when no class has that many)."""

    map50: float
    map50_95: float
    frames: int
    boxes: int
    classes: int = 0
    map50_min: float | None = None
    map50_95_min: float | None = None
    classes_min: int = 0
    min_class_boxes: int = MIN_CLASS_BOXES
    map50_agnostic: float | None = None

    @property
    def gate_metric(self) -> str:
        """The score the floor applies to: `map50_min20`, or `map50` when no class has
        `min_class_boxes` reference boxes."""
        return f"map50_min{self.min_class_boxes}" if self.map50_min is not None else "map50"

    @property
    def gate_value(self) -> float:
        return self.map50_min if self.map50_min is not None else self.map50

    def as_dict(self) -> dict[str, Any]:
        return {"map50": round(self.map50, 4), "map50_95": round(self.map50_95, 4),
                "frames": self.frames, "reference_boxes": self.boxes, **self.restricted()}

    def restricted(self) -> dict[str, Any]:
        """`classes_scored`, the `map50_minN` / `map50_95_minN` / `classes_scored_minN` and the
        `map50_agnostic` entries of a report."""
        n = self.min_class_boxes
        return {"classes_scored": self.classes,
                f"map50_min{n}": _round(self.map50_min),
                f"map50_95_min{n}": _round(self.map50_95_min),
                f"classes_scored_min{n}": self.classes_min,
                "map50_agnostic": _round(self.map50_agnostic)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


@dataclass(frozen=True)
class Run:
    """Detections of one encoding on every frame and its mean latency (ms/frame, batch 1)."""

    detections: list[Detections]
    ms_per_frame: float


def detect(artifact: Artifact, frames: FrameSet, *, backend: str = "onnxruntime",
           precision: str = "fp32", settings: DecodeSettings = CANDIDATE,
           threads: int = 0) -> Run:
    """Run `artifact` at `precision` on every frame through the daemon's backend and decoder."""
    decode = get_decoder(artifact.family)
    frames = frames.with_input(artifact.input.default_size, artifact.input.fixed_hw,
                               artifact.input.stride)
    options = BackendOptions(precision=precision, threads=threads)
    out: list[Detections] = []
    infer_s = 0.0
    with create_backend(backend, artifact, options) as model:
        for i in range(len(frames)):
            tensor, plan = frames.tensor(i)
            batch = as_input(tensor, model.input)
            t0 = time.perf_counter()
            raw = model.submit(batch).wait()
            infer_s += time.perf_counter() - t0
            out.append(decode(raw[0][0], plan, settings))
    return Run(out, 1000.0 * infer_s / max(1, len(frames)))


def raw_outputs(artifact: Artifact, frames: FrameSet, *, backend: str = "onnxruntime",
                precision: str = "fp32") -> list[np.ndarray]:
    """The model's first output for every frame, undecoded (for sensitivity ranking)."""
    frames = frames.with_input(artifact.input.default_size, artifact.input.fixed_hw,
                               artifact.input.stride)
    with create_backend(backend, artifact, BackendOptions(precision=precision)) as model:
        return [model.submit(as_input(frames.tensor(i)[0], model.input)).wait()[0][0]
                for i in range(len(frames))]


def as_input(tensor: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A letterboxed (1,3,H,W) float tensor in the layout and dtype the backend takes (the
    pixels it was made from, for a backend that normalizes in its graph)."""
    if spec.layout == "NHWC":
        return pixels_from_tensor(tensor)
    return tensor.astype(spec.dtype, copy=False)


def output_error(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
                 *, min_score: float = 0.1) -> float:
    """How far YOLOv8 raw outputs `(4 + C, N)` are from the reference where it matters: mean
    absolute class-score error plus box error (in units of 64 px) over the anchors whose
    reference score is at least `min_score`."""
    total, count = 0.0, 0
    for ref, cand in zip(reference, candidate, strict=True):
        mask = ref[4:].max(axis=0) >= min_score
        if not mask.any():
            continue
        total += float(np.abs(ref[4:, mask] - cand[4:, mask]).mean())
        total += float(np.abs(ref[:4, mask] - cand[:4, mask]).mean()) / 64.0
        count += 1
    return total / max(1, count)


def agreement(reference: Sequence[Detections], candidate: Sequence[Detections],
              *, min_score: float = REFERENCE.score,
              min_class_boxes: int = MIN_CLASS_BOXES) -> Score:
    """Score `candidate` detections against `reference` ones (score >= min_score kept)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference frames but {len(candidate)} candidate ones")
    truth = [d[d.score >= min_score] for d in reference]
    return coco_map(truth, candidate, min_class_boxes=min_class_boxes)


def coco_map(truth: Sequence[Detections], candidate: Sequence[Detections],
             *, min_class_boxes: int = MIN_CLASS_BOXES) -> Score:
    """COCO bbox mAP50 and mAP50-95 of `candidate` against boxes `truth` (one per frame), over
    every class with a box in `truth` and over those with at least `min_class_boxes` boxes."""
    from faster_coco_eval import COCO

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    classes: dict[int, int] = {}  # class -> reference boxes
    for i, d in enumerate(truth):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for box, cls in zip(d.xyxy.tolist(), d.class_id.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
            classes[int(cls)] = classes.get(int(cls), 0) + 1
    if not anns:
        raise CompileError("the reference has no detections on the evaluation frames, so "
                           "agreement cannot be scored; evaluate on frames with objects in them")
    results = []
    for i, d in enumerate(candidate):
        for box, s, cls in zip(d.xyxy.tolist(), d.score.tolist(), d.class_id.tolist(),
                               strict=True):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": s,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO({"images": images, "annotations": anns,
               "categories": [{"id": c + 1, "name": str(c)} for c in sorted(classes)]})
    frequent = sorted(c for c, n in classes.items() if n >= min_class_boxes)
    sizes = (len(truth), len(anns), len(classes))
    if not results:
        zero = 0.0 if frequent else None
        return Score(0.0, 0.0, *sizes, zero, zero, len(frequent), min_class_boxes, 0.0)
    dt = gt.loadRes(results)
    map50, map50_95 = _evaluate(gt, dt, sorted(classes))
    map50_min, map50_95_min = _evaluate(gt, dt, frequent) if frequent else (None, None)
    return Score(map50, map50_95, *sizes, map50_min, map50_95_min, len(frequent),
                 min_class_boxes, _agnostic_map50(images, anns, results))


def _agnostic_map50(images: list[dict[str, Any]], anns: list[dict[str, Any]],
                    results: list[dict[str, Any]]) -> float:
    """mAP50 with every class merged into one (category 1), the rest as `coco_map`."""
    from faster_coco_eval import COCO

    gt = COCO({"images": images, "annotations": [{**a, "category_id": 1} for a in anns],
               "categories": [{"id": 1, "name": "object"}]})
    dt = gt.loadRes([{**r, "category_id": 1} for r in results])
    return _evaluate(gt, dt, [0])[0]


def _evaluate(gt: Any, dt: Any, classes: list[int]) -> tuple[float, float]:
    """(mAP50, mAP50-95) over `classes` only (COCO averages them with equal weight)."""
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, dt, "bbox", print_function=log.debug)
    ev.params.catIds = [c + 1 for c in classes]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    map50_95, map50 = (max(0.0, float(v)) for v in ev.stats[:2])
    return map50, map50_95


def coco_truth(annotations: dict[str, Any], origins: Sequence[str],
               classes: Sequence[str]) -> list[Detections]:
    """Ground-truth boxes per frame from a COCO annotation dict, matched to frames by image
    file name (`origins` are `folder/name.jpg`); categories are matched to the model's class
    names."""
    by_name = {img["file_name"].rsplit("/", 1)[-1]: img["id"] for img in annotations["images"]}
    cat_to_class = {}
    for cat in annotations["categories"]:
        if cat["name"] in classes:
            cat_to_class[cat["id"]] = classes.index(cat["name"])
    per_image: dict[int, list[tuple[list[float], int]]] = {}
    for a in annotations["annotations"]:
        if a["category_id"] in cat_to_class and not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            per_image.setdefault(a["image_id"], []).append(
                ([x, y, x + w, y + h], cat_to_class[a["category_id"]]))
    out = []
    for origin in origins:
        name = origin.rsplit("/", 1)[-1]
        if name not in by_name:
            raise CompileError(f"{name}: no image of that file name in the annotations")
        boxes = per_image.get(by_name[name], [])
        xyxy = np.asarray([b for b, _ in boxes], np.float32).reshape(-1, 4)
        cls = np.asarray([c for _, c in boxes], np.int32)
        out.append(Detections(xyxy, np.ones(len(boxes), np.float32), cls))
    return out
