"""Preparing: the letterbox of each admitted frame into a ring of reused buffers.

Each source frame size is planned once (`plan_letterbox`) and gets its own ring of buffers, as
many as can be in use at once (the batches in flight, one in the hand-off, one being written).
A backend that letterboxes on its own device (the TensorRT CUDA kernel) gets the raw frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from lepton_edge.backends.base import Backend, ImageInputBackend
from lepton_edge.pipeline.preprocess import Letterbox, LetterboxPlan, plan_letterbox
from lepton_edge.pipeline.sources import Frame

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One frame on its way through prepare -> infer -> decode. `tensor` is None when the
    backend letterboxes the raw frame on its device; `output` is set by the inferring stage;
    `timings` collects per-stage milliseconds."""

    frame: Frame
    plan: LetterboxPlan
    tensor: np.ndarray | None
    timings: dict[str, float]
    output: np.ndarray | None = None
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
        self._shapes: dict[tuple[int, int], _Shape] = {}  # by source (width, height)

    def plan(self, width: int, height: int) -> LetterboxPlan:
        return plan_letterbox(width, height, self._size, stride=self._stride, fixed=self._fixed)

    def __call__(self, frame: Frame) -> Job:
        t0 = time.perf_counter()
        shape = self._shape_for(frame)
        buf = None
        if shape.box is not None:
            buf = shape.ring[shape.pos]
            shape.pos = (shape.pos + 1) % len(shape.ring)
            shape.box(frame.image, buf[0])
        timings = {"capture": frame.read_ms, "preprocess": (time.perf_counter() - t0) * 1000.0}
        return Job(frame, shape.plan, buf, timings)

    def _shape_for(self, frame: Frame) -> _Shape:
        h, w = frame.image.shape[:2]
        shape = self._shapes.get((w, h))
        if shape is None:
            plan = self.plan(w, h)
            spec = self._backend.input
            box = None if self._on_device else Letterbox(plan, spec.dtype, spec.layout)
            ring = [] if box is None else [box.new_buffer()
                                           for _ in range(self._backend.max_in_flight + 2)]
            shape = self._shapes[(w, h)] = _Shape(plan, box, ring)
            log.info("camera %s: %dx%d letterboxed to %dx%d", frame.camera, w, h,
                     plan.dst_w, plan.dst_h)
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
