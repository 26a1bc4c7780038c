"""Letterbox preprocessing, shared by the daemon and the compiler's calibration.

A frame (uint8 BGR, HxWx3) is resized keeping its aspect ratio, padded with gray (114), turned
into RGB, scaled to 0..1 and laid out planar (NCHW float32). Buffers are allocated once per
source shape and reused, and the padding is written only once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxPlan:
    """Geometry of one letterbox: source size, model input size, scale and padding (pixels)."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    new_w: int
    new_h: int
    pad_x: int
    pad_y: int
    scale: float

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes (N,4 float, model input pixels) back to source pixels, clipped."""
        out = np.empty_like(xyxy)
        out[:, [0, 2]] = (xyxy[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (xyxy[:, [1, 3]] - self.pad_y) / self.scale
        np.clip(out[:, [0, 2]], 0, self.src_w, out=out[:, [0, 2]])
        np.clip(out[:, [1, 3]], 0, self.src_h, out=out[:, [1, 3]])
        return out


def plan_letterbox(
    src_w: int,
    src_h: int,
    size: int = 640,
    *,
    stride: int = 32,
    fixed: tuple[int, int] | None = None,
) -> LetterboxPlan:
    """Plan the letterbox of a `src_w` x `src_h` frame.

    `fixed=(h, w)` is a model with a static input shape: the frame is fitted into it. Otherwise
    the model's H and W are dynamic and padding is minimal: the long side becomes `size`, the
    short side is rounded up to a multiple of `stride` with at least half a stride of margin,
    as Ultralytics validates rectangular batches (768x576 -> 640x512, 640x272 -> 640x288,
    square -> 640x640).
    """
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"frame size must be positive, got {src_w}x{src_h}")
    if fixed is not None:
        dst_h, dst_w = fixed
        scale = min(dst_w / src_w, dst_h / src_h)
    else:
        scale = size / max(src_w, src_h)
    new_w = max(1, round(src_w * scale))
    new_h = max(1, round(src_h * scale))
    if fixed is None:
        if size % stride:
            raise ValueError(f"input size {size} is not a multiple of the model stride {stride}")
        dst_w = size if new_w == size else _with_margin(new_w, stride)
        dst_h = size if new_h == size else _with_margin(new_h, stride)
    pad_x = (dst_w - new_w) // 2
    pad_y = (dst_h - new_h) // 2
    return LetterboxPlan(src_w, src_h, dst_w, dst_h, new_w, new_h, pad_x, pad_y, scale)


def _with_margin(n: int, stride: int) -> int:
    """The short side a dynamic model gets: a multiple of stride with at least half a stride of
    padding (Ultralytics' rectangular validation shapes, the shapes its accuracy is quoted at)."""
    return math.ceil(n / stride + 0.5) * stride


class Letterbox:
    """Reusable letterbox for one source shape: `__call__(frame, out)` writes a (3,H,W) tensor.

    The caller owns the output buffer (so it can be a ring of buffers or a pinned/mapped one);
    `new_buffer()` allocates one.
    """

    def __init__(self, plan: LetterboxPlan, dtype: np.dtype | type = np.float32) -> None:
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self._resized = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
        self._planes = [np.empty((plan.new_h, plan.new_w), np.uint8) for _ in range(3)]
        self._scale = self.dtype.type(1.0 / 255.0)  # scaled in the buffer's own precision

    def new_buffer(self, batch: int = 1) -> np.ndarray:
        """An NCHW buffer for this plan with the gray padding written."""
        p = self.plan
        return np.full((batch, 3, p.dst_h, p.dst_w), PAD_VALUE / 255.0, dtype=self.dtype)

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Letterbox `frame` (uint8 BGR HxWx3) into `out` (3,H,W), returning `out`."""
        p = self.plan
        if frame.shape[:2] != (p.src_h, p.src_w):
            raise ValueError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, this letterbox was planned for "
                f"{p.src_w}x{p.src_h}"
            )
        if out.shape != (3, p.dst_h, p.dst_w):
            want = (3, p.dst_h, p.dst_w)
            raise ValueError(f"output buffer has shape {out.shape}, expected {want}")
        if (p.new_w, p.new_h) == (p.src_w, p.src_h):
            resized = frame
        else:
            resized = cv2.resize(frame, (p.new_w, p.new_h), dst=self._resized,
                                 interpolation=cv2.INTER_LINEAR)
        ys = slice(p.pad_y, p.pad_y + p.new_h)
        xs = slice(p.pad_x, p.pad_x + p.new_w)
        pad = PAD_VALUE / 255.0  # the strips are small; writing them each time keeps no state
        out[:, : p.pad_y, :] = pad
        out[:, p.pad_y + p.new_h :, :] = pad
        out[:, ys, : p.pad_x] = pad
        out[:, ys, p.pad_x + p.new_w :] = pad
        # Split into contiguous planes first: scaling strided HWC channels costs twice as much.
        blue, green, red = cv2.split(resized, self._planes)
        for c, plane in enumerate((red, green, blue)):  # BGR -> RGB planes
            np.multiply(plane, self._scale, out=out[c, ys, xs], casting="unsafe")
        return out


def letterbox(frame: np.ndarray, size: int = 640, *, stride: int = 32,
              fixed: tuple[int, int] | None = None) -> tuple[np.ndarray, LetterboxPlan]:
    """One-shot letterbox (allocates): returns a (1,3,H,W) float32 tensor and its plan."""
    plan = plan_letterbox(frame.shape[1], frame.shape[0], size, stride=stride, fixed=fixed)
    box = Letterbox(plan)
    buf = box.new_buffer()
    box(frame, buf[0])
    return buf, plan
