"""Letterbox preprocessing, shared by the daemon and the compiler's calibration.

A frame (uint8 BGR, HxWx3) is resized keeping its aspect ratio and padded with gray (114). In
the `NCHW` layout (the model's own input) it is then turned into RGB, scaled to 0..1 and laid
out planar (float32 or float16). In the `NHWC` layout (a backend that normalizes inside its
graph, OpenVINO's PrePostProcessor) it stays uint8 BGR as captured, and the resize writes
straight into the padded buffer: the cheapest thing the CPU can do per frame. Buffers are
allocated once per source shape and reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
# Input layouts a letterbox can write: "NCHW" float RGB 0..1, "NHWC" uint8 BGR 0..255.
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class LetterboxPlan:
    """Geometry of one letterbox: source size, model input size, scale and padding (pixels).

    A letterbox of a region of the frame (an inspection station's ROI crop) has the region's
    size as its source and the region's top-left corner in the frame as `off_x`, `off_y`:
    `to_source` then maps boxes to pixels of the whole frame."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    new_w: int
    new_h: int
    pad_x: int
    pad_y: int
    scale: float
    off_x: int = 0
    off_y: int = 0

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes (N,4 float, model input pixels) back to source pixels, clipped to the
        source (the region, for a crop) and offset into the whole frame."""
        out = np.empty_like(xyxy)
        # (fancy indexing copies: clip the columns, then store them)
        out[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - self.pad_x) / self.scale, 0,
                                 self.src_w) + self.off_x
        out[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - self.pad_y) / self.scale, 0,
                                 self.src_h) + self.off_y
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


def configure_opencv() -> None:
    """The daemon's OpenCV setting: one thread. A letterbox resize takes well under a
    millisecond; OpenCV's thread pool costs more in wake-ups than it saves there, and its second
    thread takes the core an inference stream is running on."""
    cv2.setNumThreads(1)


def padded_buffer(h: int, w: int, dtype: np.dtype | type = np.float32, layout: str = "NCHW",
                  batch: int = 1) -> np.ndarray:
    """A gray input batch of `layout`: (N,3,H,W) at 114/255, or (N,H,W,3) uint8 at 114."""
    if layout == "NHWC":
        return np.full((batch, h, w, 3), PAD_VALUE, dtype=dtype)
    if layout != "NCHW":
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return np.full((batch, 3, h, w), PAD_VALUE / 255.0, dtype=dtype)


def pixels_from_tensor(tensor: np.ndarray) -> np.ndarray:
    """The NHWC uint8 BGR batch a (N,3,H,W) RGB 0..1 letterbox tensor was made from (exact: the
    tensor holds uint8 values / 255)."""
    rgb = np.rint(np.asarray(tensor, np.float32) * 255.0)
    return np.ascontiguousarray(rgb[:, ::-1].transpose(0, 2, 3, 1)).astype(np.uint8)


class Letterbox:
    """Reusable letterbox for one source shape: `__call__(frame, out)` writes one input image,
    (3,H,W) in the NCHW layout or (H,W,3) in the NHWC layout.

    The caller owns the output buffer (so it can be a ring of buffers or a pinned/mapped one);
    `new_buffer()` allocates one.
    """

    def __init__(self, plan: LetterboxPlan, dtype: np.dtype | type = np.float32,
                 layout: str = "NCHW") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.layout = layout
        if layout == "NHWC":
            if self.dtype != np.uint8:
                raise ValueError(f"the NHWC layout holds uint8 BGR pixels, not {self.dtype}")
            self._pad: float | int = PAD_VALUE
            return  # the resize writes into the output itself: no scratch buffers
        self._pad = PAD_VALUE / 255.0
        self._resized = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
        self._planes = [np.empty((plan.new_h, plan.new_w), np.uint8) for _ in range(3)]
        self._scale = self.dtype.type(1.0 / 255.0)  # scaled in the buffer's own precision

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape `__call__` writes (one image, no batch axis)."""
        p = self.plan
        return (p.dst_h, p.dst_w, 3) if self.layout == "NHWC" else (3, p.dst_h, p.dst_w)

    def new_buffer(self, batch: int = 1) -> np.ndarray:
        """A batch buffer for this plan with the gray padding written."""
        return padded_buffer(self.plan.dst_h, self.plan.dst_w, self.dtype, self.layout, batch)

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Letterbox `frame` (uint8 BGR HxWx3) into `out` (one image of `shape`), returning it."""
        p = self.plan
        if frame.shape[:2] != (p.src_h, p.src_w):
            raise ValueError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, this letterbox was planned for "
                f"{p.src_w}x{p.src_h}"
            )
        if out.shape != self.shape:
            raise ValueError(f"output buffer has shape {out.shape}, expected {self.shape}")
        hwc = out if self.layout == "NHWC" else out.transpose(1, 2, 0)  # a view either way
        ys = slice(p.pad_y, p.pad_y + p.new_h)
        xs = slice(p.pad_x, p.pad_x + p.new_w)
        # The strips are small; writing them each time keeps no state about the buffer.
        hwc[: p.pad_y] = self._pad
        hwc[p.pad_y + p.new_h :] = self._pad
        hwc[ys, : p.pad_x] = self._pad
        hwc[ys, p.pad_x + p.new_w :] = self._pad
        same_size = (p.new_w, p.new_h) == (p.src_w, p.src_h)
        if self.layout == "NHWC":  # uint8 BGR: resize straight into the picture area
            area = out[ys, xs]
            if same_size:
                np.copyto(area, frame)
                return out
            resized = cv2.resize(frame, (p.new_w, p.new_h), dst=area,
                                 interpolation=cv2.INTER_LINEAR)
            if resized.ctypes.data != area.ctypes.data:  # OpenCV allocated instead: copy it in
                np.copyto(area, resized)
            return out
        resized = frame if same_size else cv2.resize(frame, (p.new_w, p.new_h),
                                                     dst=self._resized,
                                                     interpolation=cv2.INTER_LINEAR)
        # Split into contiguous planes first: scaling strided HWC channels costs twice as much.
        blue, green, red = cv2.split(resized, self._planes)
        for c, plane in enumerate((red, green, blue)):  # BGR -> RGB planes
            np.multiply(plane, self._scale, out=out[c, ys, xs], casting="unsafe")
        return out


def letterbox(frame: np.ndarray, size: int = 640, *, stride: int = 32,
              fixed: tuple[int, int] | None = None, dtype: np.dtype | type = np.float32,
              layout: str = "NCHW") -> tuple[np.ndarray, LetterboxPlan]:
    """One-shot letterbox (allocates): returns a batch of one ((1,3,H,W) float32 by default;
    pass a backend's `input.dtype` and `input.layout` to feed it) and its plan."""
    plan = plan_letterbox(frame.shape[1], frame.shape[0], size, stride=stride, fixed=fixed)
    box = Letterbox(plan, dtype, layout)
    buf = box.new_buffer()
    box(frame, buf[0])
    return buf, plan
