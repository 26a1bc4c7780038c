"""Inferring: submit prepared frames to the backend, up to `max_in_flight` at once, and complete
them in submission order, so each camera's frames stay in order.

A completed frame is decoded here, straight from the runtime's own output buffers where the
backend lends them (`read_outputs`): the whole raw output (2.2 MB for YOLOv8n at 640x512) is
then never copied, only the few boxes that pass the score filter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from lepton_edge.backends.base import Backend, read_outputs
from lepton_edge.detections import Detections
from lepton_edge.pipeline.prepare import Job
from lepton_edge.pipeline.preprocess import LetterboxPlan

Decode = Callable[[np.ndarray, LetterboxPlan, dict[str, float]], Detections]


class Inferrer:
    def __init__(self, backend: Backend, decode: Decode) -> None:
        self._backend = backend
        self._decode = decode
        self._pending: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        job.t_submit = time.perf_counter()
        if job.tensor is None:
            job.handle = self._backend.submit_image(  # type: ignore[attr-defined]
                job.pixels, job.plan)
        else:
            job.handle = self._backend.submit(job.tensor)
        self._pending.append(job)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self._backend.max_in_flight

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def complete_one(self, deliver: Callable[[Job], None]) -> None:
        """Wait for the oldest batch, decode it and hand its job (`detections` set) to
        `deliver`."""
        job = self._pending.popleft()

        def finish(outputs: list[np.ndarray]) -> Detections:
            job.timings["infer"] = (time.perf_counter() - job.t_submit) * 1000.0
            return self._decode(outputs[0][0], job.plan, job.timings)  # batch of one

        job.detections = read_outputs(job.handle, finish)  # type: ignore[arg-type]
        job.handle = None
        deliver(job)
