"""Decoding raw model outputs into `Detections` (score filter, class-aware NMS, source pixels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.pipeline.nms import batched_nms
from lepton_edge.pipeline.preprocess import LetterboxPlan


@dataclass(frozen=True)
class DecodeSettings:
    """What to keep: score floor, NMS IoU, at most `max_detections`, optional class subset."""

    score: float = 0.35
    iou: float = 0.5
    max_detections: int = 300
    class_ids: tuple[int, ...] | None = None


def decode_yolov8(output: np.ndarray, plan: LetterboxPlan, settings: DecodeSettings) -> Detections:
    """Decode one image's YOLOv8 output `(4 + C, N)` float32: cx, cy, w, h in input pixels, then
    C sigmoid class scores (no objectness). The score filter runs first, so NMS sees few boxes."""
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"YOLOv8 output must be (4 + classes, anchors), got {output.shape}")
    cls = output[4:]
    if settings.class_ids is not None:
        cls = cls[list(settings.class_ids)]
    best = cls.max(axis=0)
    cand = np.flatnonzero(best >= settings.score)
    if cand.size == 0:
        return Detections.empty()
    scores = best[cand].astype(np.float32)
    class_id = cls[:, cand].argmax(axis=0)
    if settings.class_ids is not None:
        class_id = np.asarray(settings.class_ids, dtype=np.int64)[class_id]
    cx, cy, w, h = output[0, cand], output[1, cand], output[2, cand], output[3, cand]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    keep = batched_nms(xyxy, scores, class_id, settings.iou)[: settings.max_detections]
    return Detections(plan.to_source(xyxy[keep]), scores[keep], class_id[keep].astype(np.int32))


Decoder = Callable[[np.ndarray, LetterboxPlan, DecodeSettings], Detections]

DECODERS: dict[str, Decoder] = {"yolov8": decode_yolov8}


def get_decoder(family: str) -> Decoder:
    """The decoder of a model family named in an artifact's manifest."""
    try:
        return DECODERS[family]
    except KeyError:
        raise ValueError(
            f"no decoder for model family {family!r}; known: {', '.join(sorted(DECODERS))}"
        ) from None
