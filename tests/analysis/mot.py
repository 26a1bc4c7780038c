"""TUD-Campus (the MOT ground truth `motmetrics` ships) and detections derived from it with
seeded jitter, misses and false positives, scored with IDF1 / MOTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.pipeline.nms import box_iou

GtFrame = list[tuple[int, np.ndarray]]  # (object id, xyxy)


def tud_campus() -> dict[int, GtFrame]:
    import motmetrics

    path = Path(motmetrics.__file__).parent / "data" / "TUD-Campus" / "gt.txt"
    frames: dict[int, GtFrame] = {}
    for row in np.loadtxt(path, delimiter=","):
        f, i, x, y, w, h = int(row[0]), int(row[1]), *row[2:6]
        frames.setdefault(f, []).append((i, np.array([x, y, x + w, y + h], np.float32)))
    return frames


def noisy(frames: dict[int, GtFrame], seed: int, jitter: float = 0.05, miss: float = 0.1,
          false_positives: float = 0.3) -> dict[int, Detections]:
    """Per frame: each object kept with probability 1 - miss, its box jittered by `jitter` of
    its size, a score around 0.75; Poisson(false_positives) random person-sized boxes at
    scores 0.3-0.6."""
    rng = np.random.default_rng(seed)
    out = {}
    for f, rows in sorted(frames.items()):
        boxes, scores = [], []
        for _, b in rows:
            if rng.random() < miss:
                continue
            w, h = b[2] - b[0], b[3] - b[1]
            boxes.append(b + rng.normal(0, jitter, 4) * np.array([w, h, w, h]))
            scores.append(float(np.clip(rng.normal(0.75, 0.12), 0.3, 1.0)))
        for _ in range(rng.poisson(false_positives)):
            cx, cy = rng.uniform(0, 640), rng.uniform(100, 480)
            w, h = rng.uniform(30, 90), rng.uniform(60, 200)
            boxes.append(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
            scores.append(float(rng.uniform(0.3, 0.6)))
        xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        out[f] = Detections(xyxy, np.array(scores, np.float32), np.zeros(len(xyxy), np.int32))
    return out


def score(frames: dict[int, GtFrame], tracked: dict[int, Detections]) -> dict[str, float]:
    """IDF1, MOTA, ID switches, fragmentations over the frames in `tracked` (IoU >= 0.5)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for f in sorted(tracked):
        gt = frames[f]
        gt_ids = [i for i, _ in gt]
        gt_boxes = np.stack([b for _, b in gt])
        d = tracked[f]
        assert d.track_id is not None
        keep = d.track_id >= 0
        if keep.any():
            dist = 1.0 - box_iou(gt_boxes, d.xyxy[keep])
            dist[dist > 0.5] = np.nan  # motmetrics 1.4's iou_matrix uses np.asfarray (numpy 1)
        else:
            dist = np.zeros((len(gt_ids), 0))
        acc.update(gt_ids, d.track_id[keep].tolist(), dist)
    m = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "num_switches", "num_fragmentations"], name="run")
    return {k: float(m[k].iloc[0]) for k in m.columns}
