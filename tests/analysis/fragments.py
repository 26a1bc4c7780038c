"""Fragmented tracks on a clip without ground truth: a track that is born away from the frame's
border shortly after, and close to where, a track of similar size was last seen is counted as a
fragment (the same object under a new id: an ID switch or a lost-and-refound track)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lepton_edge.detections import Detections


def fragments(tracked: Sequence[Detections], width: int, height: int, fps: float,
              gap_s: float = 2.0, border: float = 0.05) -> dict[str, int]:
    first: dict[int, tuple[int, np.ndarray]] = {}
    last: dict[int, tuple[int, np.ndarray]] = {}
    for i, d in enumerate(tracked):
        if d.track_id is None:
            continue
        for box, tid in zip(d.xyxy, d.track_id, strict=True):
            if tid < 0:
                continue
            first.setdefault(int(tid), (i, box))
            last[int(tid)] = (i, box)
    bx, by = border * width, border * height
    count = 0
    for tid, (i, box) in first.items():
        if i == 0 or box[0] < bx or box[1] < by or box[2] > width - bx or box[3] > height - by:
            continue  # there from the start, or entering at the border: a new object
        h = box[3] - box[1]
        for other, (j, ob) in last.items():
            if other != tid and 0 < i - j <= gap_s * fps and \
                    np.hypot(*((box[:2] + box[2:]) / 2 - (ob[:2] + ob[2:]) / 2)) < h:
                count += 1
                break
    return {"tracks": len(first), "fragments": count}
