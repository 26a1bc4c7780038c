"""Box overlap and non-maximum suppression, plain numpy."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of boxes a (N,4) and b (M,4), xyxy."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first."""
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        overlap = box_iou(xyxy[i : i + 1], xyxy[order[1:]])[0]
        order = order[1:][overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray, iou: float
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Offsets each class into its own region of the plane (the usual trick) and runs one NMS.
    """
    if xyxy.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offset = class_id.astype(xyxy.dtype)[:, None] * (float(xyxy.max()) + 1.0)
    return nms(xyxy + offset, score, iou)
