"""Preparing: the letterbox of each admitted frame into a ring of reused buffers.

Each source frame size is planned once (`plan_letterbox`) and gets its own ring of buffers, as
many as can be in use at once (the batches in flight, one in the hand-off, one being written).
A backend that letterboxes on its own device (the TensorRT CUDA kernel) gets the raw frame.

A camera whose analyser asks for a crop (an inspection station with `crop: true`: small parts on
a wide view) has only that region letterboxed, so the model sees it at the full resolution of
the frame; the plan carries the region's offset, and decoded boxes land in whole-frame pixels.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from lepton_edge.backends.base import Backend, ImageInputBackend
from lepton_edge.detections import Detections
from lepton_edge.pipeline.preprocess import Letterbox, LetterboxPlan, plan_letterbox
from lepton_edge.pipeline.sources import Frame

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One frame on its way through prepare -> infer -> decode. `tensor` is None when the
    backend letterboxes the raw frame on its device (`pixels`: the frame, or its cropped
    region); `detections` (decoded from the runtime's buffers) is set by the inferring stage;
    `timings` collects per-stage milliseconds."""

    frame: Frame
    plan: LetterboxPlan
    tensor: np.ndarray | None
    timings: dict[str, float]
    pixels: np.ndarray | None = None
    detections: Detections | None = None
    t_submit: float = 0.0
    handle: object = field(default=None, repr=False)


@dataclass
class _Shape:
    plan: LetterboxPlan
    box: Letterbox | None
    ring: list[np.ndarray]
    pos: int = 0


class Preparer:
    def __init__(self, backend: Backend, input_size: int, stride: int,
                 fixed_hw: tuple[int, int] | None) -> None:
        self._backend = backend
        self._on_device = isinstance(backend, ImageInputBackend)
        self._size = input_size
        self._stride = stride
        self._fixed = fixed_hw
        # by region of the source: (x1, y1, x2, y2), the whole frame or a crop
        self._shapes: dict[tuple[int, int, int, int], _Shape] = {}
        self._bad_crops: set[tuple[str, tuple[int, int, int, int]]] = set()

    def plan(self, width: int, height: int) -> LetterboxPlan:
        return plan_letterbox(width, height, self._size, stride=self._stride, fixed=self._fixed)

    def __call__(self, frame: Frame, crop: tuple[int, int, int, int] | None = None) -> Job:
        """The job of `frame`; `crop` (x1, y1, x2, y2 frame pixels) letterboxes only that
        region (clipped to the frame)."""
        t0 = time.perf_counter()
        region = self._region(frame, crop)
        x1, y1, x2, y2 = region
        image = frame.image
        if crop is not None:
            image = image[y1:y2, x1:x2]
        shape = self._shape_for(frame.camera, region)
        buf = None
        pixels = None
        if shape.box is not None:
            buf = shape.ring[shape.pos]
            shape.pos = (shape.pos + 1) % len(shape.ring)
            shape.box(image, buf[0])
        else:  # the device copies it whole: a crop is made contiguous here
            pixels = image if crop is None else np.ascontiguousarray(image)
        timings = {"capture": frame.read_ms, "preprocess": (time.perf_counter() - t0) * 1000.0}
        return Job(frame, shape.plan, buf, timings, pixels=pixels)

    def _region(self, frame: Frame,
                crop: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        h, w = frame.image.shape[:2]
        if crop is None:
            return 0, 0, w, h
        x1, y1 = max(0, crop[0]), max(0, crop[1])
        x2, y2 = min(w, crop[2]), min(h, crop[3])
        if x2 - x1 < 2 or y2 - y1 < 2:  # the ROIs lie outside this camera's frames
            if (frame.camera, crop) not in self._bad_crops:
                self._bad_crops.add((frame.camera, crop))
                log.error("camera %s: the crop %s (the ROIs' bounding box) is outside its "
                          "%dx%d frames; inferring the whole frame: fix inspect.rois",
                          frame.camera, crop, w, h)
            return 0, 0, w, h
        return x1, y1, x2, y2

    def _shape_for(self, camera: str, region: tuple[int, int, int, int]) -> _Shape:
        shape = self._shapes.get(region)
        if shape is None:
            x1, y1, x2, y2 = region
            plan = self.plan(x2 - x1, y2 - y1)
            if x1 or y1:
                plan = dataclasses.replace(plan, off_x=x1, off_y=y1)
            spec = self._backend.input
            box = None if self._on_device else Letterbox(plan, spec.dtype, spec.layout)
            ring = [] if box is None else [box.new_buffer()
                                           for _ in range(self._backend.max_in_flight + 2)]
            shape = self._shapes[region] = _Shape(plan, box, ring)
            what = f"{x2 - x1}x{y2 - y1}" if (x1, y1) == (0, 0) else \
                f"region {x2 - x1}x{y2 - y1} at ({x1}, {y1})"
            log.info("camera %s: %s letterboxed to %dx%d", camera, what, plan.dst_w,
                     plan.dst_h)
        return shape

    def one_off(self, image: np.ndarray) -> tuple[LetterboxPlan, np.ndarray | None]:
        """The letterbox of an image outside the camera flow (an HTTP detect request), into a
        buffer of its own, never one of the rings."""
        h, w = image.shape[:2]
        plan = self.plan(w, h)
        if self._on_device:
            return plan, None
        spec = self._backend.input
        box = Letterbox(plan, spec.dtype, spec.layout)
        buf = box.new_buffer()
        box(image, buf[0])
        return plan, buf
