"""`POST /v1/vision/detection` in the DeepStack / CodeProject.AI format, so an NVR (Blue Iris,
Agent DVR) can use the box as its detector: multipart form field `image` (a JPEG or PNG),
optional `min_confidence` (0..1, default 0.4); the answer is
`{"success": true, "predictions": [{"label", "confidence", "x_min", "y_min", "x_max",
"y_max"}], "count", "inferenceMs"}`; a bad request gets 400 with `{"success": false, "error"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from lepton_edge.detections import Detections

DEFAULT_MIN_CONFIDENCE = 0.4


class BadRequest(ValueError):
    """The upload cannot be served; the message says why (sent back with a 400)."""


def decode_image(data: bytes) -> np.ndarray:
    if not data:
        raise BadRequest("the form field 'image' is empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadRequest(f"the form field 'image' ({len(data)} bytes) is not an image OpenCV "
                         f"can decode (send a JPEG or PNG)")
    return img


def parse_min_confidence(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_MIN_CONFIDENCE
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"min_confidence must be a number in 0..1, got {raw[:40]!r}") from None
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"min_confidence must be in 0..1, got {value}")
    return value


def predictions(dets: Detections, labels: Sequence[str], min_confidence: float,
                inference_ms: float) -> dict[str, Any]:
    keep = dets[dets.score >= min_confidence]
    preds = [
        {"label": labels[c] if 0 <= c < len(labels) else str(c), "confidence": round(s, 4),
         "x_min": round(b[0]), "y_min": round(b[1]), "x_max": round(b[2]), "y_max": round(b[3])}
        for b, s, c in zip(keep.xyxy.tolist(), keep.score.tolist(), keep.class_id.tolist(),
                           strict=True)
    ]
    return {"success": True, "predictions": preds, "count": len(preds),
            "inferenceMs": round(inference_ms, 1), "code": 200}
